"""Benchmark: the fit across pixel grids (issue 24's "Fast"), in passes of one Gaussian filter.

A 4096^2 float32 reference of real texture (a mosaic of windows of scikit-image photographs),
blurred by the row's exact Gaussian (reflect borders, shifted where the row says), then sampled
onto the target's grid by the exact pixel-area mean (2x2 block average for the 2x rows; the
cumulative-sum integral of the piecewise-constant image for the others, independent of the
package's `_resample`), plus 0.2% noise. Each row prints the median time of ``fit_blur`` over
``--repeats`` runs, one `scipy.ndimage.gaussian_filter` pass over the reference with the row's
sigmas timed in the same loop (interleaved, median), their ratio against the issue's target
(5 passes; 8 with shift or full covariance), the accuracy (largest relative sigma error over
every direction, ``max |sqrt(eig(S^-1/2 C S^-1/2)) - 1|``, and the largest shift error in
reference px) and the peak traced memory over the two inputs' bytes (target 6x). One 3D row
(64x512x512 reference, 2x binned along every axis). ``--quick``: 1024^2 and 32x128x128, one run.

Run: .venv/bin/python benchmarks/bench_grids.py [--repeats 3] [--size 4096] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_whole_gaussian import peak_memory, timed  # noqa: E402
from volumes import _sources, textured  # noqa: E402

from napari_blurfit import Grid, fit_blur  # noqa: E402
from napari_blurfit._gaussian import GaussianKernel  # noqa: E402

NOISE = 0.002  # of the blurred image's range
PASSES, WHOLE_PASSES, MEMORY = 5.0, 8.0, 6.0  # the targets
SHIFT = (0.7, -1.3)
FULL = GaussianKernel.from_basicsr(3.0, 1.8, 0.6).covariance  # (x, y, theta): a rotated ellipse


class Row(NamedTuple):
    name: str
    covariance: np.ndarray  # the truth, reference px
    shift: tuple | None
    options: dict
    layout: str = "2x"  # "2x": 2x2 block mean; "um": 0.065 -> 0.108 um; "partial": a sub-region
    brighten: bool = False  # target = 0.8 * blurred + 0.05 (gain/offset rows)


ROWS = [
    Row("round", np.eye(2) * 3.0**2, None, {}),
    Row("per_axis", np.diag([3.0, 2.0]) ** 2, None, dict(per_axis=True)),
    Row("round gain_offset", np.eye(2) * 3.0**2, None, dict(gain_offset=True), brighten=True),
    Row("round shift", np.eye(2) * 3.0**2, SHIFT, dict(shift=True)),
    Row("per_axis shift", np.diag([3.0, 2.0]) ** 2, SHIFT, dict(per_axis=True, shift=True)),
    Row("full_covariance", FULL, None, dict(full_covariance=True)),
    Row("full_covariance shift", FULL, SHIFT, dict(full_covariance=True, shift=True)),
    Row("round loss l1", np.eye(2) * 3.0**2, None, dict(loss="l1")),
    Row("round loss huber", np.eye(2) * 3.0**2, None, dict(loss="huber")),
    Row("per_axis 0.065->0.108 um", np.diag([3.0, 2.0]) ** 2, None, dict(per_axis=True), layout="um"),
    Row("per_axis partial field", np.diag([3.0, 2.0]) ** 2, None, dict(per_axis=True), layout="partial"),
]
VOLUME_ROW = Row("3D per_axis 2x binned", np.diag([2.0, 3.0, 2.5]) ** 2, None, dict(per_axis=True))


def texture_2d(size: int, block: int = 512, seed: int = 0) -> np.ndarray:
    """Real texture without a period: a mosaic of ``block``^2 windows of scikit-image photographs.

    Each block is a random window of a random image (mirror-padded where the image is smaller),
    randomly flipped and transposed. A tiled image would be periodic, and the reference-noise
    estimate ("auto") cannot read its noise line there (see bench_noise.py).
    """
    rng = np.random.default_rng(seed)
    sources = [np.pad(s, [(0, max(0, block - n)) for n in s.shape], mode="symmetric") for s in _sources()]
    n = -(-size // block)
    rows = []
    for _ in range(n):
        row = []
        for _ in range(n):
            image = sources[rng.integers(len(sources))]
            y, x = (rng.integers(0, m - block + 1) for m in image.shape)
            window = image[y:y + block, x:x + block][:: rng.choice([-1, 1]), :: rng.choice([-1, 1])]
            row.append(window.T if rng.integers(2) else window)
        rows.append(row)
    return np.ascontiguousarray(np.block(rows)[:size, :size], dtype=np.float32)


def area_mean(image: np.ndarray, axis: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The mean of ``image`` (pixels as constant boxes) over ``[low, high]`` (px) along ``axis``."""
    moved = np.moveaxis(image, axis, -1)
    integral = np.concatenate([np.zeros(moved.shape[:-1] + (1,)), np.cumsum(moved, axis=-1)], axis=-1)
    edges = np.arange(moved.shape[-1] + 1) - 0.5
    flat = integral.reshape(-1, integral.shape[-1])
    at = np.stack([np.interp(np.r_[low, high], edges, line) for line in flat])
    out = (at[:, len(low):] - at[:, :len(low)]) / (high - low)
    return np.moveaxis(out.reshape(moved.shape[:-1] + (len(low),)), -1, axis)


def grids_for(layout: str, shape: tuple[int, ...]):
    """Reference and target grids and the target's footprints per axis (low, high in reference px)."""
    d = len(shape)
    if layout == "2x":
        target_shape = tuple(n // 2 for n in shape)
        return Grid((1.0,) * d), Grid((2.0,) * d, (0.5,) * d), target_shape
    if layout == "um":  # 0.065 -> 0.108 um, the target's first footprint at the reference's edge
        scale, ratio = 0.065, 0.108 / 0.065
        target_shape = tuple(int(np.floor(n / ratio)) for n in shape)
        origin = -0.5 * scale + 0.5 * 0.108
        return Grid((scale,) * d), Grid((0.108,) * d, (origin,) * d), target_shape
    # partial: a 2x target over a sub-region starting at a non-integer offset
    start = np.array([0.137, 0.213])[:d] * np.array(shape) + np.array([0.3, 0.7])[:d]
    target_shape = tuple(int(0.3 * n) for n in shape)
    return Grid((1.0,) * d), Grid((2.0,) * d, tuple(start + 1.0)), target_shape


def sample(blurred: np.ndarray, reference_grid: Grid, target_grid: Grid, target_shape) -> np.ndarray:
    """``blurred`` (on the reference grid) averaged over each target pixel's footprint."""
    out = blurred
    for axis, n in enumerate(target_shape):
        r_scale, r_origin = reference_grid.scale[axis], reference_grid.translate[axis]
        t_scale, t_origin = target_grid.scale[axis], target_grid.translate[axis]
        centres = (t_origin + np.arange(n) * t_scale - r_origin) / r_scale
        half = 0.5 * t_scale / r_scale
        out = area_mean(out, axis, centres - half, centres + half)
    return out


def make_target(reference: np.ndarray, row: Row, seed: int):
    kernel = GaussianKernel(row.covariance, row.shift)
    blurred = kernel.apply(reference)
    if row.brighten:
        blurred = 0.8 * blurred + 0.05
    reference_grid, target_grid, target_shape = grids_for(row.layout, reference.shape)
    if row.layout == "2x":
        view = blurred.reshape(sum(((n, 2) for n in target_shape), ()))
        target = view.mean(axis=tuple(range(1, 2 * len(target_shape), 2)))
    else:
        target = sample(blurred, reference_grid, target_grid, target_shape)
    rng = np.random.default_rng(seed)
    target = target + rng.normal(0.0, NOISE * np.ptp(target), target.shape)
    return target.astype(np.float32), reference_grid, target_grid


def sigma_error(fitted, true) -> float:
    """The largest relative sigma error over every direction."""
    w, v = np.linalg.eigh(np.asarray(true, float))
    root = v @ np.diag(w**-0.5) @ v.T
    ratios = np.linalg.eigvalsh(root @ np.asarray(fitted, float) @ root)
    return float(np.max(np.abs(np.sqrt(ratios) - 1.0)))


def interleaved(filter_pass, fit, repeats: int):
    """Medians of the filter pass and the fit, timed in turn so that both see the same load."""
    passes, fits, result = [], [], None
    for _ in range(repeats):
        passes.append(timed(filter_pass, 1)[0])
        seconds, result = timed(fit, 1)
        fits.append(seconds)
    return float(np.median(passes)), float(np.median(fits)), result


def run_row(reference: np.ndarray, row: Row, repeats: int, memory: bool, seed: int) -> str:
    target, reference_grid, target_grid = make_target(reference, row, seed)
    whole = row.options.get("shift") or row.options.get("full_covariance")
    sigmas = np.sqrt(np.linalg.eigvalsh(row.covariance))[::-1] if row.options.get("full_covariance") \
        else np.sqrt(np.diag(row.covariance))

    def fit():
        return fit_blur(reference, target, reference_grid=reference_grid, target_grid=target_grid,
                        warn=False, **row.options)

    def filter_pass():
        return ndimage.gaussian_filter(reference, sigmas)

    filter_pass()  # warm-up
    one_pass, seconds, result = interleaved(filter_pass, fit, repeats)
    limit = WHOLE_PASSES if whole else PASSES
    passes = seconds / one_pass
    shift_error = np.abs(np.subtract(result.shift, row.shift or 0.0)).max()
    peak = peak_memory(fit) / (reference.nbytes + target.nbytes) if memory else float("nan")
    fast = "ok" if passes <= limit else "MISS"
    small = "" if not memory else "ok" if peak <= MEMORY else "MISS"
    shape = "x".join(map(str, target.shape))
    return (f"{row.name:34s} {shape:>11s} {seconds:7.2f} {one_pass:7.3f} {passes:7.1f} {limit:3.0f} "
            f"{fast:4s} {sigma_error(result.covariance, row.covariance):9.1e} {shift_error:9.1e} "
            f"{peak:6.1f}x {small}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=4096, help="side of the 2D reference")
    parser.add_argument("--volume", type=int, nargs=3, default=(64, 512, 512), help="3D reference shape")
    parser.add_argument("--quick", action="store_true", help="1024^2 and 32x128x128, one run")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--rows", default="", help="only rows whose name contains this")
    args = parser.parse_args()
    size, volume_shape, repeats = args.size, tuple(args.volume), args.repeats
    if args.quick:
        size, volume_shape, repeats = 1024, (32, 128, 128), 1
    reference = texture_2d(size)
    print(f"reference {size}x{size} float32 (mosaic of photograph windows); 0.2% noise; medians of "
          f"{repeats} run(s); passes = fit / one gaussian_filter pass over the reference", flush=True)
    print(f"{'row':34s} {'target':>11s} {'fit s':>7s} {'pass s':>7s} {'passes':>7s} {'max':>3s} {'':4s} "
          f"{'sigma err':>9s} {'shift err':>9s} {'memory':>7s} (max {MEMORY:.0f}x)", flush=True)
    for k, row in enumerate(ROWS):
        if args.rows in row.name:
            print_row(reference, row, repeats, args.memory, seed=k)
    if args.rows in VOLUME_ROW.name:
        t = time.perf_counter()
        volume = textured(volume_shape, seed=7).astype(np.float32)
        print(f"volume {'x'.join(map(str, volume_shape))} float32 (real texture in every direction, "
              f"built in {time.perf_counter() - t:.0f} s)", flush=True)
        print_row(volume, VOLUME_ROW, repeats, args.memory, seed=len(ROWS))


def print_row(reference: np.ndarray, row: Row, repeats: int, memory: bool, seed: int) -> None:
    """The row, or the error the fit raised and the row again without the reference-noise correction."""
    try:
        print(run_row(reference, row, repeats, memory, seed), flush=True)
    except Exception as error:  # a benchmark reports a failing row and goes on
        print(f"{row.name:34s} ERROR {type(error).__name__}: {error}", flush=True)
        if "reference_noise" not in row.options:
            bare = row._replace(name=row.name + ", noise 0", options={**row.options, "reference_noise": 0})
            print_row(reference, bare, repeats, memory, seed)


if __name__ == "__main__":
    main()
