"""The reference-noise estimate's cheaper parts give what the plain ones gave."""

import numpy as np
import pytest
from scipy import ndimage

from napari_blurfit import fit
from napari_blurfit._kernels import transfer
from napari_blurfit._noise import (
    REWEIGHT,
    coefficients,
    estimate_noise,
    fitted_line,
    line,
    sampled_transfers,
)
from napari_blurfit._options import FitOptions


def _stats(shape, seed=0):
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.random(shape), 1.0) + rng.normal(0, 0.02, shape)
    target = ndimage.gaussian_filter(image, 1.2) + rng.normal(0, 0.01, shape)
    return fit._statistics(fit._problem(image, target, FitOptions(per_axis=True))).stats


@pytest.mark.parametrize("shape", [(96, 80), (300, 7), (9, 9), (12, 30, 40)])
@pytest.mark.parametrize("scale", [0.0, 0.8, 2.5, 30.0])
@pytest.mark.parametrize("gain", [1.0, 0.7])
def test_estimate_is_the_line_of_every_coefficient(shape, scale, gain):
    """Wide kernels too, whose truncated tails ripple about 0 and go negative."""
    stats = _stats(shape)
    for sigma in (np.full(len(shape), scale), scale * np.linspace(0.5, 1.3, len(shape))):
        c = coefficients(stats, sigma, gain, 4.0)
        want = line(np.abs(c.transfer), c.residual, c.reference, gain)
        np.testing.assert_allclose(estimate_noise(stats, sigma, gain, 4.0), want, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("sigma", [0.0, 0.4, 1.5, 7.0, 60.0])
@pytest.mark.parametrize("size, step", [(1024, 4), (1000, 3), (37, 1)])
def test_sampled_transfer_is_the_axis_transfer(sigma, size, step):
    got = sampled_transfers([sigma], (size,), 4.0, (slice(None, None, step),))[0]
    np.testing.assert_allclose(got, transfer([sigma], size, 4.0)[::step, 0], rtol=0, atol=1e-15)


def _numpy_line(n, sum_x, sum_r, sum_r2, sum_ref):
    """The line as numpy fitted it before: (slope clamped, intercept, stderr, cap, misfit)."""
    ok = n >= 8
    n = n[ok]
    x, y, y2 = (v[ok] / n for v in (sum_x, sum_r, sum_r2))
    relative = np.maximum(y2 / np.maximum(y**2, 1e-300) - 1.0, 1e-12) / n
    cap = sum_ref[ok][0] / n[0]
    level = y
    for _ in range(REWEIGHT):
        w = 1.0 / (relative * level * level)
        s0, s1, s2, sy, sxy = w.sum(), w @ x, w @ (x * x), w @ y, w @ (x * y)
        det = s0 * s2 - s1 * s1
        intercept, slope = (s2 * sy - s1 * sxy) / det, (s0 * sxy - s1 * sy) / det
        level = np.maximum(intercept + slope * x, 0.1 * y)
    slope, intercept = np.clip(slope, 0.0, cap), max(intercept, 0.0)
    misfit = np.sum(n * np.abs(y / np.maximum(intercept + slope * x, 1e-300) - 1.0)) / np.sum(n)
    return slope, intercept, np.sqrt(s0 / det), cap, misfit


@pytest.mark.parametrize("seed", range(5))
def test_fitted_line_in_python_floats_is_numpy_s(seed):
    rng = np.random.default_rng(seed)
    n = rng.integers(0, 3000, 40).astype(float)
    x = np.linspace(0.0, 1.0, 40) ** 2 * n
    r = (1e-4 + 3e-3 * x / np.maximum(n, 1)) * n * rng.uniform(0.9, 1.1, 40)
    r2 = r**2 / np.maximum(n, 1) * rng.uniform(1.5, 3.0, 40)
    ref = rng.uniform(1e-3, 1e-2, 40) * n
    np.testing.assert_allclose(fitted_line(n, x, r, r2, ref), _numpy_line(n, x, r, r2, ref), rtol=1e-12)


def test_fitted_line_of_no_residual_reads_no_line():
    """Bins without any residual power (an identical pair at the identity): no line, no error."""
    n = np.full(40, 100.0)
    estimate = fitted_line(n, np.linspace(0.0, 1.0, 40) * n, np.zeros(40), np.zeros(40), np.ones(40))
    assert estimate.reference == 0.0 and not np.isfinite(estimate.stderr)
