"""Speed and memory of every fit_blur configuration, as multiples of one gaussian_filter pass.

Run: .venv/bin/python benchmarks/bench_matrix.py [--quick] [--repeats N] [--no-whole | --whole-only]
[--no-2d] [--no-3d] [--whole-3d all|go|none]

The matrix is {l2, l1, huber} x {one sigma, per axis} x {gain_offset off, on}, plus the rows that
fit a shift (one sigma and per axis) or a full covariance, on a real-texture pair (scikit-image's
``camera`` in 2D, ``moon`` slices in 3D) with ``target = 0.8 * G(A) + 0.05 + noise``: the brightness
difference a network's output usually has. The axis-aligned rows blur with a per-axis Gaussian;
the shift/full-covariance rows with a rotated, shifted one (so those fits have work to do).

Every time is the median of ``--repeats`` runs divided by the median time of three
``scipy.ndimage.gaussian_filter`` passes over the same reference, timed in the same run right
before that row (the machine is shared: load drifts between rows). Peak memory
is tracemalloc's peak over one run (an extra untimed run; with ``--repeats 1`` the timed run
itself), minus what was allocated before it, divided by the bytes of the two inputs.
Default sizes: 4096^2 and 128x512x512 float32; ``--quick``: 1024^2 and 32x256x256.
``--whole-3d go`` keeps only the gain/offset shift/full-covariance rows in 3D (they are slow).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import tracemalloc
from typing import NamedTuple

import numpy as np
import scipy
from scipy import ndimage
from skimage import data

from napari_blurfit import fit_blur
from napari_blurfit._gaussian import GaussianKernel

LOSSES = ("l2", "l1", "huber")
NOISE = 0.01


class Config(NamedTuple):
    """One row of the matrix: the fit_blur options that differ."""

    loss: str
    per_axis: bool
    gain_offset: bool
    shift: bool = False
    full_covariance: bool = False

    @property
    def whole(self) -> bool:
        return self.shift or self.full_covariance

    @property
    def label(self) -> str:
        kind = ("full covariance" if self.full_covariance else
                "per axis" if self.per_axis else "one sigma")
        extra = " + shift" if self.shift else ""
        return f"{self.loss:5s} {kind + extra:22s} {'g/o' if self.gain_offset else '   '}"


class Row(NamedTuple):
    """A measured row."""

    config: Config
    seconds: float
    filter_seconds: float  # one gaussian_filter pass, timed right before this row
    ratio: float
    memory: float  # peak traced bytes / input bytes
    sigma: tuple[float, ...]
    loss: float


class Case(NamedTuple):
    """One benchmark pair and its yardstick."""

    name: str
    reference: np.ndarray
    aligned: np.ndarray  # target for the axis-aligned rows
    whole: np.ndarray  # target for the shift / full-covariance rows
    sigma: tuple[float, ...]  # of the yardstick filter pass


def texture_2d(size: int) -> np.ndarray:
    tile = data.camera().astype(np.float32) / 255.0
    big = ndimage.zoom(tile, size / tile.shape[0], order=1)[:size, :size]
    return np.ascontiguousarray(big, dtype=np.float32)


def texture_3d(shape) -> np.ndarray:
    moon = data.moon().astype(np.float32) / 255.0
    z, y, x = shape
    reps = (-(-y // moon.shape[0]), -(-x // moon.shape[1]))
    big = np.tile(moon, reps)
    return np.stack([np.roll(big, (13 * i, 7 * i), axis=(0, 1))[:y, :x] for i in range(z)])


def timed(fn, repeats: int):
    """Median wall time of ``repeats`` runs and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def peak_memory(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def make_case(name: str, reference: np.ndarray, sigma, kernel: GaussianKernel, repeats: int,
              seed: int) -> Case:
    rng = np.random.default_rng(seed)

    def brighten(blurred):
        noise = rng.normal(0, NOISE, reference.shape)
        return (0.8 * blurred + 0.05 + noise).astype(np.float32)

    aligned = brighten(ndimage.gaussian_filter(reference.astype(np.float64), sigma))
    whole = brighten(kernel.apply(reference))
    ndimage.gaussian_filter(reference, sigma)  # warm-up
    return Case(name, reference, aligned, whole, tuple(sigma))


def configs(whole: str) -> list[Config]:
    rows = [Config(loss, per_axis, go) for per_axis in (False, True) for go in (False, True)
            for loss in LOSSES]
    if whole == "go":
        rows += [Config(loss, False, True, shift=True) for loss in LOSSES]
        rows += [Config(loss, True, True, full_covariance=True) for loss in LOSSES]
    elif whole == "all":
        rows += [Config(loss, per_axis, go, shift=True) for per_axis in (False, True)
                 for go in (False, True) for loss in LOSSES]
        rows += [Config(loss, True, go, full_covariance=True) for go in (False, True)
                 for loss in LOSSES]
    return rows


def measure(case: Case, config: Config, repeats: int) -> Row:
    target = case.whole if config.whole else case.aligned
    # the machine is shared: the yardstick is timed next to each row, so a change of load
    # between rows does not skew the ratios
    t_filter, _ = timed(lambda: ndimage.gaussian_filter(case.reference, case.sigma), 3)

    def run():
        return fit_blur(case.reference, target, loss=config.loss, per_axis=config.per_axis,
                        gain_offset=config.gain_offset, shift=config.shift,
                        full_covariance=config.full_covariance, warn=False)

    if repeats == 1:  # one traced run gives both (tracemalloc costs little on numpy code)
        tracemalloc.start()
        try:
            seconds, fit = timed(run, 1)
            memory = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    else:
        seconds, fit = timed(run, repeats)
        memory = peak_memory(run)
    memory /= case.reference.nbytes + target.nbytes
    return Row(config, seconds, t_filter, seconds / t_filter, memory, fit.sigma, fit.loss)


def report(case: Case, rows: list[Row]) -> None:
    passes = [r.filter_seconds for r in rows]
    print(f"\n== {case.name}: one gaussian_filter pass {statistics.median(passes):.3f} s "
          f"(median; {min(passes):.3f}-{max(passes):.3f} s over the rows) ==")
    print(f"{'configuration':38s} {'time':>9s} {'filter':>7s} {'x filter':>9s} {'memory':>7s}   sigma")
    for row in rows:
        sigma = ", ".join(f"{s:.3f}" for s in row.sigma)
        print(f"{row.config.label:38s} {row.seconds:8.3f}s {row.filter_seconds:6.3f}s "
              f"{row.ratio:8.2f}x {row.memory:6.2f}x   ({sigma})", flush=True)
    plain = [r.ratio for r in rows if not r.config.full_covariance]
    rotated = [r.ratio for r in rows if r.config.full_covariance]
    print(f"worst ratio: axis-aligned/shift {max(plain):.2f}x (target <= 8, most <= 5)"
          + (f", full covariance {max(rotated):.2f}x (target <= 15)" if rotated else "")
          + f"; worst memory {max(r.memory for r in rows):.2f}x (target <= 6)")


def run_case(case: Case, whole: str, repeats: int, whole_only: bool = False) -> None:
    print(f"\n-- {case.name} --", flush=True)
    rows = []
    for config in configs(whole):
        if whole_only and not config.whole:
            continue
        try:
            rows.append(measure(case, config, repeats))
        except Exception as exc:  # another engine's work in progress: report it, go on
            print(f"   {config.label} failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        r = rows[-1]
        print(f"   {config.label} {r.seconds:8.3f}s {r.ratio:7.2f}x", flush=True)
    if rows:
        report(case, rows)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="1024^2 and 32x256x256")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-whole", action="store_true", help="skip the shift/full-covariance rows")
    p.add_argument("--whole-only", action="store_true", help="only the shift/full-covariance rows")
    p.add_argument("--no-3d", action="store_true")
    p.add_argument("--no-2d", action="store_true")
    p.add_argument("--whole-3d", choices=("all", "go", "none"), default="all")
    args = p.parse_args()
    n2 = 1024 if args.quick else 4096
    shape3 = (32, 256, 256) if args.quick else (128, 512, 512)
    print(f"machine: {platform.machine()}, python {platform.python_version()}, numpy "
          f"{np.__version__}, scipy {scipy.__version__}; medians of {args.repeats} run(s)")
    if not args.no_2d:
        ref = texture_2d(n2)
        kernel = GaussianKernel.from_basicsr(3.0, 1.5, 0.5, (0.6, -0.8))
        case = make_case(f"2D {n2}x{n2} float32, sigma (2.5, 3.0)", ref, (2.5, 3.0), kernel,
                         args.repeats, 0)
        run_case(case, "none" if args.no_whole else "all", args.repeats, args.whole_only)
        del case, ref
    if not args.no_3d:
        ref = texture_3d(shape3)
        cov = np.array([[2.0, 0.4, 0.0], [0.4, 3.0, -0.8], [0.0, -0.8, 1.5]])
        kernel = GaussianKernel(cov, (0.5, -0.4, 0.9))
        case = make_case(f"3D {'x'.join(map(str, shape3))} float32, sigma (1.2, 2.0, 3.0)", ref,
                         (1.2, 2.0, 3.0), kernel, args.repeats, 1)
        run_case(case, "none" if args.no_whole else args.whole_3d, args.repeats, args.whole_only)


if __name__ == "__main__":
    main()
