"""End to end in a shown napari viewer: the plugin is docked through its manifest, as a user does."""

import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer
from scipy import ndimage

from napari_blurfit.layers import KernelShape
from napari_blurfit.sample_data import TRUE_GAIN, TRUE_OFFSET, TRUE_SIGMA

pytestmark = pytest.mark.gui


def test_manifest_widget_sample_fit_cancel_screenshot(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-blurfit", "cell_pair")
    assert [layer.name for layer in viewer.layers] == ["cell reference", "cell target"]
    _, widget = viewer.window.add_plugin_dock_widget("napari-blurfit", "Fit Gaussian blur")
    assert widget.reference.value.name == "cell reference"
    assert widget.target.value.name == "cell target"
    widget.gain_offset.value = True
    widget.kernel.value = KernelShape.PER_AXIS

    widget.start_fit()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    fit = widget.last_result.fit
    np.testing.assert_allclose(fit.sigma, (TRUE_SIGMA,) * 2, rtol=0.02)
    assert fit.gain == pytest.approx(TRUE_GAIN, rel=0.01)
    assert fit.offset == pytest.approx(TRUE_OFFSET, abs=0.5)
    res = viewer.layers["cell target residual"]
    assert np.abs(res.data).mean() < 3.0  # noise sd 2 -> mean |r| ~ 1.6
    assert tuple(viewer.layers["cell target fit"].scale) == tuple(viewer.layers["cell target"].scale)
    assert " µm (± " in widget.result_text.text()

    # a second, large fit: the GUI thread keeps ticking while it runs, and Cancel leaves no layer
    rng = np.random.default_rng(0)
    big = ndimage.zoom(rng.random((512, 512)).astype(np.float32), 8)  # 4096 x 4096
    viewer.add_image(big, name="big")
    viewer.add_image(ndimage.gaussian_filter(big, 4.0), name="big blurred")
    widget.reference.value = viewer.layers["big"]
    widget.target.value = viewer.layers["big blurred"]
    widget.loss.value = "l1"
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(20)
    widget.start_fit()
    qtbot.waitUntil(lambda: "filter pass" in widget.status.text(), timeout=120_000)  # mid-fit
    widget.cancel()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    timer.stop()
    gaps = np.diff(ticks)
    print(f"GUI ticks during the 4096^2 fit: {len(ticks)}, longest gap {gaps.max():.3f} s")
    assert len(ticks) > 10 and gaps.max() < 2.0
    assert "big fit" not in [layer.name for layer in viewer.layers]
    assert widget.status.text().startswith("Fit stopped")

    path = tmp_path / "window.png"
    viewer.window._qt_window.grab().save(str(path))
    shot = viewer.screenshot(canvas_only=True)
    assert path.stat().st_size > 10_000
    assert shot[..., :3].std() > 5  # the canvas really rendered something
