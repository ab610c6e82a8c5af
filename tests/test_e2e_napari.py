"""End to end in a shown napari viewer: the plugin is docked through its manifest, as a user does."""

import threading

import numpy as np
import pytest
from qtpy.QtCore import QTimer
from scipy import ndimage

from napari_blurfit import _widget
from napari_blurfit.layers import KernelShape
from napari_blurfit.sample_data import TRUE_GAIN, TRUE_OFFSET, TRUE_SIGMA

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_manifest_widget_sample_fit_cancel_screenshot(make_napari_viewer, qtbot, tmp_path, monkeypatch):
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
    assert " µm (± " in widget.result_text.text().replace("\u00a0", " ")  # no-break spaces join ±

    # a second, large fit: it runs on a worker thread while the GUI thread's event loop keeps
    # turning, and Cancel leaves no layer. Thread ids and tick counts only, no wall-clock limits:
    # at its first step the fit waits for three QTimer ticks, which a blocked event loop never gives.
    rng = np.random.default_rng(0)
    big = ndimage.zoom(rng.random((512, 512)).astype(np.float32), 8)  # 4096 x 4096
    viewer.add_image(big, name="big")
    viewer.add_image(ndimage.gaussian_filter(big, 4.0), name="big blurred")
    widget.reference.value = viewer.layers["big"]
    widget.target.value = viewer.layers["big blurred"]
    widget.loss.value = "l1"
    gui_thread = threading.get_ident()
    ticks, fit_threads, ticks_while_fitting = [], [], []
    ticked = threading.Event()

    def tick():
        ticks.append(threading.get_ident())
        ticked.set()

    def run_layer_fit(*args, callback, **kwargs):
        def step(text):
            fit_threads.append(threading.get_ident())
            if len(fit_threads) == 1:  # the fit is running: the GUI must tick meanwhile
                start = len(ticks)
                while len(ticks) < start + 3 and ticked.wait(60):  # 60 s: a deadlock guard only
                    ticked.clear()
                ticks_while_fitting.append(len(ticks) - start)
            callback(text)

        return real_run_layer_fit(*args, callback=step, **kwargs)

    real_run_layer_fit = _widget.run_layer_fit
    monkeypatch.setattr(_widget, "run_layer_fit", run_layer_fit)
    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(20)
    widget.start_fit()
    qtbot.waitUntil(lambda: "filter pass" in widget.status.text(), timeout=120_000)  # mid-fit
    widget.cancel()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    timer.stop()
    print(f"GUI ticks during the 4096^2 fit: {len(ticks)}; fit steps seen: {len(fit_threads)}")
    assert fit_threads and gui_thread not in fit_threads  # the fit ran off the GUI thread
    assert set(ticks) == {gui_thread}
    assert ticks_while_fitting[0] >= 3  # the event loop turned while the fit was running
    assert "big fit" not in [layer.name for layer in viewer.layers]
    assert widget.status.text().startswith("Fit stopped")

    path = tmp_path / "window.png"
    viewer.window._qt_window.grab().save(str(path))
    shot = viewer.screenshot(canvas_only=True)
    assert path.stat().st_size > 10_000
    assert shot[..., :3].std() > 5  # the canvas really rendered something
