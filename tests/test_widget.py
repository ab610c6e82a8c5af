"""The dock widget in a real napari viewer (under Xvfb): pickers, worker, cancel, outputs, errors."""

import json
import re
import time

import numpy as np
import pytest
from drive import run, widget_for
from finding_cases import CASES, core_findings, core_fits
from magicgui.widgets import CheckBox
from scipy import ndimage

from napari_blurfit import fit_blur
from napari_blurfit._gaussian import GaussianKernel
from napari_blurfit._widget import BlurFitWidget
from napari_blurfit.layers import KernelShape, fit_layers

pytestmark = [pytest.mark.gui, pytest.mark.slow]


@pytest.fixture
def viewer_pair(make_napari_viewer, cell):
    viewer = make_napari_viewer()
    viewer.add_image(cell, name="ref", scale=(0.2, 0.2))
    viewer.add_image(1.5 * ndimage.gaussian_filter(cell, 2.0) + 3, name="tgt", scale=(0.2, 0.2))
    return viewer



def shown(widget) -> str:
    """The result panel's text as it reads: its no-break spaces (which keep a number and its
    error on one line) as plain spaces."""
    return widget.result_text.text().replace("\u00a0", " ")



def test_pickers_offer_only_images_and_stay_distinct(viewer_pair, qtbot):
    viewer = viewer_pair
    viewer.add_labels(np.zeros((256, 256), int), name="lab")
    widget = BlurFitWidget(viewer)
    names = [c.name for c in widget.reference.choices if c is not None]
    assert names == ["ref", "tgt"]
    assert [c.name if c else None for c in widget.mask.choices] == [None, "lab"]
    widget.reference.value = viewer.layers["tgt"]
    widget.target.value = viewer.layers["tgt"]
    widget.reset_choices()
    assert widget.target.value is not widget.reference.value
    viewer.layers["ref"].name = "renamed"
    assert "renamed" in [c.name for c in widget.reference.choices if c is not None]
    viewer.add_image(np.ones((2, 5, 5)), name="small")  # (other grids are fitted: test_widget_grids.py)
    widget.reference.value = viewer.layers["small"]
    assert not widget.fit_button.enabled
    assert "differ in shape" in widget.status.text()


def test_fit_adds_layers_then_updates_them_in_place(viewer_pair, qtbot):
    viewer = viewer_pair
    widget = widget_for(viewer, "ref", "tgt", gain_offset=True)
    run(widget, qtbot)
    fit = widget.last_result.fit
    np.testing.assert_allclose(fit.sigma, (2.0, 2.0), rtol=1e-3)
    assert [layer.name for layer in viewer.layers] == ["ref", "tgt", "tgt fit", "tgt residual"]
    res = viewer.layers["tgt residual"]
    assert res.colormap.name == "bwr"
    assert res.contrast_limits[0] == -res.contrast_limits[1]
    assert tuple(res.scale) == (0.2, 0.2)
    assert res.metadata["blurfit"]["gain"] == pytest.approx(1.5, rel=1e-4)
    assert "Blur sigma: 2 px (± " in shown(widget)
    assert "world" not in shown(widget)  # no units on these layers: pixels only
    widget.loss.value = "l1"
    run(widget, qtbot)
    assert len(viewer.layers) == 4  # updated in place, not piled up
    assert viewer.layers["tgt fit"].metadata["blurfit"]["loss_name"] == "l1"
    assert widget.result_json().startswith("{")


def test_errors_show_in_widget_not_traceback(viewer_pair, qtbot):
    viewer = viewer_pair
    viewer.add_image(np.full((256, 256), 3.0), name="flat")
    widget = widget_for(viewer, "ref", "flat")
    run(widget, qtbot)
    assert widget.status.text() == ("Fit failed: target is constant: a blur cannot be "
                                    "measured from a flat image")
    assert "flat fit" not in viewer.layers
    assert widget.fit_button.enabled


@pytest.fixture
def running_big_fit(make_napari_viewer, qtbot):
    """A widget running a slow (2048 x 2048, L1 with gain/offset) fit, caught mid-way."""
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    big = ndimage.zoom(rng.random((256, 256)).astype(np.float32), 8)
    viewer.add_image(big, name="big")
    viewer.add_image(ndimage.gaussian_filter(big, 3.0), name="big blurred")
    widget = widget_for(viewer, "big", "big blurred", loss="l1", kernel=KernelShape.PER_AXIS,
                        gain_offset=True)
    widget.start_fit()
    qtbot.waitUntil(lambda: "filter pass" in widget.status.text(), timeout=60_000)
    return viewer, widget


def test_cancel_stops_promptly_and_adds_nothing(running_big_fit, qtbot):
    viewer, widget = running_big_fit
    t0 = time.perf_counter()
    widget.cancel()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    print(f"cancel took {time.perf_counter() - t0:.2f} s")
    assert widget.status.text().startswith("Fit stopped: cancelled")
    assert [layer.name for layer in viewer.layers] == ["big", "big blurred"]


def test_removing_an_input_layer_ends_the_fit(running_big_fit, qtbot):
    viewer, widget = running_big_fit
    viewer.layers.remove("big")
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    assert "layer 'big' was removed" in widget.status.text()
    assert [layer.name for layer in viewer.layers] == ["big blurred"]


def test_console_fit_layers_matches_widget(viewer_pair, qtbot):
    viewer = viewer_pair
    widget = widget_for(viewer, "ref", "tgt", kernel=KernelShape.PER_AXIS, gain_offset=True)
    run(widget, qtbot)
    from_widget = widget.last_result.fit
    from_console = fit_layers(viewer, "ref", "tgt", per_axis=True, gain_offset=True)
    assert from_console.sigma == from_widget.sigma
    assert from_console.gain == from_widget.gain
    core = fit_blur(viewer.layers["ref"].data, viewer.layers["tgt"].data, per_axis=True,
                    gain_offset=True)
    assert core.sigma == from_widget.sigma
    assert len(viewer.layers) == 4


def test_per_frame_mode_plots_sigma_against_frame(make_napari_viewer, qtbot, camera):
    viewer = make_napari_viewer()
    ref = np.stack([camera[i * 30 : i * 30 + 80, :80] for i in range(4)])
    viewer.add_image(ref, name="r")
    viewer.add_image(np.stack([ndimage.gaussian_filter(f, 1 + i) for i, f in enumerate(ref)]),
                     name="t")
    widget = widget_for(viewer, "r", "t")
    widget.mode.value = "per frame"
    run(widget, qtbot)
    np.testing.assert_allclose([f.sigma[0] for f in widget.last_result.frames], [1, 2, 3, 4],
                               rtol=1e-3)
    line = widget.plots.main.axes.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), [1, 2, 3, 4], rtol=1e-3)
    assert widget.plots.main.axes.get_xlabel() == "frame"
    widget.mode.value = "blur map"
    assert not widget.tile.native.isHidden()  # shown only in blur-map mode


def test_blur_map_mode_adds_aligned_map_with_its_range(make_napari_viewer, qtbot, cell):
    viewer = make_napari_viewer()
    left, right = ndimage.gaussian_filter(cell, 1.0), ndimage.gaussian_filter(cell, 3.0)
    target = np.concatenate([left[:, :128], right[:, 128:]], axis=1)  # blur 1 px | 3 px
    viewer.add_image(cell, name="ref", scale=(0.2, 0.2), translate=(5.0, -3.0))
    viewer.add_image(target, name="tgt", scale=(0.2, 0.2), translate=(5.0, -3.0))
    widget = widget_for(viewer, "ref", "tgt", mode="blur map", tile=64)
    run(widget, qtbot)
    bm = widget.last_result.blur_map
    assert bm.sigma.shape[-1] == 2
    layer = viewer.layers["tgt blur map"]
    assert layer.data.shape == target.shape
    assert tuple(layer.scale) == (0.2, 0.2) and tuple(layer.translate) == (5.0, -3.0)
    # tiles wholly inside each half recover that half's blur
    np.testing.assert_allclose(np.nanmedian(layer.data[:, :96]), 1.0, rtol=0.02)
    np.testing.assert_allclose(np.nanmedian(layer.data[:, 160:]), 3.0, rtol=0.02)
    lo, hi = np.nanmin(layer.data), np.nanmax(layer.data)
    assert layer.colormap.name == "viridis"
    assert tuple(layer.contrast_limits) == pytest.approx((lo, hi))
    assert not layer.colorbar.visible  # napari's colorbar would cover the image: it is in the dock
    assert widget.plots.colorbar is not None
    assert f"sigma {np.nanmin(bm.sigma):.3g} to {np.nanmax(bm.sigma):.3g} px" in shown(widget)
    assert widget.plots.main.axes.get_xlabel() == "tile sigma (px)"
    np.testing.assert_array_equal(viewer.layers["tgt"].data, target)  # inputs untouched


# --- 1. cancel and deletion always win -------------------------------------------------------------
@pytest.fixture
def held_fit(monkeypatch):
    """Make the widget's worker stop at a chosen moment until the test releases it."""
    import threading

    import napari_blurfit._widget as widget_module

    real = widget_module.run_layer_fit
    gate = {"at": None, "reached": threading.Event(), "release": threading.Event()}

    def hold():
        gate["reached"].set()
        assert gate["release"].wait(30)

    def held(*args, callback, **kwargs):
        def check(stage):
            if stage == gate["at"]:
                hold()
            callback(stage)
        result = real(*args, callback=check, **kwargs)
        if gate["at"] == "returned":
            hold()
        return result

    monkeypatch.setattr(widget_module, "run_layer_fit", held)
    yield gate
    gate["release"].set()  # never leave a worker waiting


@pytest.mark.parametrize("moment", ["making the fitted image", "making the residual image", "returned"])
@pytest.mark.parametrize("action", ["cancel", "remove target", "remove reference"])
def test_cancel_or_removal_at_any_moment_adds_nothing(viewer_pair, qtbot, held_fit, moment, action):
    viewer = viewer_pair
    widget = widget_for(viewer, "ref", "tgt")
    held_fit["at"] = moment
    widget.start_fit()
    qtbot.waitUntil(held_fit["reached"].is_set, timeout=30_000)
    if action == "cancel":
        widget.cancel()
    else:
        viewer.layers.remove({"remove target": "tgt", "remove reference": "ref"}[action])
    held_fit["release"].set()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    assert not [layer.name for layer in viewer.layers if "fit" in layer.name or "residual" in layer.name]
    assert widget.status.text().startswith("Fit stopped") and "Nothing was added" in widget.status.text()
    assert widget.last_result is None
    if action == "cancel":  # still usable: the next fit runs and shows its layers
        held_fit["at"] = None
        run(widget, qtbot)
        assert "tgt fit" in viewer.layers and widget.last_result is not None


# --- 2. masks in the image's own pixels ------------------------------------------------------------
def test_rectangle_mask_counts_target_pixels(make_napari_viewer, qtbot, cell):
    viewer = make_napari_viewer()
    kw = dict(scale=(0.107, 0.107), translate=(4.0, 2.0), units=("um", "um"))
    viewer.add_image(cell, name="ref", **kw)
    bad = ndimage.gaussian_filter(cell, 2.0)
    bad[:, 210:] = 999.0  # garbage outside the drawn rectangle
    tgt = viewer.add_image(bad, name="tgt", **kw)
    corners = np.array([tgt.data_to_world(p) for p in [(20, 20), (20, 200), (200, 200), (200, 20)]])
    viewer.add_shapes([corners], shape_type="rectangle", name="roi")  # drawn in world coordinates
    widget = widget_for(viewer, "ref", "tgt", mask=viewer.layers["roi"])
    run(widget, qtbot)
    assert widget.last_result.mask_pixels == 180 * 180
    assert widget.last_result.fit.sigma[0] == pytest.approx(2.0, rel=1e-3)
    assert "The mask selected 32,400 pixels." in shown(widget)


def test_misaligned_labels_mask_is_refused_in_plain_words(viewer_pair, qtbot):
    viewer = viewer_pair
    viewer.add_labels(np.ones((256, 256), int), name="lab", scale=(0.3, 0.3))
    widget = widget_for(viewer, "ref", "tgt", mask=viewer.layers["lab"])
    run(widget, qtbot)
    text = widget.status.text()
    assert text.startswith("Fit failed: labels layer 'lab' does not sit on the pixel grid of 'tgt'")
    assert "interpolation" in text and "Error" not in text


# --- 3. pickers follow layers by identity ----------------------------------------------------------
def test_pickers_follow_layers_through_renames_additions_removals(viewer_pair, qtbot):
    viewer = viewer_pair
    viewer.add_image(np.zeros((256, 256)), name="other")
    viewer.add_labels(np.zeros((256, 256), int), name="lab")
    ref, tgt, lab = viewer.layers["ref"], viewer.layers["tgt"], viewer.layers["lab"]
    widget = widget_for(viewer, "tgt", "other", mask=lab)
    widget.target.value = ref
    ref.name, tgt.name, lab.name = "reference renamed", "target renamed", "labels renamed"
    assert widget.reference.value is tgt and widget.target.value is ref and widget.mask.value is lab
    viewer.add_image(np.zeros((256, 256)), name="added")
    viewer.layers.move(viewer.layers.index("added"), 0)
    viewer.layers.remove("other")
    assert widget.reference.value is tgt and widget.target.value is ref and widget.mask.value is lab
    names = sorted(c.name for c in widget.reference.choices)
    assert names == ["added", "reference renamed", "target renamed"]


# --- 4. clean exit ---------------------------------------------------------------------------------
EXIT_SCRIPT = """
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
from scipy import ndimage

viewer = napari.Viewer(show=True)
img = ndimage.zoom(np.random.default_rng(0).random((32, 32)), 4)
viewer.add_image(img, name="ref")
viewer.add_image(ndimage.gaussian_filter(img, 2.0), name="tgt")
_, widget = viewer.window.add_plugin_dock_widget("napari-blurfit", "Fit Gaussian blur")
widget.start_fit()
while widget._worker is not None:
    QApplication.processEvents()
print("sigma", round(widget.last_result.fit.sigma[0], 3))
"""  # ends without viewer.close() or napari.run()


def test_script_that_fits_and_exits_without_closing_exits_cleanly(tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "fit_and_exit.py"
    script.write_text(EXIT_SCRIPT)
    codes = []
    for _ in range(8):
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "QT_QPA_PLATFORM": "xcb"})
        assert "sigma 2.0" in done.stdout, done.stderr[-2000:]
        codes.append(done.returncode)
    assert codes == [0] * 8


# --- 5. a compact dock in napari's look ------------------------------------------------------------
def test_dock_is_compact_and_shows_only_what_exists(make_napari_viewer, qtbot, cell):
    from matplotlib.colors import to_hex
    from napari.utils.theme import get_theme

    viewer = make_napari_viewer(show=True)
    viewer.add_image(cell, name="ref")
    viewer.add_image(ndimage.gaussian_filter(cell, 2.0), name="a target with a long, long, long name")
    widget = BlurFitWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="blur")
    qtbot.wait(100)
    assert 340 <= dock.width() <= 430
    for hidden in (widget.result_text, widget.plots.tabs, widget.copy_button.native, widget.progress.native):
        assert not hidden.isVisible()  # nothing empty before a fit
    assert widget.status.wordWrap() and widget.result_text.wordWrap()
    widget._say("a very long status message " * 20)
    qtbot.wait(50)
    assert dock.width() <= 430  # long text wraps instead of widening the dock
    run(widget, qtbot)
    assert widget.result_text.isVisible() and widget.plots.tabs.isVisible()
    theme = get_theme(viewer.theme)
    assert to_hex(widget.plots.main.figure.get_facecolor()) == theme.background.as_hex()
    assert dock.width() <= 430
    # an error replaces the old result: no stale numbers or plot
    viewer.add_image(np.full((256, 256), 3.0), name="flat")
    widget.target.value = viewer.layers["flat"]
    run(widget, qtbot)
    assert widget.status.text().startswith("Fit failed: target is constant")
    assert not widget.result_text.isVisible() and not widget.plots.tabs.isVisible()
    assert widget.last_result is None and not widget.copy_button.native.isVisible()
    assert not widget.kernel_picture.canvas.isVisible() and widget.result_text.text() == ""


def _tick_texts(axis):
    return [t.get_text() for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]


def test_loss_plot_is_smooth_with_readable_ticks(viewer_pair, qtbot):
    widget = widget_for(viewer_pair, "ref", "tgt", gain_offset=True)
    run(widget, qtbot)
    ax = widget.plots.main.axes
    curve = ax.get_lines()[0]
    xs = curve.get_xdata()
    assert len(xs) >= 200 and np.max(np.diff(np.log(xs))) < 0.05  # densely sampled
    fit = widget.last_result.fit
    assert float(np.min(curve.get_ydata())) == pytest.approx(fit.loss, rel=1e-6)  # dip at the optimum
    widget.plots.main.canvas.draw()
    for labels in (_tick_texts(ax.xaxis), _tick_texts(ax.yaxis)):
        assert 2 <= len(labels) <= 6 and not any("times" in t or "^" in t for t in labels)
    widget.loss.value = "l1"  # its profile spans a narrow sigma range: plain numbers
    run(widget, qtbot)
    widget.plots.main.canvas.draw()
    labels = _tick_texts(widget.plots.main.axes.xaxis)
    assert 2 <= len(labels) <= 6 and all(t.replace(".", "").replace("-", "").isdigit() for t in labels)


# --- 6. plain words --------------------------------------------------------------------------------
def test_plain_words_units_hints_and_slice(make_napari_viewer, qtbot, camera):
    viewer = make_napari_viewer()
    ref = np.stack([camera[i * 30 : i * 30 + 80, :80] for i in range(4)])
    viewer.add_image(ref, name="r")
    viewer.add_image(np.stack([ndimage.gaussian_filter(f, 2.0) for f in ref]), name="t")
    widget = widget_for(viewer, "r", "t")
    assert "looks like a time series or channels" in widget.status.text()
    assert "'frames jointly'" in widget.status.text() and widget.fit_button.enabled
    widget.mode.value = "current slice"
    assert widget.status.text() == ""
    viewer.dims.set_point(0, 2)
    run(widget, qtbot)
    text = shown(widget)
    assert "Fitted the slice at axis 0 = 2 (the one shown)." in text
    assert "Blur sigma: 2 px (± " in text and "world" not in text and "Error" not in text


def test_units_shown_when_the_layer_has_them(make_napari_viewer, qtbot, cell):
    viewer = make_napari_viewer()
    kw = dict(scale=(0.2, 0.2), units=("um", "um"))
    viewer.add_image(cell, name="ref", **kw)
    viewer.add_image(ndimage.gaussian_filter(cell, 2.0), name="tgt", **kw)
    widget = widget_for(viewer, "ref", "tgt")
    run(widget, qtbot)
    assert "Blur sigma: 2 px = 0.4 µm (± " in shown(widget)


def test_round_sigma_on_anisotropic_voxels_is_shown_per_axis_in_world_units(make_napari_viewer, qtbot,
                                                                            volume):
    """A round sigma in px is not round in um: one world value per axis, named."""
    viewer = make_napari_viewer()
    kw = dict(scale=(0.3, 0.1, 0.1), units=("um", "um", "um"))
    viewer.add_image(volume, name="vol", **kw)
    viewer.add_image(ndimage.gaussian_filter(volume, 1.5), name="vol blurred", **kw)
    widget = widget_for(viewer, "vol", "vol blurred")
    run(widget, qtbot, timeout=120_000)
    text = shown(widget)
    assert text.startswith("Blur sigma: 1.5 px (round in pixels) = z 0.45, y 0.15, x 0.15 µm (± "), text


# --- issue 10: how well a Gaussian explains the pair -----------------------------------------------
def test_transfer_plot_and_explained_variance(make_napari_viewer, qtbot, cell):
    viewer = make_napari_viewer()
    kw = dict(scale=(0.5, 0.5), units=("um", "um"))
    viewer.add_image(cell, name="ref", **kw)
    viewer.add_image(ndimage.gaussian_filter(cell, 2.0), name="tgt", **kw)
    widget = widget_for(viewer, "ref", "tgt")
    run(widget, qtbot)
    fit = widget.last_result.fit
    assert f"A Gaussian explains {100 * fit.r2:.1f}% of the target's variance; a free kernel would " \
           f"explain {100 * fit.r2_linear:.1f}%." in shown(widget)
    tabs = widget.plots.tabs
    assert tabs.isTabVisible(1) and tabs.tabText(1) == "transfer"
    ax = widget.plots.transfer.axes
    measured, model = ax.get_lines()[:2]
    np.testing.assert_allclose(model.get_xdata(), fit.transfer.frequency)
    np.testing.assert_allclose(model.get_ydata(), fit.transfer.model)
    np.testing.assert_allclose(measured.get_ydata(), fit.transfer.measured)
    assert ax.get_xlabel() == "frequency (cycles/px)"
    assert [c.get_xlabel() for c in ax.child_axes] == ["cycles/µm"]


# --- issue 12: the widget's options reach the blur map ---------------------------------------------
def test_blur_map_mode_gets_mask_reverse_and_border(make_napari_viewer, qtbot, cell):
    viewer = make_napari_viewer()
    viewer.add_image(ndimage.gaussian_filter(cell, 2.0), name="blurred")
    sharp = cell.copy()
    sharp[:8] = 5000.0  # garbage in a border band
    viewer.add_image(sharp, name="sharp")
    widget = widget_for(viewer, "blurred", "sharp", mode="blur map", tile=64, reverse=True,
                        exclude_border=16)
    run(widget, qtbot)
    sigma = widget.last_result.blur_map.sigma[..., 0]
    assert np.isfinite(sigma).all()
    np.testing.assert_allclose(sigma, 2.0, rtol=0.02)


# --- issue 8: the whole Gaussian in the widget -----------------------------------------------------
API_WORDS = re.compile(r"\b(per_axis|gain_offset|full_covariance|sigma_bounds|exclude_border|huber_delta"
                       r"|spatial_axes|\w+=(True|False))")
# each option a finding can suggest, as the dock names it: a label of one of its controls
WIDGET_LABELS = {"gain_offset": '"fit gain and offset"', "shift": '"fit shift"',
                 "per_axis": 'kernel "per axis"', "full_covariance": 'kernel "rotated"',
                 "reverse": '"reverse"', "sigma_bounds": '"sigma min/max"',
                 "spatial_axes": '"per frame"'}  # a mode: the dock has no spatial axes control


def _widget_notes(fit) -> list[str]:
    """The "Note:" lines of the dock's result text for ``fit``."""
    from napari_blurfit._report import describe
    from napari_blurfit.layers import LayerFit

    lines = describe(LayerFit(fit=fit)).replace("\u00a0", " ").splitlines()
    return [line.split(" ", 1)[1] for line in lines if line.startswith(("Note: ", "! "))]


@pytest.mark.parametrize("case", list(CASES))
def test_every_finding_speaks_the_widgets_words(case):
    """Each finding the core can give, in the result text: the dock's labels, never an option name."""
    finding = core_findings()[case]
    notes = _widget_notes(core_fits()[case])
    note = next(n for n in notes if n.startswith(finding.text[:30]))
    assert not API_WORDS.search(note), note
    for option in finding.suggestion:
        assert WIDGET_LABELS[option] in note, (option, note)


def test_notes_and_errors_speak_the_widgets_words(viewer_pair):
    from napari_blurfit._report import failure_text

    notes = {case: _widget_notes(core_fits()[case]) for case in ("shifted", "rotated", "target sharper")}
    assert any(n.endswith('reads a shift as extra blur: tick "fit shift"') for n in notes["shifted"])
    assert any(n.endswith(': choose kernel "rotated"') for n in notes["rotated"])
    assert any(n.endswith('; tick "reverse"') for n in notes["target sharper"])
    assert failure_text(ValueError("sigma_bounds must satisfy 0 <= low < high")) == \
        '"sigma min/max" must satisfy 0 <= low < high'
    widget = BlurFitWidget(viewer_pair)  # every quoted label names a control of the dock
    texts = [w.text for w in widget.options_box if isinstance(w, CheckBox)]
    texts += [w.label for w in widget.options_box] + [k.value for k in KernelShape]
    texts += list(widget.mode.choices)
    for words in WIDGET_LABELS.values():
        label = words.split('"')[1].split("/")[0]
        assert any(t.startswith(label) for t in texts), label


def test_kernel_choice_keeps_labels_and_api_apart(viewer_pair):
    widget = BlurFitWidget(viewer_pair)
    labels = [widget.kernel.native.itemText(i) for i in range(widget.kernel.native.count())]
    assert labels == ["round", "per axis", "rotated"]
    expected = {KernelShape.ROUND: (False, False), KernelShape.PER_AXIS: (True, False),
                KernelShape.ROTATED: (False, True)}
    for choice, (per_axis, full) in expected.items():
        widget.kernel.value = choice
        widget.fit_shift.value = choice is KernelShape.ROTATED
        options = widget.options()
        assert (options["per_axis"], options["full_covariance"]) == (per_axis, full)
        assert options["shift"] is (choice is KernelShape.ROTATED)
    assert widget.kernel in widget.options_box and widget.fit_shift in widget.options_box  # collapsible


@pytest.fixture(scope="module")
def rotated_pair(cell_module):
    kernel = GaussianKernel.from_basicsr(2.5, 1.2, 0.5, shift=(0.4, -0.6))
    return cell_module, kernel.apply(cell_module), kernel


@pytest.fixture(scope="module")
def cell_module():
    from skimage import data

    img = data.cell()
    y0, x0 = (img.shape[0] - 192) // 2, (img.shape[1] - 192) // 2
    return np.ascontiguousarray(img[y0 : y0 + 192, x0 : x0 + 192]).astype(np.float64)


def docked_in_um(make_napari_viewer, pair, **options):
    """A shown viewer with ``pair`` as "ref" and "tgt" (0.2 µm pixels) and a docked widget."""
    viewer = make_napari_viewer(show=True)
    kw = dict(scale=(0.2, 0.2), units=("um", "um"))
    viewer.add_image(pair[0], name="ref", **kw)
    viewer.add_image(pair[1], name="tgt", **kw)
    widget = widget_for(viewer, "ref", "tgt", **options)
    return viewer, widget, viewer.window.add_dock_widget(widget, name="blur")


def test_rotated_shifted_fit_shows_the_whole_gaussian(make_napari_viewer, qtbot, rotated_pair):
    ref, tgt, truth = rotated_pair
    viewer, widget, _ = docked_in_um(make_napari_viewer, rotated_pair, kernel=KernelShape.ROTATED,
                                     fit_shift=True)
    assert not widget.kernel_picture.canvas.isVisible()  # nothing before a result
    run(widget, qtbot, timeout=120_000)
    fit = widget.last_result.fit
    assert fit.full_covariance and fit.shift_fitted
    np.testing.assert_allclose(fit.principal_sigmas, (2.5, 1.2), rtol=1e-3)
    assert fit.angle == pytest.approx(np.degrees(0.5), abs=0.1)
    np.testing.assert_allclose(fit.shift, (0.4, -0.6), atol=1e-3)
    text = shown(widget)
    assert "Principal sigmas: 2.5, 1.2 px = 0.5, 0.24 µm (± " in text
    assert f"Major axis at {fit.angle:.1f}° (± " in text and "from +x towards +y" in text
    assert "Shift of the target: 0.4, -0.6 px = 0.08, -0.12 µm (± " in text
    assert "use full_covariance" not in text and "shift=True" not in text
    # the picture is the fitted kernel, shown beside the text
    picture = widget.kernel_picture
    assert picture.canvas.isVisible() and picture.canvas.width() <= 120
    np.testing.assert_allclose(picture.axes.images[0].get_array(), fit.kernel.sampled(fit.truncate))
    # the output layers use the rotated, shifted kernel: the residual is tiny
    fitted, residual = viewer.layers["tgt fit"], viewer.layers["tgt residual"]
    np.testing.assert_allclose(fitted.data, truth.apply(ref), atol=1e-3 * np.ptp(ref))
    assert np.abs(residual.data).max() < 1e-3 * np.ptp(tgt)
    assert tuple(residual.scale) == (0.2, 0.2)
    assert residual.metadata["blurfit"]["angle"] == pytest.approx(fit.angle)
    saved = json.loads(widget.result_json())
    assert saved["shift_world"] == pytest.approx([0.08, -0.12], abs=1e-3)
    assert saved["principal_sigmas_world"] == pytest.approx([0.5, 0.24], rel=1e-3)
    # a per-frame result has no single kernel: the picture goes
    viewer.add_image(np.stack([ref, ref]), name="r2")
    viewer.add_image(np.stack([tgt, tgt]), name="t2")
    widget.reference.value, widget.target.value = viewer.layers["r2"], viewer.layers["t2"]
    widget.mode.value = "per frame"
    run(widget, qtbot, timeout=120_000)
    assert widget.result_text.isVisible() and not picture.canvas.isVisible()


def test_per_frame_mode_fits_each_frames_shift(make_napari_viewer, qtbot, camera):
    viewer = make_napari_viewer()
    ref = np.stack([camera[i * 40 : i * 40 + 96, 60:156] for i in range(3)])
    shifts = [(0.3, -0.2), (0.6, -0.4), (0.9, -0.6)]
    tgt = np.stack([GaussianKernel.from_sigma((1.5, 1.5), shift=s).apply(f) for f, s in zip(ref, shifts)])
    kw = dict(scale=(1.0, 0.5, 0.5), units=("s", "um", "um"))
    viewer.add_image(ref, name="r", **kw)
    viewer.add_image(tgt, name="t", **kw)
    widget = widget_for(viewer, "r", "t", mode="per frame", kernel=KernelShape.PER_AXIS, fit_shift=True)
    run(widget, qtbot, timeout=120_000)
    frames = widget.last_result.frames
    assert all(f.shift_fitted for f in frames)
    np.testing.assert_allclose([f.shift for f in frames], shifts, atol=2e-3)
    np.testing.assert_allclose([f.sigma for f in frames], 1.5, rtol=2e-3)
    text = shown(widget)
    assert ("Shift per frame: y 0.3 to 0.9 px = 0.15 to 0.45 µm; "
            "x -0.6 to -0.2 px = -0.3 to -0.1 µm.") in text  # axes named as the CLI names them


def test_kernel_view_of_identity_3d_and_shifted_kernels():
    from types import SimpleNamespace

    from napari_blurfit._plots import kernel_view

    assert kernel_view(SimpleNamespace(covariance=np.diag([0.0, 4.0]))) is None  # sigma 0: identity
    kernel = GaussianKernel(np.array([[4.0, 1.0, 0.5], [1.0, 2.0, 0.3], [0.5, 0.3, 1.0]]), (0.6, 0.2, -0.4))
    fit = SimpleNamespace(covariance=kernel.covariance, kernel=kernel, truncate=4.0)
    image, centre, cov, radius = kernel_view(fit)
    sampled = kernel.sampled(4.0)
    np.testing.assert_array_equal(image, sampled[sampled.shape[0] // 2])  # the central plane
    precision = np.linalg.inv(kernel.covariance)  # the plane's section: its precision block
    np.testing.assert_allclose(np.linalg.inv(cov), precision[1:, 1:])
    mean_rest = np.linalg.solve(precision[1:, 1:], precision[1:, 1:] @ kernel.shift[1:]
                                + precision[1:, :1] @ kernel.shift[:1])
    np.testing.assert_allclose(centre, mean_rest[::-1])  # (x, y)
    assert 1.5 <= radius <= (max(image.shape) - 1) / 2 + 0.5


# --- issue 23: errors clear everything, "auto" bounds, unbroken errors, z/y/x, the colourbar --------
def _result_widgets_cleared(widget):
    """Every widget that showed a result is hidden and empty; nothing of the old result is kept."""
    assert widget.last_result is None
    assert not widget.result_text.isVisible() and widget.result_text.text() == ""
    assert not widget.plots.tabs.isVisible() and widget.plots.colorbar is None
    for plot in (widget.plots.main, widget.plots.transfer):  # the figures are emptied, not only hidden
        assert all(not ax.lines and not ax.patches and not ax.images for ax in plot.figure.axes)
        assert len(plot.figure.axes) == 1
    assert not widget.kernel_picture.canvas.isVisible() and not widget.kernel_picture.figure.axes
    assert not widget.copy_button.native.isVisible()


def test_a_shape_mismatch_after_a_blur_map_clears_every_result(make_napari_viewer, qtbot, cell):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(cell, name="ref")
    viewer.add_image(ndimage.gaussian_filter(cell, 2.0), name="tgt")
    widget = widget_for(viewer, "ref", "tgt", mode="blur map", tile=64)
    viewer.window.add_dock_widget(widget, name="blur")
    run(widget, qtbot)
    assert widget.result_text.isVisible() and "Blur map: " in shown(widget)
    assert widget.plots.tabs.isVisible() and widget.plots.colorbar is not None
    viewer.add_image(np.stack([cell, cell]), name="smaller")  # 3D beside 2D
    widget.target.value = viewer.layers["smaller"]  # an error before Fit: the old map's numbers go
    assert "differ in shape" in widget.status.text() and widget.status.isVisible()
    assert not widget.fit_button.enabled
    _result_widgets_cleared(widget)
    widget.target.value = viewer.layers["tgt"]  # a fit, then a failed fit: cleared as well
    widget.mode.value = "whole image/volume"
    run(widget, qtbot)
    assert widget.kernel_picture.canvas.isVisible() and widget.plots.tabs.isVisible()
    viewer.add_image(np.full(cell.shape, 3.0), name="flat")
    widget.target.value = viewer.layers["flat"]
    run(widget, qtbot)
    assert widget.status.text().startswith("Fit failed: target is constant")
    _result_widgets_cleared(widget)


def test_automatic_sigma_bounds_read_auto(viewer_pair):
    widget = BlurFitWidget(viewer_pair)
    for spin in (widget.sigma_min, widget.sigma_max):
        assert spin.value == 0.0
        assert spin.native.specialValueText() == "auto" and spin.native.text() == "auto"
        assert "auto" in spin.tooltip
    assert widget.options()["sigma_bounds"] == (0.0, None)  # the core's own default
    widget.sigma_min.value, widget.sigma_max.value = 0.5, 12.0
    assert (widget.sigma_min.native.text(), widget.sigma_max.native.text()) == ("0.50", "12.00")
    assert widget.options()["sigma_bounds"] == (0.5, 12.0)
    widget.sigma_max.value = 0.0
    assert widget.sigma_max.native.text() == "auto" and widget.options()["sigma_bounds"] == (0.5, None)


def _laid_out_lines(label, width: int) -> list[str]:
    """The lines Qt breaks ``label``'s text into at ``width`` px (its font, word wrap)."""
    from qtpy.QtGui import QTextLayout, QTextOption

    option = QTextOption()
    option.setWrapMode(QTextOption.WrapMode.WordWrap)
    lines = []
    for paragraph in label.text().split("\n"):
        layout = QTextLayout(paragraph, label.font())
        layout.setTextOption(option)
        layout.beginLayout()
        line = layout.createLine()
        while line.isValid():
            line.setLineWidth(width)
            lines.append(paragraph[line.textStart() : line.textStart() + line.textLength()])
            line = layout.createLine()
        layout.endLayout()
    return lines


def test_numbers_and_their_errors_never_split_across_lines(make_napari_viewer, qtbot, rotated_pair):
    from napari_blurfit._report import describe
    from napari_blurfit.layers import LayerFit

    _, widget, dock = docked_in_um(make_napari_viewer, rotated_pair, kernel=KernelShape.PER_AXIS,
                                   fit_shift=True)
    run(widget, qtbot, timeout=120_000)
    qtbot.wait(50)
    assert 340 <= dock.width() <= 430
    width = widget.result_text.contentsRect().width()
    assert 150 <= width <= 300  # beside the kernel picture, in a dock of the default width
    texts = [widget.result_text.text()]
    world = dict(units=("micrometer",) * 2, pixel_size=(0.2, 0.2))
    texts += [describe(LayerFit(fit=core_fits()[case], **world)) for case in ("rotated", "shifted")]
    for text in texts:
        assert "(±\u00a0" in text  # the error is joined to its number by no-break spaces
        widget.result_text.setText(text)
        for w in (width, 200, 160):
            lines = _laid_out_lines(widget.result_text, w)
            assert len(lines) > len(text.splitlines())  # the text does wrap here
            assert not [x for x in lines if x.lstrip().startswith(("(±", "±"))], lines


def test_axes_are_named_z_y_x(make_napari_viewer, qtbot, volume):
    viewer = make_napari_viewer()
    viewer.add_image(volume, name="vol")
    viewer.add_image(ndimage.gaussian_filter(volume, (1.0, 1.5, 2.0)), name="vol blurred")
    widget = widget_for(viewer, "vol", "vol blurred", kernel=KernelShape.PER_AXIS)
    run(widget, qtbot, timeout=120_000)
    text = shown(widget)
    assert text.startswith("Blur sigma per axis: z: 1 px (± ") and "; y: 1.5 px (± " in text
    assert "; x: 2 px (± " in text and "axis" not in text.replace("per axis", "")
    legend = widget.plots.main.axes.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["z", "y", "x"]


def test_blur_map_colourbar_sits_beside_the_canvas_in_theme_colours(make_napari_viewer, qtbot, cell):
    from matplotlib.colors import to_hex
    from napari.utils.theme import get_theme

    viewer = make_napari_viewer(show=True)
    viewer.add_image(cell, name="ref")
    ramp = np.concatenate([ndimage.gaussian_filter(cell, s)[:, 64 * i : 64 * i + 64]
                           for i, s in enumerate((1.0, 2.0, 3.0, 4.0))], axis=1)
    viewer.add_image(ramp, name="tgt")
    widget = widget_for(viewer, "ref", "tgt", mode="blur map", tile=64)
    viewer.window.add_dock_widget(widget, name="blur")
    run(widget, qtbot)
    qtbot.wait(50)
    layer = viewer.layers["tgt blur map"]
    assert not layer.colorbar.visible  # nothing over the image
    bar, canvas = widget.plots.colorbar, widget.plots.main.canvas
    assert bar is not None and bar.ax.figure is widget.plots.main.figure
    assert widget.native.isAncestorOf(canvas) and canvas.isVisible()
    assert widget.plots.tabs.currentWidget() is canvas
    napari_canvas = viewer.window._qt_viewer.canvas.native
    ours = canvas.rect().translated(canvas.mapToGlobal(canvas.rect().topLeft()))
    theirs = napari_canvas.rect().translated(napari_canvas.mapToGlobal(napari_canvas.rect().topLeft()))
    assert not ours.intersects(theirs)  # beside the canvas, not over it
    canvas.draw()
    labels = [t for t in bar.ax.xaxis.get_ticklabels() if t.get_visible() and t.get_text()]
    assert len(labels) >= 3  # readable: more than the two ends
    theme = get_theme(viewer.theme)
    assert {to_hex(t.get_color()) for t in labels} == {theme.text.as_hex()}
    assert bar.norm.vmin == pytest.approx(layer.contrast_limits[0])
    assert bar.norm.vmax == pytest.approx(layer.contrast_limits[1])
    np.testing.assert_allclose(bar.cmap(1.0), layer.colormap.map([1.0])[0], atol=1 / 255)
    layer.contrast_limits = (1.5, 3.5)  # the user changes the map's colours: the colourbar follows
    qtbot.waitUntil(lambda: widget.plots.colorbar.norm.vmax == pytest.approx(3.5), timeout=5_000)
    assert widget.plots.colorbar.norm.vmin == pytest.approx(1.5)


def _frames_that_disagree(make_napari_viewer, camera):
    """A viewer with "r" (three camera crops) and "t" (them blurred with sigma 1, 1.5 and 2.2)."""
    viewer = make_napari_viewer()
    ref = np.stack([camera[i * 40 : i * 40 + 96, 60:156] for i in range(3)])
    viewer.add_image(ref, name="r")
    viewer.add_image(np.stack([ndimage.gaussian_filter(f, s) for f, s in zip(ref, (1.0, 1.5, 2.2))]),
                     name="t")
    return viewer, ref


def test_per_frame_mode_says_when_frames_disagree(make_napari_viewer, qtbot, camera):
    from napari_blurfit._spread import joint_spread

    viewer, ref = _frames_that_disagree(make_napari_viewer, camera)
    widget = widget_for(viewer, "r", "t", mode="per frame")
    run(widget, qtbot)
    frames = widget.last_result.frames
    sigmas = np.array([f.sigma for f in frames])
    found = joint_spread(sigmas, [f.sigma_stderr for f in frames], np.median(sigmas, axis=0), 0,
                         ["frame 0", "frame 1", "frame 2"], items="frames").finding
    assert found is not None and found.code == "joint_spread"
    lines = shown(widget).splitlines()
    assert lines[1].startswith("! Frames disagree: their sigmas run from 1 to 2.2 px (spread 0.6 px, ")
    assert "of the median 1.5 px" in lines[1]
    same = np.stack([ndimage.gaussian_filter(f, 1.5) for f in ref])  # frames that agree: no word
    viewer.layers["t"].data = same
    run(widget, qtbot)
    assert "disagree" not in shown(widget)


def _with_findings(fit, *findings):
    import dataclasses

    return dataclasses.replace(fit, findings=tuple(fit.findings) + findings, notes=())


def test_joint_spread_and_channels_findings_are_shown_first_in_the_widgets_words():
    from napari_blurfit import Finding
    from napari_blurfit._report import describe
    from napari_blurfit.layers import LayerFit

    fit = core_fits()["brightness"]
    spread = Finding("joint_spread", {}, {"sigma_range": (1.0, 2.2)},
                     "one sigma does not describe these frames: their own sigmas run from 1 to 2.2 px")
    channels = Finding("channels", {"spatial_axes": (-2, -1)}, {"planes": 3},
                       "the first axis has 3 planes and looks like channels, not depth: "
                       "pass spatial_axes=(-2, -1)")
    lines = describe(LayerFit(fit=_with_findings(fit, spread, channels),
                              hint="'t' looks like a time series or channels")).splitlines()
    assert lines[0].startswith("Blur sigma: ")
    assert lines[1] == "! one sigma does not describe these frames: their own sigmas run from 1 to 2.2 px"
    assert lines[2] == ("! the first axis has 3 planes and looks like channels, not depth: choose mode "
                        '"per frame" or "frames jointly", or split the channels (right-click the layer '
                        "> Split Stack)")
    assert not any("time series" in line for line in lines)  # one note per cause
    assert not API_WORDS.search("\n".join(lines))


def test_blur_map_text_gives_its_findings_and_the_tiles_left_out(make_napari_viewer, qtbot, cell):
    import dataclasses

    from napari_blurfit import Finding
    from napari_blurfit._report import describe

    viewer = make_napari_viewer()
    half_flat = cell.copy()
    half_flat[:, 128:] = 40.0  # tiles wholly in the flat half cannot be measured
    viewer.add_image(half_flat, name="ref")
    viewer.add_image(ndimage.gaussian_filter(half_flat, 2.0), name="tgt")
    widget = widget_for(viewer, "ref", "tgt", mode="blur map", tile=64)
    run(widget, qtbot)
    reason = widget.last_result.blur_map.reason
    flat = int(np.count_nonzero(reason == "flat"))
    assert flat and f"{flat} of {reason.size} tiles left out (shown empty): {flat} flat." in shown(widget)
    bm = widget.last_result.blur_map  # map-level findings (the core's BlurMap.findings), in our words
    assert [f.code for f in bm.findings] == ["unmeasured_tiles"]
    brightness = Finding("brightness", {"gain_offset": True}, {"loss_ratio": 0.1},
                         "the brightness differs between the images: consider gain_offset=True")
    mapped = dataclasses.replace(bm, findings=(brightness,) + bm.findings)
    text = describe(dataclasses.replace(widget.last_result, blur_map=mapped))
    assert text.splitlines()[1] == ('Note: the brightness differs between the images: tick "fit gain '
                                    'and offset"')
    assert text.count("tiles left out") == 1  # the core's count, once, in the dock's words


def test_frames_jointly_says_when_frames_disagree(make_napari_viewer, qtbot, camera):
    viewer, _ = _frames_that_disagree(make_napari_viewer, camera)
    widget = widget_for(viewer, "r", "t", mode="frames jointly")
    run(widget, qtbot)
    fit = widget.last_result.fit
    assert any(f.code == "joint_spread" for f in fit.findings)
    lines = shown(widget).splitlines()
    assert lines[0] == f"Blur sigma: {fit.sigma[0]:.3g} px (± {fit.sigma_stderr[0]:.2g})"
    assert lines[1].startswith("! one sigma does not describe these frames")
    assert fit.sigma_stderr[0] > 0.1  # the error bar takes in the frames' spread


def test_three_channels_read_as_depth_get_the_widgets_advice(make_napari_viewer, qtbot, camera):
    viewer = make_napari_viewer()
    channels = np.stack([camera[:128, :128], camera[128:, :128], camera[:128, 128:]])
    viewer.add_image(channels, name="rgb planes")
    viewer.add_image(ndimage.gaussian_filter(channels, (0, 2, 2)), name="rgb planes blurred")
    widget = widget_for(viewer, "rgb planes", "rgb planes blurred")
    run(widget, qtbot)
    assert any(f.code == "channels" for f in widget.last_result.fit.findings)
    text = shown(widget)
    assert '! ' in text and 'choose mode "per frame" or "frames jointly"' in text
    assert "Split Stack" in text and not API_WORDS.search(text)


def test_reference_noise_control_shows_the_estimate(make_napari_viewer, camera, qtbot):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(camera + rng.normal(0, 12, camera.shape), name="ref")
    viewer.add_image(ndimage.gaussian_filter(camera, 1.0) + rng.normal(0, 2.5, camera.shape), name="tgt")
    widget = widget_for(viewer, "ref", "tgt")
    assert widget.options()["reference_noise"] == "auto"
    run(widget, qtbot)
    assert re.search(r"reference is noisy: correct \(estimate 1[12](\.\d+)?\)", widget.reference_noise.text)
    assert widget.last_result.fit.sigma[0] == pytest.approx(1.0, rel=0.03)
    widget.reference_noise.value = False
    assert widget.options()["reference_noise"] == 0


def test_kernel_reach_lets_a_wide_axial_kernel_fit_a_thin_volume(make_napari_viewer, qtbot):
    """A shifted fit needs the whole kernel inside the volume: the error names "kernel reach",
    and a shorter reach (the core's ``truncate``) fits it."""
    from volumes import textured

    volume = textured((12, 64, 64), seed=2)
    moved = GaussianKernel.from_sigma((2.0, 1.0, 1.0), shift=(0, 0.5, 0)).apply(volume, truncate=2.5)
    viewer = make_napari_viewer()
    viewer.add_image(volume, name="v")
    viewer.add_image(moved, name="m")
    widget = widget_for(viewer, "v", "m", kernel=KernelShape.PER_AXIS, fit_shift=True)
    assert widget.truncate.value == 4.0 and widget.options()["truncate"] == 4.0
    widget.truncate.value = 5.0
    run(widget, qtbot)
    assert widget.last_result is None
    assert '"kernel reach" 5' in widget.status.text() and "does not fit the image" in widget.status.text()
    widget.truncate.value = 2.5
    run(widget, qtbot)
    fit = widget.last_result.fit
    assert fit.truncate == 2.5
    np.testing.assert_allclose(fit.sigma, (2.0, 1.0, 1.0), rtol=0.01)
    np.testing.assert_allclose(fit.shift, (0, 0.5, 0), atol=0.02)
