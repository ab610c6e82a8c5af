"""What the default fit's own checks cost: the shift/rotation probe, the per-axis check and the
adequacy (r2_linear, transfer curve), against the default L2 fit that runs them.

Targets (issues "whole Gaussian" and "is a Gaussian the right model?"): the probe and the
per-axis check at most ~20% of a default L2 fit; the adequacy at most 10%. Each check is timed
on its own, interleaved with whole fits, medians of several runs; the ratio is the check's
median over the median of (the whole fit minus all checks).

Run: ``python benchmarks/bench_checks.py [--size 4096] [--repeats 5]``
"""

import argparse
import platform
import time

import numpy as np
from scipy import ndimage
from skimage import data

from napari_blurfit import _engine, _validate, fit_blur
from napari_blurfit._adequacy import assess
from napari_blurfit._probe import probe_model
from napari_blurfit._spectral import l2_grid


def texture(size: int) -> np.ndarray:
    tile = data.camera().astype(np.float32)
    reps = -(-size // tile.shape[0])
    return np.tile(tile, (reps, reps))[:size, :size].copy()


def timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    a = texture(args.size)
    rng = np.random.default_rng(0)
    b = (ndimage.gaussian_filter(a, 2.5) + rng.normal(0, 0.5, a.shape)).astype(np.float32)
    stats = _engine.compute_stats(_validate.prepare_pair(a, b))[0]
    sigma = np.full(2, 2.5)
    factors = np.exp(np.linspace(-0.7, 0.7, 11))
    checks = {
        "probe (shift, rotation)": lambda: probe_model(a, b, ndim=2, start_sigma=sigma),
        "per-axis check": lambda: l2_grid(stats, [sigma[0] * factors] * 2, joint=False,
                                          gain_offset=False),
        "adequacy (r2_linear)": lambda: assess(stats, sigma, 1.0, truncate=4.0),
    }
    fit_blur(a, b)  # warm-up
    times = {name: [] for name in ["fit_blur default", *checks]}
    for _ in range(args.repeats):
        times["fit_blur default"].append(timed(lambda: fit_blur(a, b)))
        for name, check in checks.items():
            times[name].append(timed(check))
    med = {k: float(np.median(v)) for k, v in times.items()}
    rest = med["fit_blur default"] - sum(med[k] for k in checks)
    print(f"machine: {platform.machine()}, python {platform.python_version()}, numpy {np.__version__}")
    print(f"== {args.size}x{args.size} float32, sigma 2.5, noise sd 0.5, medians of {args.repeats} ==")
    print(f"{'fit_blur default (with all checks)':36s} {med['fit_blur default']:7.3f} s")
    print(f"{'  of which the fit itself':36s} {rest:7.3f} s")
    for name in checks:
        print(f"{'  ' + name:36s} {med[name]:7.3f} s   RATIO {med[name] / rest:5.2f} of the fit")
    shape_checks = med["probe (shift, rotation)"] + med["per-axis check"]
    print(f"RATIO shift/shape checks / fit : {shape_checks / rest:5.2f}  (target <= 0.20)")
    print(f"RATIO adequacy / fit           : {med['adequacy (r2_linear)'] / rest:5.2f}  (target <= 0.10)")


if __name__ == "__main__":
    main()
