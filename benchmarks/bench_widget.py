"""The dock widget's fit time against the same `fit_blur` call and one gaussian_filter pass.

Run (needs a display; on a headless machine under Xvfb):
    xvfb-run -a .venv/bin/python benchmarks/bench_widget.py [--size 4096] [--repeats 3]

A real napari viewer with the widget docked, the `bench_matrix.py` pair (scikit-image's ``camera``
zoomed to ``size``^2, float32, ``target = 0.8 * G(A) + 0.05 + noise``; a rotated, shifted blur for
the shift row). Each widget time runs from ``start_fit()`` until the fitted-blur and residual
layers are in the viewer (the worker thread fits and makes the two images, the GUI thread adds
the layers; the wait idles in Qt's event loop as napari's does); the direct
`fit_blur` call with the same options and one filter pass are timed right before it, in the same
run. Medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import napari
from bench_matrix import make_case, texture_2d
from qtpy.QtCore import QEventLoop
from qtpy.QtWidgets import QApplication
from scipy import ndimage

from napari_blurfit import fit_blur
from napari_blurfit._gaussian import GaussianKernel
from napari_blurfit.layers import KernelShape

ROWS = [  # label, widget options, fit_blur options, use the rotated/shifted target
    ("L1 + g/o, one sigma", dict(loss="l1", kernel=KernelShape.ROUND, gain_offset=True),
     dict(loss="l1", gain_offset=True), False),
    ("L1 + g/o, per axis", dict(loss="l1", kernel=KernelShape.PER_AXIS, gain_offset=True),
     dict(loss="l1", per_axis=True, gain_offset=True), False),
    ("L1 + g/o, per axis + shift", dict(loss="l1", kernel=KernelShape.PER_AXIS, gain_offset=True,
                                        fit_shift=True),
     dict(loss="l1", per_axis=True, gain_offset=True, shift=True), True),
]


def widget_seconds(viewer, widget, options: dict, target_name: str) -> float:
    widget.target.value = viewer.layers[target_name]
    for name, value in options.items():
        getattr(widget, name).value = value
    for layer in [layer for layer in viewer.layers if layer.name not in ("reference", "aligned", "whole")]:
        viewer.layers.remove(layer)  # a fresh fit adds its layers again
    t0 = time.perf_counter()
    widget.start_fit()
    while widget._worker is not None:  # idle until Qt has events, as napari's own event loop does
        QApplication.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)
    seconds = time.perf_counter() - t0
    if widget.last_result is None:
        raise RuntimeError(f"the widget's fit did not finish: {widget.status.text()}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    reference = texture_2d(args.size)
    case = make_case("widget", reference, (2.5, 3.0), GaussianKernel.from_basicsr(3.0, 1.5, 0.5, (0.6, -0.8)),
                     1, 0)
    viewer = napari.Viewer(show=True)
    viewer.add_image(reference, name="reference")
    viewer.add_image(case.aligned, name="aligned")
    viewer.add_image(case.whole, name="whole")
    _, widget = viewer.window.add_plugin_dock_widget("napari-blurfit", "Fit Gaussian blur")
    widget.reference.value = viewer.layers["reference"]
    print(f"{args.size}^2 float32, medians of {args.repeats}")
    print(f"{'configuration':30s} {'filter':>8s} {'fit_blur':>9s} {'widget':>8s} {'widget/filter':>14s} "
          f"{'widget/fit_blur':>16s}")
    for label, widget_options, options, whole in ROWS:
        target = case.whole if whole else case.aligned
        passes, direct, gui = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ndimage.gaussian_filter(reference, case.sigma)
            passes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            fit_blur(reference, target, warn=False, **options)
            direct.append(time.perf_counter() - t0)
            gui.append(widget_seconds(viewer, widget, widget_options, "whole" if whole else "aligned"))
        f, d, g = (statistics.median(x) for x in (passes, direct, gui))
        print(f"{label:30s} {f:7.3f}s {d:8.3f}s {g:7.3f}s {g / f:13.2f}x {g / d:15.2f}x", flush=True)
    viewer.close()


if __name__ == "__main__":
    main()
