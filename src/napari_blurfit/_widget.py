"""The "Fit Gaussian blur" dock widget.

It only translates between the user and `napari_blurfit.layers.run_layer_fit`, which runs in a
worker thread; the worker never touches the viewer. Cancel sets a flag that the core checks at
every step; the GUI thread checks it again (and that every input layer is still in the viewer)
before it adds any layer, so a cancelled fit or one whose input was removed never adds a layer.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import weakref
from typing import TYPE_CHECKING

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    ProgressBar,
    PushButton,
    SpinBox,
)

from ._plots import KernelPicture, ResultPlots, palette
from ._report import describe, failure_text, grid_sizes
from .layers import (
    MODES,
    KernelShape,
    axis_hint,
    check_pair,
    pair_grids,
    run_layer_fit,
    show_layers,
    spatial_axes,
    world_units,
)

if TYPE_CHECKING:
    import napari

LOG = logging.getLogger(__name__)
DOCK_WIDTH = 380  # px: napari's docks are guests beside the canvas
NOISE_TEXT = "reference is noisy: correct"  # the noise control; the estimate follows a fit
_LIVE: weakref.WeakSet = weakref.WeakSet()  # widgets to settle before the interpreter exits


class FitCancelled(Exception):
    """Raised inside the worker when the user pressed Cancel or removed an input layer."""


class _Failure:
    """The worker's way of returning an exception to the GUI thread."""

    def __init__(self, error: BaseException):
        self.error = error


def _layers_of(viewer, *types):
    return [layer for layer in viewer.layers if isinstance(layer, types)]


def _label(text: str = "", selectable: bool = False):
    """A word-wrapping QLabel that never widens the dock; hidden while empty."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QLabel, QSizePolicy

    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)  # "<" in a message is a character, never a tag
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.setMinimumWidth(100)
    if selectable:
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setVisible(bool(text))
    return label


def _compact(combo: ComboBox) -> ComboBox:
    """Long layer names elide instead of widening the dock."""
    from qtpy.QtWidgets import QComboBox

    combo.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.native.setMinimumContentsLength(10)
    return combo


def _auto_at_zero(spin: FloatSpinBox) -> FloatSpinBox:
    """The spin box shows "auto" at 0, the value that leaves the bound to the core."""
    spin.native.setSpecialValueText("auto")
    return spin


class BlurFitWidget(Container):
    """Pick a reference and a target image layer, fit the blur in the background, show results."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer
        self._worker = None
        self._last_worker = None  # kept until the next fit: Qt may still deliver its signals
        self._cancel = threading.Event()
        self._cancel_reason = "cancelled"
        self._delivered = False
        self._inputs: tuple = ()
        self._connections: list = []
        self._stage = ""
        self.last_result = None
        self._map_layer = None  # the blur map's layer, whose colours the dock's colourbar follows
        self._build_inputs(viewer)
        self._build_outputs()
        self._connect(viewer)
        _LIVE.add(self)
        self.reset_choices()
        self._check_inputs()

    # --- building -------------------------------------------------------------------------
    def _build_inputs(self, viewer):
        from napari.layers import Image, Labels, Shapes

        def images(_=None):
            return [(layer.name, layer) for layer in _layers_of(viewer, Image)]

        def masks(_=None):
            return [("none", None)] + [(layer.name, layer) for layer in
                                       _layers_of(viewer, Labels, Shapes)]

        self.reference = _compact(ComboBox(label="reference", choices=images))
        self.target = _compact(ComboBox(label="target", choices=images))
        self.mask = _compact(ComboBox(label="mask", choices=masks))
        self.mode = ComboBox(label="mode", choices=list(MODES), value="whole image/volume")
        self.tile = SpinBox(label="tile (px)", min=16, max=4096, value=128, visible=False)
        self.loss = ComboBox(label="loss", choices=["l2", "l1", "huber"], value="l2")
        self.kernel = ComboBox(label="kernel", choices=[(k.value, k) for k in KernelShape],
                               value=KernelShape.ROUND,
                               tooltip="round: one sigma; per axis: one sigma per array axis; "
                                       "rotated: an elliptical Gaussian at any angle")
        self.fit_shift = CheckBox(text="fit shift", value=False,
                                  tooltip="also fit a sub-pixel shift between the two images")
        self.gain_offset = CheckBox(text="fit gain and offset", value=False)
        self.reverse = CheckBox(text="reverse (the reference is the blurred one)", value=False)
        self.reference_noise = CheckBox(
            text=NOISE_TEXT, value=True,
            tooltip="estimate the noise of the reference (the image the blur is applied to) from "
                    "the pair and correct sigma for it; off: the reference is taken as noise-free")
        self.sampling = ComboBox(
            label="target pixels", choices=["area", "point"], value="area", enabled=False,
            tooltip="for layers on different grids: how the blurred image's pixels sample the "
                    "world. area: each is the mean over its footprint (a camera); point: the "
                    "value at its centre (a decimated or rendered image)")
        self.exclude_border = SpinBox(label="skip border (px)", min=0, max=10000, value=0)
        self.sigma_min = _auto_at_zero(FloatSpinBox(
            label="sigma min (px)", min=0.0, max=1e4, step=0.1, value=0.0,
            tooltip="auto (0): no lower bound"))
        self.sigma_max = _auto_at_zero(FloatSpinBox(
            label="sigma max (px)", min=0.0, max=1e4, step=1.0, value=0.0,
            tooltip="auto (0): up to half the image size"))
        self.truncate = FloatSpinBox(
            label="kernel reach (sigmas)", min=1.0, max=10.0, step=0.5, value=4.0,
            tooltip="where the kernel is cut, in sigmas (scipy's truncate): a shorter reach lets a "
                    "wide kernel fit a short axis")
        self.fit_button = PushButton(text="Fit")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="", min=0, max=1, value=0, visible=False)
        self.options_box = Container(labels=True, widgets=[
            self.loss, self.kernel, self.fit_shift, self.gain_offset, self.reverse,
            self.reference_noise, self.sampling, self.exclude_border, self.sigma_min, self.sigma_max,
            self.truncate])
        self.options_box.native.layout().setContentsMargins(0, 0, 0, 0)
        buttons = Container(layout="horizontal", labels=False, widgets=[self.fit_button, self.cancel_button])
        buttons.native.layout().setContentsMargins(0, 0, 0, 0)
        self.extend([self.reference, self.target, self.mask, self.mode, self.tile])
        from superqt import QCollapsible

        self._options_section = QCollapsible("Options")
        self._options_section.addWidget(self.options_box.native)
        self.native.layout().addWidget(self._options_section)
        self.native.layout().addWidget(buttons.native)
        self._buttons = buttons
        self.native.layout().addWidget(self.progress.native)

    def _build_outputs(self):
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QHBoxLayout, QSizePolicy, QWidget

        self.status = _label()
        self.result_text = _label(selectable=True)
        self.result_text.setToolTip("Angles turn from +x (right) towards +y (down): clockwise on "
                                    "screen. Shifts are per array axis (rows first): the target is "
                                    "the reference moved by them.")
        self.kernel_picture = KernelPicture()
        result_row = QWidget()
        row = QHBoxLayout(result_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.result_text, 1)
        row.addWidget(self.kernel_picture.canvas, 0, Qt.AlignmentFlag.AlignTop)
        self.plots = ResultPlots()
        self.copy_button = PushButton(text="Copy result (JSON)", visible=False)
        for w in (self.status, result_row, self.plots.tabs, self.copy_button.native):
            self.native.layout().addWidget(w)
        self.native.layout().addStretch(1)
        self.native.setMinimumWidth(DOCK_WIDTH)
        self.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)

    def _connect(self, viewer):
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QApplication

        self._timer = QTimer(self.native)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self._show_stage)
        self._redraw = QTimer(self.native)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(100)
        self._redraw.timeout.connect(self._redraw_result)
        self.reference.changed.connect(self._reference_changed)
        self.target.changed.connect(self._check_inputs)
        self.mode.changed.connect(self._mode_changed)
        self.fit_button.changed.connect(self.start_fit)
        self.cancel_button.changed.connect(self.cancel)
        self.copy_button.changed.connect(self.copy_result)
        self._listen(viewer.layers.events.removed, self._layer_removed)
        self._listen(viewer.layers.events.inserted, self._layer_inserted)
        self._listen(viewer.events.theme, self._redraw_result)
        for layer in viewer.layers:
            self._listen(layer.events.name, self._refresh)
        ref = weakref.ref(self)

        def settle(*_):
            widget = ref()
            if widget is not None:
                widget.shutdown()

        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(settle)
        self.native.destroyed.connect(_disconnector(self._connections))

    def _listen(self, emitter, callback):
        emitter.connect(callback)
        self._connections.append((emitter, callback))

    # --- inputs ---------------------------------------------------------------------------
    def _layer_inserted(self, event):
        self._listen(event.value.events.name, self._refresh)
        self._refresh()

    def _refresh(self, event=None):
        self.reset_choices()
        self._check_inputs()

    def reset_choices(self, *args):
        """Refresh the layer pickers, keeping each on the same layer object through renames."""
        pickers = (self.reference, self.target, self.mask)
        kept = [p.value for p in pickers]
        super().reset_choices()
        for picker, layer in zip(pickers, kept):
            if layer is not None and any(layer is c for c in picker.choices) and picker.value is not layer:
                picker.value = layer
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
        """Explain a problem with the chosen layers (or a doubt about the mode) before Fit."""
        problem, grids = "", None
        ref, tgt = self.reference.value, self.target.value
        if ref is None or tgt is None:
            problem = "Add or choose two image layers."
        else:
            try:
                check_pair(ref, tgt, self.mode.value)
                grids = pair_grids(ref, tgt, self.mode.value)
            except (TypeError, ValueError) as err:
                problem = failure_text(err)
        self.sampling.enabled = grids is not None  # honoured across grids only
        if self._worker is None:
            self.fit_button.enabled = not problem
            if problem:  # an error on show: no earlier result stays beside it
                self._clear_result()
            if update_status:
                hints = [axis_hint(tgt, self.mode.value), _grid_hint(ref, tgt, grids, self.mode.value)]
                self._say(problem or "\n".join(h for h in hints if h))
        return not problem

    # --- running --------------------------------------------------------------------------
    def options(self) -> dict:
        """The fit options as keywords of the core functions (every mode gets all of them)."""
        high = self.sigma_max.value or None
        return dict(loss=self.loss.value, **self.kernel.value.options, shift=self.fit_shift.value,
                    gain_offset=self.gain_offset.value, reverse=self.reverse.value,
                    reference_noise="auto" if self.reference_noise.value else 0,
                    exclude_border=int(self.exclude_border.value),
                    sigma_bounds=(float(self.sigma_min.value), high),
                    truncate=float(self.truncate.value))

    def start_fit(self, *args):
        """Start a fit in a worker thread; returns the worker (also kept as ``self._worker``)."""
        from napari.qt.threading import create_worker

        if self._worker is not None or not self._check_inputs(update_status=False):
            return None
        self._cancel.clear()
        self._delivered = False
        inputs = (self.reference.value, self.target.value, self.mask.value)
        kwargs = dict(mask_layer=inputs[2], mode=self.mode.value,
                      world_point=tuple(self._viewer.dims.point),
                      tile=int(self.tile.value), target_sampling=self.sampling.value,
                      warn=False, **self.options())  # findings: in the panel
        cancel = self._cancel
        reason = lambda: self._cancel_reason  # noqa: E731 - read when cancelled
        stage = [""]

        def check(text):
            if cancel.is_set():
                raise FitCancelled(reason())
            stage[0] = text  # read by the GUI thread's timer; never touch Qt here

        def job():
            try:
                return run_layer_fit(inputs[0], inputs[1], callback=check, **kwargs)
            except Exception as err:  # shown in the widget; never an unhandled worker error
                if not isinstance(err, FitCancelled | ValueError | TypeError):
                    LOG.exception("blur fit failed")
                return _Failure(err)  # (a returned Exception would be re-raised by the worker)

        self._inputs, self._stage_box = inputs, stage
        worker = create_worker(job, _start_thread=False)
        worker.returned.connect(self._done)
        worker.finished.connect(self._finished)
        self._worker = self._last_worker = worker
        self._set_running(True)
        self._say("Fitting...")
        self._timer.start()
        worker.start()
        return worker

    def cancel(self, *args, reason: str = "cancelled"):
        """Ask the running fit to stop; it stops at its next step and adds nothing."""
        if self._worker is not None and not self._delivered:
            self._cancel_reason = reason
            self._cancel.set()
            self._say("Cancelling...")

    def shutdown(self, timeout_ms: int = 10_000):
        """Stop a running fit and wait for its thread (the app is quitting or the script ends)."""
        from qtpy.QtCore import QThreadPool

        if self._worker is None:
            return
        self._cancel_reason = "the application is closing"
        self._cancel.set()
        pool = QThreadPool.globalInstance()
        if pool is not None:
            pool.waitForDone(timeout_ms)

    def _layer_removed(self, event):
        layer = event.value
        if self._worker is not None and any(layer is x for x in self._inputs if x is not None):
            self.cancel(reason=f"layer {layer.name!r} was removed during the fit")
        for emitter, callback in list(self._connections):
            if emitter is layer.events.name:
                emitter.disconnect(callback)
                self._connections.remove((emitter, callback))
        self._refresh()

    def _set_running(self, running: bool):
        self.fit_button.enabled = not running
        self.cancel_button.enabled = running
        self.progress.visible = running
        self.progress.max = 0 if running else 1  # 0..0: Qt's busy indicator

    def _show_stage(self):
        if self._worker is not None and not self._cancel.is_set():
            self._say(f"Fitting: {self._stage_box[0]}")

    def _say(self, text: str):
        self.status.setText(text)
        self.status.setVisible(bool(text))

    def _finished(self):
        self._timer.stop()
        self._worker = None
        self._set_running(False)
        self._check_inputs(update_status=False)

    def _still_wanted(self) -> str:
        """Why the fit's result must not be shown now (``""`` when it may)."""
        if self._cancel.is_set():
            return self._cancel_reason
        for layer in self._inputs:
            if layer is not None and not any(layer is x for x in self._viewer.layers):
                return f"layer {layer.name!r} was removed during the fit"
        return ""

    def _done(self, result):
        if isinstance(result, _Failure):
            self._failed(result.error)
            return
        why = self._still_wanted()  # checked in the GUI thread, right before adding layers
        if why:
            self._failed(FitCancelled(why))
            return
        self._delivered = True
        self._clear_result()
        self.last_result = result
        shown = show_layers(self._viewer, result)
        if result.blur_map is not None:
            self._follow_map(shown[0])
        self.reference_noise.text = _noise_label(result.fit)
        self.result_text.setText(describe(result))
        self.result_text.setVisible(True)
        self.copy_button.visible = True
        self._draw(result)
        self._say("")

    def _failed(self, err):
        from napari.utils.notifications import show_info, show_warning

        if isinstance(err, FitCancelled):
            self._say(f"Fit stopped: {err}. Nothing was added.")
            show_info(f"Blur fit stopped: {err}")
            return
        message = failure_text(err)
        self._clear_result()
        self._say(f"Fit failed: {message}")
        show_warning(f"Blur fit failed: {message}")

    def _clear_result(self):
        """An error replaces the previous result: no stale numbers, plot, colourbar or picture."""
        self.last_result = None
        self._follow_map(None)
        self.result_text.setText("")
        self.result_text.setVisible(False)
        self.copy_button.visible = False
        self.plots.clear()
        self.kernel_picture.clear()

    def _follow_map(self, layer):
        """Redraw the colourbar when the blur map layer's colormap or contrast limits change."""
        old, self._map_layer = self._map_layer, layer
        for emitter, callback in list(self._connections):
            if old is not None and callback == self._map_changed:
                emitter.disconnect(callback)
                self._connections.remove((emitter, callback))
        if layer is not None:
            self._listen(layer.events.colormap, self._map_changed)
            self._listen(layer.events.contrast_limits, self._map_changed)

    def _map_changed(self, event=None):
        if self.last_result is not None and self.last_result.blur_map is not None:
            self._redraw.start()  # once the slider stops: a redraw per event would lag

    def _draw(self, result):
        """The plots and, for a single fit, the kernel picture, in the viewer's theme."""
        colors = palette(self._viewer.theme)
        self.plots.draw(result, colors, map_layer=self._map_layer)
        if result.fit is not None:
            self.kernel_picture.draw(result.fit, colors)
        else:
            self.kernel_picture.clear()

    def _redraw_result(self, event=None):
        """Draw the plots again: the theme or the blur map layer's colours changed."""
        if self.last_result is not None:
            self._draw(self.last_result)

    def result_json(self) -> str:
        """The last result as JSON text (what Copy puts on the clipboard)."""
        r = self.last_result
        if r is None:
            return ""
        if r.fit is not None:
            d = json.loads(r.fit.to_json())
            world = r.fit.in_world_units(r.pixel_size)
            d.update(sigma_world=list(r.sigma_world), units=list(r.units),
                     principal_sigmas_world=list(world["principal_sigmas"]),
                     shift_world=list(world["shift"]))
            return json.dumps(d, indent=2)
        if r.frames is not None:
            return json.dumps([json.loads(f.to_json()) for f in r.frames], indent=2)
        return json.dumps(r.blur_map.to_dict(), indent=2)

    def copy_result(self, *args):
        """Put the last result on the clipboard as JSON."""
        from qtpy.QtWidgets import QApplication

        QApplication.clipboard().setText(self.result_json())
        self._say("Result copied to the clipboard.")


def _grid_hint(reference, target, grids, mode: str) -> str:
    """Before a fit: say that the layers will be matched through their grids (``""`` on one grid)."""
    if grids is None:
        return ""
    units = world_units(reference, target, spatial_axes(reference.ndim, mode))
    return (f"The layers lie on different grids ({grid_sizes(grids, units)}): the fit maps one onto "
            "the other through their scale and translate, over their overlap.")


def _noise_label(fit) -> str:
    """The noise control's text, with the estimate of the last fit when it made one."""
    if fit is None or not fit.reference_noise:
        return NOISE_TEXT
    return f"{NOISE_TEXT} (estimate {fit.reference_noise:.3g})"


def _disconnector(connections: list):
    """A slot that drops the widget's viewer connections (without holding the widget)."""
    def disconnect(*_):
        for emitter, callback in connections:
            try:
                emitter.disconnect(callback)
            except (RuntimeError, ValueError, TypeError):
                pass
        connections.clear()
    return disconnect


@atexit.register
def _settle_at_exit():
    """A script that ends without closing its viewer: stop fits, then close the viewers in order.

    Left to the interpreter's teardown, Qt and vispy objects die in arbitrary order and the
    process can crash on exit.
    """
    widgets = list(_LIVE)
    if not widgets:
        return
    for widget in widgets:
        widget.shutdown()
    import napari

    napari.Viewer.close_all()
