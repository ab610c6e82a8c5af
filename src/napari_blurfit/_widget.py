"""The "Fit Gaussian blur" dock widget.

It only translates between the user and `napari_blurfit.layers.run_layer_fit`, which runs in a
worker thread; the worker never touches the viewer. Cancel sets a flag that the core checks at
every step (each at most one transform or filter pass), so it stops promptly and adds no layer.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    TextEdit,
)

from .layers import MODES, run_layer_fit, show_layers

if TYPE_CHECKING:
    import napari


class FitCancelled(Exception):
    """Raised inside the worker when the user pressed Cancel or removed an input layer."""


class _Failure:
    """The worker's way of returning an exception to the GUI thread."""

    def __init__(self, error: Exception):
        self.error = error


def _layers_of(viewer, *types):
    return [layer for layer in viewer.layers if isinstance(layer, types)]


class BlurFitWidget(Container):
    """Pick a reference and a target image layer, fit the blur in the background, show results."""

    def __init__(self, viewer: napari.viewer.Viewer):
        from napari.layers import Image, Labels, Shapes

        super().__init__(labels=True)
        self._viewer = viewer
        self._worker = None
        self._cancel = threading.Event()
        self._cancel_reason = "cancelled"
        self.last_result = None

        def images(_=None):
            return [(layer.name, layer) for layer in _layers_of(viewer, Image)]

        def masks(_=None):
            return [("none", None)] + [(layer.name, layer) for layer in
                                       _layers_of(viewer, Labels, Shapes)]

        self.reference = ComboBox(label="reference", choices=images)
        self.target = ComboBox(label="target", choices=images)
        self.mode = ComboBox(label="mode", choices=list(MODES), value="whole image/volume")
        self.loss = ComboBox(label="loss", choices=["l2", "l1", "huber"], value="l2")
        self.per_axis = CheckBox(text="one sigma per axis", value=False)
        self.gain_offset = CheckBox(text="fit gain and offset", value=False)
        self.reverse = CheckBox(text="reverse: reference ~ G * target", value=False)
        self.mask = ComboBox(label="mask", choices=masks)
        self.exclude_border = SpinBox(label="exclude border (px)", min=0, max=10000, value=0)
        self.sigma_min = FloatSpinBox(label="sigma min (px)", min=0.0, max=1e4, step=0.1, value=0.0)
        self.sigma_max = FloatSpinBox(label="sigma max (px, 0 = auto)", min=0.0, max=1e4,
                                      step=1.0, value=0.0)
        self.tile = SpinBox(label="blur-map tile (px)", min=16, max=4096, value=128, visible=False)
        self.fit_button = PushButton(text="Fit")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="", min=0, max=1, value=0, visible=False)
        self.status = Label(label="", value="")
        self.result_text = TextEdit(label="", value="")
        self.result_text.read_only = True
        self.copy_button = PushButton(text="Copy result (JSON)", enabled=False)
        self.extend([
            self.reference, self.target, self.mode, self.loss, self.per_axis, self.gain_offset,
            self.reverse, self.mask, self.exclude_border, self.sigma_min, self.sigma_max,
            self.tile, self.fit_button, self.cancel_button, self.progress, self.status,
            self.result_text, self.copy_button,
        ])
        self._plot = _LossPlot()
        self.native.layout().addWidget(self._plot.canvas)
        from qtpy.QtCore import QTimer

        self._timer = QTimer()
        self._timer.setInterval(150)
        self._timer.timeout.connect(self._show_stage)
        self._stage = ""

        self.reference.changed.connect(self._reference_changed)
        self.target.changed.connect(self._check_inputs)
        self.mode.changed.connect(self._mode_changed)
        self.fit_button.changed.connect(self.start_fit)
        self.cancel_button.changed.connect(self.cancel)
        self.copy_button.changed.connect(self.copy_result)
        viewer.layers.events.removed.connect(self._layer_removed)
        viewer.layers.events.inserted.connect(self._watch_names)
        for layer in viewer.layers:
            layer.events.name.connect(self._refresh)
        self._refresh()
        self._reference_changed()

    # --- inputs ---------------------------------------------------------------------------
    def _watch_names(self, event=None):
        event.value.events.name.connect(self._refresh)
        self._refresh()

    def _refresh(self, event=None):
        self.reset_choices()
        self._check_inputs()

    def reset_choices(self, *args):
        """Refresh the layer pickers (napari calls this when layers change)."""
        super().reset_choices()
        self._keep_distinct()

    def _keep_distinct(self):
        """Reference and target may never be the same layer: move the target if they collide."""
        ref = self.reference.value
        if ref is not None and self.target.value is ref:
            others = [c for c in self.target.choices if c is not None and c is not ref]
            if others:
                self.target.value = others[-1]

    def _reference_changed(self, *args):
        self._keep_distinct()
        self._check_inputs()

    def _mode_changed(self, *args):
        self.tile.visible = self.mode.value == "blur map"
        self._check_inputs()

    def _check_inputs(self, *args, update_status: bool = True) -> bool:
        """Explain a problem with the chosen layers before anyone presses Fit."""
        from .layers import check_pair

        problem = ""
        ref, tgt = self.reference.value, self.target.value
        if ref is None or tgt is None:
            problem = "add or choose two image layers"
        else:
            try:
                check_pair(ref, tgt)
            except (TypeError, ValueError) as err:
                problem = str(err)
        if self._worker is None:
            self.fit_button.enabled = not problem
            if update_status:
                self.status.value = problem
        return not problem

    # --- running --------------------------------------------------------------------------
    def options(self) -> dict:
        """The fit options as `napari_blurfit.fit_blur` keywords."""
        high = self.sigma_max.value or None
        return dict(loss=self.loss.value, per_axis=self.per_axis.value,
                    gain_offset=self.gain_offset.value, reverse=self.reverse.value,
                    exclude_border=int(self.exclude_border.value),
                    sigma_bounds=(float(self.sigma_min.value), high))

    def start_fit(self, *args):
        """Start a fit in a worker thread; returns the worker (also kept as ``self._worker``)."""
        from napari.qt.threading import create_worker

        if self._worker is not None or not self._check_inputs():
            return None
        self._cancel.clear()
        inputs = (self.reference.value, self.target.value, self.mask.value)
        kwargs = dict(mask_layer=inputs[2], mode=self.mode.value,
                      world_point=tuple(self._viewer.dims.point),
                      tile=int(self.tile.value), **self.options())

        def check(stage):
            if self._cancel.is_set():
                raise FitCancelled(self._cancel_reason)
            self._stage = stage  # read by the GUI thread's timer; never touch Qt here

        def job():
            try:
                return run_layer_fit(inputs[0], inputs[1], callback=check, **kwargs)
            except Exception as err:  # shown in the widget; never an unhandled worker error
                return _Failure(err)  # (a returned Exception would be re-raised by the worker)

        self._inputs = inputs
        self._stage = "starting"
        worker = create_worker(job, _start_thread=False)
        worker.returned.connect(self._done)
        worker.finished.connect(self._finished)
        self._worker = worker
        self._set_running(True)
        self.status.value = "fitting..."
        self._timer.start()
        worker.start()
        return worker

    def cancel(self, *args, reason: str = "cancelled"):
        """Ask the running fit to stop; it stops at its next step and adds nothing."""
        if self._worker is not None:
            self._cancel_reason = reason
            self._cancel.set()
            self.status.value = "cancelling..."

    def _layer_removed(self, event):
        layer = event.value
        if self._worker is not None and any(layer is x for x in self._inputs if x is not None):
            self.cancel(reason=f"layer {layer.name!r} was removed during the fit")
        self._refresh()

    def _set_running(self, running: bool):
        self.fit_button.enabled = not running
        self.cancel_button.enabled = running
        self.progress.visible = running
        self.progress.max = 0 if running else 1  # 0..0: Qt's busy indicator

    def _show_stage(self):
        if self._worker is not None and not self._cancel.is_set():
            self.status.value = f"fitting: {self._stage}"

    def _finished(self):
        self._timer.stop()
        self._worker = None
        self._set_running(False)
        self._check_inputs(update_status=False)

    def _failed(self, err):
        from napari.utils.notifications import show_error, show_info

        if isinstance(err, FitCancelled):
            self.status.value = f"fit stopped: {err}"
            show_info(f"Blur fit stopped: {err}")
            return
        message = f"{type(err).__name__}: {err}"
        self.status.value = f"fit failed: {message}"
        show_error(f"Blur fit failed: {message}")

    def _done(self, result):
        if isinstance(result, _Failure):
            self._failed(result.error)
            return
        self.last_result = result
        show_layers(self._viewer, result)
        self.result_text.value = _describe(result)
        self.copy_button.enabled = True
        self._plot.draw(result)
        self.status.value = "done"

    def result_json(self) -> str:
        """The last result as JSON text (what Copy puts on the clipboard)."""
        r = self.last_result
        if r is None:
            return ""
        if r.fit is not None:
            d = json.loads(r.fit.to_json())
            d.update(sigma_world=list(r.sigma_world), units=list(r.units))
            return json.dumps(d, indent=2)
        if r.frames is not None:
            return json.dumps([json.loads(f.to_json()) for f in r.frames], indent=2)
        return json.dumps(r.blur_map.to_dict(), indent=2)

    def copy_result(self, *args):
        """Put the last result on the clipboard as JSON."""
        from qtpy.QtWidgets import QApplication

        QApplication.clipboard().setText(self.result_json())
        self.status.value = "result copied to the clipboard"


def _describe(result) -> str:
    """Plain-language result panel text."""
    if result.frames is not None:
        sig = np.array([f.sigma for f in result.frames])
        return (f"{len(result.frames)} frames: sigma {np.nanmin(sig):.3g} to "
                f"{np.nanmax(sig):.3g} px (median {np.nanmedian(sig):.3g}); see the plot")
    if result.blur_map is not None:
        s = result.blur_map.sigma
        return (f"blur map: {s.shape[0]} x {s.shape[1]} tiles, sigma {np.nanmin(s):.3g} to "
                f"{np.nanmax(s):.3g} px; {int(np.isnan(s[..., 0]).sum())} tile(s) not identifiable")
    fit = result.fit
    units = [u if u and u != "pixel" else "world units" for u in result.units]
    lines = []
    for i, (s, e, w, u) in enumerate(zip(fit.sigma, fit.sigma_stderr, result.sigma_world, units)):
        lines.append(f"sigma[{i}] = {s:.4g} +/- {e:.2g} px  = {w:.4g} {u}")
    lines.append(f"gain = {fit.gain:.5g}, offset = {fit.offset:.5g}"
                 + ("" if fit.gain_offset else " (fixed)"))
    lines.append(f"loss ({fit.loss_name}, mean) = {fit.loss:.5g} over {fit.n_pixels} px")
    if fit.target_sharper:
        lines.append("! target looks sharper than reference: tick 'reverse'")
    if not fit.identifiable:
        lines.append("! sigma below 0.3 px is not identifiable")
    if fit.at_bound:
        lines.append("! the fit sits on a sigma bound: widen the bounds")
    lines += [f"note: {n}" for n in fit.notes]
    return "\n".join(lines)


class _LossPlot:
    """A small matplotlib plot: loss against sigma with the optimum marked (or sigma per frame)."""

    def __init__(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 2.2), dpi=90, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(180)
        self.axes = self.figure.add_subplot()
        self.axes.set_axis_off()

    def draw(self, result):
        ax = self.axes
        ax.clear()
        ax.set_axis_on()
        if result.frames is not None:
            sig = np.array([f.sigma for f in result.frames])
            for i in range(sig.shape[1]):
                ax.plot(sig[:, i], marker=".", label=f"axis {i}")
            ax.set_xlabel("frame")
            ax.set_ylabel("sigma (px)")
        elif result.blur_map is not None:
            s = result.blur_map.sigma.mean(axis=-1)
            ax.hist(s[np.isfinite(s)].ravel(), bins=20)
            ax.set_xlabel("tile sigma (px)")
            ax.set_ylabel("tiles")
        else:
            fit = result.fit
            prof = fit.profile
            rows = prof["loss"]
            for i, row in enumerate(rows):
                label = f"axis {i} (others at their best)" if len(rows) > 1 else None
                ax.plot(prof["sigma"], row, marker="." if prof["objective"] != "l2" else None,
                        label=label)
            for s in sorted(set(fit.sigma)) if fit.per_axis else fit.sigma[:1]:
                ax.axvline(s, color="tab:red", lw=1)
            ax.set_xscale("log")
            positive = [s for s in fit.sigma if s > 0] or [1.0]
            ax.set_xlim(max(min(prof["sigma"]), min(positive) / 10),
                        min(max(prof["sigma"]), max(positive) * 10))
            if np.all(rows > 0):
                ax.set_yscale("log")  # the loss spans decades; the dip shows on a log scale
            ax.set_xlabel("sigma (px)")
            ax.set_ylabel(f"mean {prof['objective']} loss")
            shown = ", ".join(f"{s:.3g}" for s in (fit.sigma if fit.per_axis else fit.sigma[:1]))
            ax.set_title(f"optimum {shown} px", fontsize=9)
            if len(rows) > 1:
                ax.legend(fontsize=7)
        self.canvas.draw_idle()
