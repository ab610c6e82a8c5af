"""Speed, accuracy and memory of fit_blur against baselines measured in the same run.

Run: .venv/bin/python benchmarks/bench_fit.py [--quick]
Prints medians (seconds) and ratios; --quick uses smaller images (for a smoke test).

Baselines (docs/design.md, "Baselines"):
- naive: scipy.optimize.least_squares on gaussian_filter(A, s) - B, finite differences;
- bounded search: minimize_scalar(method="bounded") with one full filter pass per evaluation
  (the L1 baseline);
- one gaussian_filter pass over the same image (the yardstick for "<= 2x");
- Fourier ratio: G = B_hat / A_hat where |A_hat| is not small, then fit exp(-2 pi^2 s^2 |f|^2).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import tracemalloc

import numpy as np
from scipy import ndimage, optimize

from napari_blurfit import fit_blur


def timed(fn, repeat=5):
    """Median wall time of ``repeat`` runs after one warm-up run (FFT plans, page faults)."""
    times, out = [], None
    if repeat > 1:
        fn()
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def test_image(shape, seed=0):
    """A textured test image: smooth structures at several scales plus edges (float32)."""
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    for zoom in (64, 16, 4):
        small = rng.random(tuple(max(2, n // zoom) for n in shape)).astype(np.float32)
        img += ndimage.zoom(small, [n / m for n, m in zip(shape, small.shape)], order=1)
    img += 0.5 * (img > np.median(img))
    return img


def naive_least_squares(a, b, x0):
    """The original answer's port: least_squares on the residual image, finite differences."""
    def resid(s):
        sigma = float(s[0]) if len(s) == 1 else tuple(s)  # one shared sigma or one per axis
        return (ndimage.gaussian_filter(a, sigma) - b).ravel()
    res = optimize.least_squares(resid, x0, bounds=(0.05, 50.0))
    return res.x, res.nfev


def bounded_search(a, b, loss):
    calls = [0]

    def f(s):
        calls[0] += 1
        r = ndimage.gaussian_filter(a, s) - b
        return float(np.abs(r).mean()) if loss == "l1" else float(np.mean(r * r))
    res = optimize.minimize_scalar(f, bounds=(0.1, 20.0), method="bounded")
    return res.x, calls[0]


def fourier_ratio(a, b):
    fa, fb = np.fft.rfft2(a), np.fft.rfft2(b)
    ky = np.fft.fftfreq(a.shape[0])[:, None]
    kx = np.fft.rfftfreq(a.shape[1])[None, :]
    f2 = ky**2 + kx**2
    keep = (np.abs(fa) > 1e-3 * np.abs(fa).max()) & (f2 > 0) & (f2 < 0.05)
    ratio = np.clip(np.real(fb[keep] / fa[keep]), 1e-6, None)
    # log G = -2 pi^2 s^2 |f|^2: a straight line through the origin in |f|^2
    slope = np.sum(np.log(ratio) * f2[keep]) / np.sum(f2[keep] ** 2)
    return float(np.sqrt(max(-slope, 0.0) / (2 * np.pi**2)))


def peak_extra_memory(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    n2 = 1024 if args.quick else 4096
    shape3 = (32, 128, 128) if args.quick else (128, 512, 512)
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python "
          f"{platform.python_version()}, numpy {np.__version__}")

    true = 3.0
    a = test_image((n2, n2))
    rng = np.random.default_rng(1)
    b = (ndimage.gaussian_filter(a, true) + rng.normal(0, 0.01, a.shape)).astype(np.float32)
    inputs = a.nbytes + b.nbytes
    print(f"\n== 2D {n2}x{n2} float32, true sigma {true}, noise sd 0.01 ==")
    t_gf, _ = timed(lambda: ndimage.gaussian_filter(a, true))
    t_l2, fit = timed(lambda: fit_blur(a, b))
    t_naive, (x_naive, nfev) = timed(lambda: naive_least_squares(a, b, [1.0]), repeat=1)
    t_fr, s_fr = timed(lambda: fourier_ratio(a, b), repeat=1)
    rows = [
        ("one gaussian_filter pass", t_gf, ""),
        ("fit_blur l2", t_l2, f"sigma {fit.sigma[0]:.5f}"),
        ("naive least_squares", t_naive, f"sigma {x_naive[0]:.5f} ({nfev} evaluations)"),
        ("Fourier ratio", t_fr, f"sigma {s_fr:.5f}"),
    ]
    t_l1, fit1 = timed(lambda: fit_blur(a, b, loss="l1"))
    t_b1, (x_b1, calls) = timed(lambda: bounded_search(a, b, "l1"), repeat=1)
    rows += [("fit_blur l1", t_l1, f"sigma {fit1.sigma[0]:.5f}"),
             ("bounded search l1", t_b1, f"sigma {x_b1:.5f} ({calls} filter passes)")]
    for name, t, note in rows:
        print(f"{name:28s} {t:8.3f} s   {note}")
    mem_l2 = peak_extra_memory(lambda: fit_blur(a, b))
    mem_l1 = peak_extra_memory(lambda: fit_blur(a, b, loss="l1"))
    print(f"RATIO l2 speed-up vs naive least_squares : {t_naive / t_l2:7.1f}x  (target >= 20x)")
    print(f"RATIO l2 time / one gaussian_filter pass : {t_l2 / t_gf:7.2f}   (target <= 2)")
    print(f"RATIO l1 speed-up vs bounded search      : {t_b1 / t_l1:7.1f}x  (target >= 5x)")
    print(f"RATIO peak extra memory / input bytes l2 : {mem_l2 / inputs:7.2f}   (target <= 6)")
    print(f"RATIO peak extra memory / input bytes l1 : {mem_l1 / inputs:7.2f}   (target <= 6)")
    print(f"abs sigma error: fit_blur l2 {abs(fit.sigma[0] - true):.2e}, naive "
          f"{abs(x_naive[0] - true):.2e}, Fourier ratio {abs(s_fr - true):.2e}, "
          f"fit_blur l1 {abs(fit1.sigma[0] - true):.2e}, bounded l1 {abs(x_b1 - true):.2e}")

    true3 = (1.2, 2.0, 3.0)
    v = test_image(shape3, seed=2)
    w = (ndimage.gaussian_filter(v, true3) + rng.normal(0, 0.01, v.shape)).astype(np.float32)
    print(f"\n== 3D {shape3} float32, per-axis, true sigma {true3} ==")
    t_gf3, _ = timed(lambda: ndimage.gaussian_filter(v, true3), repeat=1)
    t_l23, fit3 = timed(lambda: fit_blur(v, w, per_axis=True), repeat=1)
    t_n3, (x_n3, nfev3) = timed(lambda: naive_least_squares(v, w, [1.0, 1.0, 1.0]), repeat=1)
    t_l13, fit13 = timed(lambda: fit_blur(v, w, per_axis=True, loss="l1"), repeat=1)
    print(f"{'one gaussian_filter pass':28s} {t_gf3:8.3f} s")
    print(f"{'fit_blur l2 per axis':28s} {t_l23:8.3f} s   sigma {np.round(fit3.sigma, 4)}")
    print(f"{'naive least_squares':28s} {t_n3:8.3f} s   sigma {np.round(x_n3, 4)} ({nfev3} evaluations)")
    print(f"{'fit_blur l1 per axis':28s} {t_l13:8.3f} s   sigma {np.round(fit13.sigma, 4)}")
    print(f"RATIO 3D l2 speed-up vs naive least_squares : {t_n3 / t_l23:7.1f}x")
    print(f"RATIO 3D l2 time / one gaussian_filter pass : {t_l23 / t_gf3:7.2f}")
    print(f"RATIO 3D l1 time / naive l2 least_squares   : {t_l13 / t_n3:7.2f}")
    mem3 = peak_extra_memory(lambda: fit_blur(v, w, per_axis=True))
    print(f"RATIO 3D peak extra memory / input bytes    : {mem3 / (v.nbytes + w.nbytes):7.2f}")


if __name__ == "__main__":
    main()
