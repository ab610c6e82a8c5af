"""Issue 22's tables: sigma before -> after the reference-noise correction, and error-bar coverage.

Target = G_sigma(image) + noise 0.01, reference = image + noise s_A (range 0-1). For each case,
``draws`` noise draws: the plain fit (``reference_noise=0``) and the default (``"auto"``); the
mean sigma of each, the coverage (truth within 3 stderr) and the median stderr over the spread
of the default fit across the draws.

Run: ``python benchmarks/noise_accuracy.py [--draws 10] [--whole-only]`` (``--whole-only``: the
rotated + shifted rows alone, whose noise is read from the whole fit's residual)
"""

import argparse

import numpy as np
from scipy import ndimage
from skimage import data

from napari_blurfit import fit_blur
from napari_blurfit._gaussian import GaussianKernel


def image(name: str) -> np.ndarray:
    img = getattr(data, name)()
    return (img[..., 1] if img.ndim == 3 else img) / 255.0


def draw(img, blur, ref_noise, seed):
    rng = np.random.default_rng(seed)
    target = blur(img) + rng.normal(0, 0.01, img.shape)
    return img + rng.normal(0, ref_noise, img.shape), target


def row(label, img, blur, truth, ref_noise, draws, read, **options):
    plain, auto, errors = [], [], []
    for seed in range(draws):
        a, b = draw(img, blur, ref_noise, seed)
        plain.append(read(fit_blur(a, b, reference_noise=0, warn=False, **options))[0])
        fit = fit_blur(a, b, warn=False, **options)
        value, error = read(fit)
        auto.append(value)
        errors.append(error)
    auto, errors = np.array(auto), np.array(errors)
    cover = np.mean(np.abs(auto - truth) <= 3 * errors)
    spread = np.std(auto, ddof=1) if draws > 1 else float("nan")
    print(f"{label:<34} {ref_noise:>5} {truth:>6.3f} {np.mean(plain):>8.4f} {np.mean(auto):>8.4f} "
          f"{100 * (np.mean(auto) / truth - 1):>+6.2f}% {cover:>6.0%} {np.median(errors) / spread:>8.2f}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--whole-only", action="store_true")
    args = parser.parse_args()
    n = args.draws
    print(f"{'case':<34} {'s_A':>5} {'truth':>6} {'plain':>8} {'auto':>8} {'error':>7} "
          f"{'cover':>6} {'se/sprd':>8}")
    if not args.whole_only:
        spectral_rows(n)
    whole_rows(n)


def spectral_rows(n: int) -> None:
    """Round and per-axis kernels: the noise read from the DCT statistics."""
    sigma0 = lambda f: (f.sigma[0], f.sigma_stderr[0])  # noqa: E731
    for name in ("camera", "brick"):
        img = image(name)
        for sigma in (0.7, 1.0, 2.0, 4.0, 8.0):
            for s_a in (0.01, 0.02, 0.05):
                row(f"{name} round", img, lambda x, s=sigma: ndimage.gaussian_filter(x, s), sigma,
                    s_a, n, sigma0)
    brick = image("brick")
    volume = np.stack([brick[4 * i : 4 * i + 96, 3 * i : 3 * i + 96] for i in range(32)])
    for sigma in (0.7, 1.2, 3.0):
        row("brick texture stacked 3D, round", volume,
            lambda x, s=sigma: ndimage.gaussian_filter(x, s), sigma, 0.05, n, sigma0)
    img = image("astronaut")
    row("astronaut per axis (1.5, 3) + g/o, y", img,
        lambda x: 0.8 * ndimage.gaussian_filter(x, (1.5, 3.0)) + 0.1, 1.5, 0.05, n,
        lambda f: (f.sigma[0], f.sigma_stderr[0]), per_axis=True, gain_offset=True)


def whole_rows(n: int) -> None:
    """Rotated and shifted kernels: the noise read from the whole fit's residual."""
    crop = image("camera")[128:384, 128:384]
    kernel = GaussianKernel(np.array([[4.0, 1.2], [1.2, 1.5]]), np.array([0.4, -0.3]))
    row("camera rotated + shift, cov_yy", crop, lambda x: kernel.apply(x, 4.0), 4.0, 0.05, n,
        lambda f: (f.covariance[0, 0], f.covariance_stderr[0, 0]), full_covariance=True, shift=True)
    row("camera rotated + shift, shift_y", crop, lambda x: kernel.apply(x, 4.0), 0.4, 0.05, n,
        lambda f: (f.shift[0], f.shift_stderr[0]), full_covariance=True, shift=True)
    ellipse = GaussianKernel.from_basicsr(2.5, 1.4, 0.5, (0.4, -0.3))
    minor = float(np.sqrt(np.linalg.eigvalsh(ellipse.covariance)[0]))
    row("camera ellipse 2.5/1.4 + shift, minor", image("camera"), lambda x: ellipse.apply(x, 4.0),
        minor, 0.05, n, lambda f: principal_minor(f, ellipse), full_covariance=True, shift=True)


def principal_minor(fit, truth: GaussianKernel) -> tuple[float, float]:
    """The fit's smaller principal sigma, and a bound on its standard error.

    ``v^T C v`` along the true minor axis ``v``, its entries' errors added as if fully
    correlated (the fit reports no covariance between them), halved over sigma.
    """
    sigma = float(np.sqrt(np.linalg.eigvalsh(fit.covariance)[0]))
    axis = np.abs(np.linalg.eigh(truth.covariance)[1][:, 0])
    bound = float(axis @ fit.covariance_stderr @ axis)
    return sigma, bound / (2 * sigma)


if __name__ == "__main__":
    main()
