"""Benchmark of the whole-Gaussian fit (full covariance + shift) against the obvious route.

Prints, for a 2048^2 float32 real-texture pair blurred by a rotated ellipse and shifted: one
scipy.ndimage.gaussian_filter pass, our fits (full covariance + shift, per-axis + shift, shift
alone), the naive fit (scipy.optimize.least_squares over log-Cholesky covariance and shift, model by
reflect padding + scipy.signal.fftconvolve), ratios, losses and peak memory. ``--3d`` adds a
128x256x256 volume, with the naive fit too (slow); ``--no-2d`` skips the 2D part. Medians of
``--repeats`` runs (the naive fit runs once).
"""

import argparse
import time
import tracemalloc

import numpy as np
from scipy import ndimage, optimize, signal
from skimage import data

from napari_blurfit import fit_blur
from napari_blurfit._gaussian import GaussianKernel
from napari_blurfit._probe import probe_model
from napari_blurfit._shift import estimate_shift
from napari_blurfit._whole import fit_whole_gaussian


def texture_2d(size):
    tile = data.camera().astype(np.float32) / 255.0
    return np.ascontiguousarray(ndimage.zoom(tile, size / tile.shape[0], order=1)[:size, :size])


def texture_3d(shape):
    moon = data.moon().astype(np.float32) / 255.0
    big = ndimage.zoom(moon, 1.0, order=1)
    z, y, x = shape
    return np.stack([np.roll(big, (13 * i, 7 * i), axis=(0, 1))[:y, :x] for i in range(z)])


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def peak_memory(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def naive_fit(reference, target, start):
    """least_squares over ``[log-Cholesky, shift]``; the model by reflect padding + fftconvolve."""
    ref = reference.astype(np.float64)
    tgt = target.astype(np.float64)
    d = ref.ndim
    nc = d * (d + 1) // 2

    def residual(theta):
        kernel = GaussianKernel.from_cholesky(theta[:nc], theta[nc:])
        k = kernel.sampled()
        padded = np.pad(ref, [((s - 1) // 2, (s - 1) // 2) for s in k.shape], mode="symmetric")
        return (signal.fftconvolve(padded, k, mode="valid") - tgt).ravel()

    res = optimize.least_squares(residual, start, x_scale="jac")
    return 2 * res.cost, res.nfev


def run_2d(size, repeats, naive):
    rng = np.random.default_rng(0)
    a = texture_2d(size)
    true = GaussianKernel.from_basicsr(3.0, 1.2, 0.6, (0.7, -1.3))
    b = (true.apply(a) + rng.normal(0, 0.002, a.shape)).astype(np.float32)
    print(f"2D {size}x{size} float32, true covariance {true.covariance.round(3).tolist()}, "
          f"shift {true.shift}")
    t_filter, _ = timed(lambda: ndimage.gaussian_filter(a, 2.0), repeats)
    print(f"  gaussian_filter pass             {t_filter:8.3f} s")
    t_default, _ = timed(lambda: fit_blur(a, b, warn=False), repeats)
    print(f"  fit_blur default (L2)            {t_default:8.3f} s")
    t_probe, probe = timed(lambda: probe_model(a, b, start_sigma=(2.0, 2.0)), repeats)
    share = 100 * t_probe / t_default
    print(f"  probe_model                      {t_probe:8.3f} s  ({share:.0f}% of default)  "
          f"notes={len(probe.notes)}")
    t_shift, mu = timed(lambda: estimate_shift(a, b), repeats)
    print(f"  shift only (estimate_shift)      {t_shift:8.3f} s  ({t_shift / t_filter:.1f} filter passes)  "
          f"shift {mu.round(3).tolist()}")
    cases = {"full_covariance+shift": (True, True), "per_axis+shift": (False, True),
             "full_covariance centred": (True, False)}
    results = {}
    for name, (full, shift) in cases.items():
        t, fit = timed(lambda full=full, shift=shift: fit_whole_gaussian(
            a, b, full_covariance=full, shift=shift, start_sigma=(2.0, 2.0)), repeats)
        results[name] = (t, fit)
        print(f"  ours {name:27s} {t:8.3f} s  loss {fit.loss_sum:.6e}  "
              f"cov {fit.kernel.covariance.round(3).tolist()}  shift {fit.kernel.shift.round(3).tolist()}  "
              f"evals {fit.evaluations}")
    t_blur, blur = timed(lambda: fit_blur(a, b, full_covariance=True, shift=True, warn=False), repeats)
    print(f"  fit_blur(full_covariance, shift) {t_blur:8.3f} s  (the whole call: statistics, start, "
          f"fit, checks)  loss {blur.loss * blur.n_pixels:.6e}")
    mem = peak_memory(lambda: fit_whole_gaussian(a, b, full_covariance=True, shift=True,
                                                 start_sigma=(2.0, 2.0)))
    inputs = a.nbytes + b.nbytes
    print(f"  peak traced memory (full+shift)  {mem / 2**20:8.1f} MiB = {mem / inputs:.1f}x the inputs "
          f"({inputs / 2**20:.0f} MiB)")
    if naive:
        t0 = time.perf_counter()
        loss_naive, nfev = naive_fit(a, b, np.r_[np.log(2.0), np.log(2.0), 0.0, 0.0, 0.0])
        t_naive = time.perf_counter() - t0
        t_ours, fit = results["full_covariance+shift"]
        print(f"  naive least_squares (1 run)      {t_naive:8.3f} s  loss {loss_naive:.6e}  nfev {nfev}")
        print(f"  speed-up {t_naive / t_ours:.1f}x (fit_blur: {t_naive / t_blur:.1f}x), loss ratio "
              f"ours/naive {fit.loss_sum / loss_naive:.8f}")
    t_axis = results["per_axis+shift"][0]
    print(f"  per_axis+shift = {t_axis / t_filter:.1f} filter passes; probe = {share:.0f}% of a default fit; "
          f"peak memory {mem / inputs:.1f}x the inputs")


def run_3d(shape, repeats, naive):
    rng = np.random.default_rng(1)
    a = texture_3d(shape)
    cov = np.array([[2.0, 0.4, 0.0], [0.4, 3.0, -0.8], [0.0, -0.8, 1.5]])
    true = GaussianKernel(cov, (0.5, -0.4, 0.9))
    b = (true.apply(a) + rng.normal(0, 0.002, a.shape)).astype(np.float32)
    print(f"3D {shape} float32")
    t_filter, _ = timed(lambda: ndimage.gaussian_filter(a, 1.5), repeats)
    print(f"  gaussian_filter pass             {t_filter:8.3f} s")
    t, fit = timed(lambda: fit_whole_gaussian(a, b, full_covariance=True, shift=True,
                                             start_sigma=(1.5, 1.5, 1.5)), repeats)
    err = np.linalg.norm(fit.kernel.covariance - cov) / np.linalg.norm(cov)
    print(f"  ours full_covariance+shift       {t:8.3f} s  rel. Frobenius {err:.2e}  "
          f"shift {fit.kernel.shift.round(3)}  loss {fit.loss_sum:.6e}")
    t_blur, _ = timed(lambda: fit_blur(a, b, full_covariance=True, shift=True, warn=False), repeats)
    print(f"  fit_blur(full_covariance, shift) {t_blur:8.3f} s  (the whole call)")
    mem = peak_memory(lambda: fit_whole_gaussian(a, b, full_covariance=True, shift=True,
                                                 start_sigma=(1.5, 1.5, 1.5)))
    print(f"  peak traced memory (full+shift)  {mem / 2**20:8.1f} MiB = "
          f"{mem / (a.nbytes + b.nbytes):.1f}x the inputs")
    if naive:
        t0 = time.perf_counter()
        start = np.r_[np.full(3, np.log(1.5)), np.zeros(3), np.zeros(3)]
        loss_naive, nfev = naive_fit(a, b, start)
        t_naive = time.perf_counter() - t0
        print(f"  naive least_squares (1 run)      {t_naive:8.3f} s  loss {loss_naive:.6e}  nfev {nfev}")
        print(f"  speed-up {t_naive / t:.1f}x (fit_blur: {t_naive / t_blur:.1f}x), loss ratio ours/naive "
              f"{fit.loss_sum / loss_naive:.8f}; ours = {t / t_filter:.1f} filter passes")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--3d", dest="three_d", action="store_true")
    parser.add_argument("--no-2d", action="store_true")
    args = parser.parse_args()
    if not args.no_2d:
        run_2d(args.size, args.repeats, not args.no_naive)
    if args.three_d:
        run_3d((128, 256, 256), max(1, args.repeats - 2), not args.no_naive)


if __name__ == "__main__":
    main()
