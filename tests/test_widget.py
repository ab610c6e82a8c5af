"""The dock widget in a real napari viewer (under Xvfb): pickers, worker, cancel, outputs, errors."""

import time

import numpy as np
import pytest
from scipy import ndimage

from napari_blurfit import fit_blur
from napari_blurfit._widget import BlurFitWidget
from napari_blurfit.layers import fit_layers

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer_pair(make_napari_viewer, cell):
    viewer = make_napari_viewer()
    viewer.add_image(cell, name="ref", scale=(0.2, 0.2))
    viewer.add_image(1.5 * ndimage.gaussian_filter(cell, 2.0) + 3, name="tgt", scale=(0.2, 0.2))
    return viewer


def widget_for(viewer, reference, target, **options):
    """A widget on ``viewer`` with the two named layers picked and options set."""
    widget = BlurFitWidget(viewer)
    widget.reference.value = viewer.layers[reference]
    widget.target.value = viewer.layers[target]
    for name, value in options.items():
        getattr(widget, name).value = value
    return widget


def run(widget, qtbot, timeout=60_000):
    worker = widget.start_fit()
    assert worker is not None
    qtbot.waitUntil(lambda: widget._worker is None, timeout=timeout)
    return worker


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
    viewer.add_image(np.ones((5, 5)), name="small")
    widget.reference.value = viewer.layers["small"]
    assert not widget.fit_button.enabled
    assert "differ in shape" in widget.status.value


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
    assert "sigma[0] = 2 +/-" in widget.result_text.value
    assert "= 0.4 " in widget.result_text.value  # 2 px * 0.2 world units
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
    assert widget.status.value == ("fit failed: ValueError: target is constant: a blur cannot be "
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
    widget = widget_for(viewer, "big", "big blurred", loss="l1", per_axis=True, gain_offset=True)
    widget.start_fit()
    qtbot.waitUntil(lambda: "filter pass" in widget.status.value, timeout=60_000)
    return viewer, widget


def test_cancel_stops_promptly_and_adds_nothing(running_big_fit, qtbot):
    viewer, widget = running_big_fit
    t0 = time.perf_counter()
    widget.cancel()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    print(f"cancel took {time.perf_counter() - t0:.2f} s")
    assert widget.status.value.startswith("fit stopped: cancelled")
    assert [layer.name for layer in viewer.layers] == ["big", "big blurred"]


def test_removing_an_input_layer_ends_the_fit(running_big_fit, qtbot):
    viewer, widget = running_big_fit
    viewer.layers.remove("big")
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    assert "layer 'big' was removed" in widget.status.value
    assert [layer.name for layer in viewer.layers] == ["big blurred"]


def test_console_fit_layers_matches_widget(viewer_pair, qtbot):
    viewer = viewer_pair
    widget = widget_for(viewer, "ref", "tgt", per_axis=True, gain_offset=True)
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
    line = widget._plot.axes.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), [1, 2, 3, 4], rtol=1e-3)
    assert widget._plot.axes.get_xlabel() == "frame"
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
    assert layer.colorbar.visible
    assert f"sigma {np.nanmin(bm.sigma):.3g} to {np.nanmax(bm.sigma):.3g} px" in widget.result_text.value
    assert widget._plot.axes.get_xlabel() == "tile sigma (px)"
    np.testing.assert_array_equal(viewer.layers["tgt"].data, target)  # inputs untouched
