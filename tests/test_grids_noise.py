"""Issue 22's noisy reference across grids (issue 24): the noise goes through the resampling.

A reference with white noise s_A, blurred and resampled, adds ``gain^2 s_A^2 Q(K)`` per target
pixel to the expected L2 loss (`napari_blurfit._grid_noise`): subtracting it unbiases sigma.
"""

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from napari_blurfit import Grid, fit_blur
from napari_blurfit._gaussian import GaussianKernel
from napari_blurfit._grid_noise import ResampledNoise
from napari_blurfit._resample import axis_sampling, resample

CAMERA = data.camera().astype(np.float64) / 255.0
TARGET_NOISE = 0.01


def _block(image, f):
    ny, nx = (image.shape[0] // f) * f, (image.shape[1] // f) * f
    return image[:ny, :nx].reshape(ny // f, f, nx // f, f).mean(axis=(1, 3))


def _pair(sigma, noise, f=2, seed=0):
    rng = np.random.default_rng(seed)
    reference = CAMERA + noise * rng.standard_normal(CAMERA.shape)
    target = _block(ndimage.gaussian_filter(CAMERA, sigma), f)
    target = target + TARGET_NOISE * rng.standard_normal(target.shape)
    return reference, target, Grid(float(f), translate=(f - 1) / 2)


@pytest.mark.parametrize("grids", [(Grid(1.0), Grid(1.0), 400),
                                   (Grid(0.065), Grid(0.108, translate=0.02), 240),
                                   (Grid(1.0), Grid(3.0, translate=1.0, sampling="point"), 133)])
def test_noise_share_matches_simulated_noise(grids):
    """Q(K) against white noise pushed through the kernel and the resampling (12 draws)."""
    source, destination, n_dst = grids
    n_src = 400
    sampling = [axis_sampling(Grid.of(source, 2, "s"), n_src, Grid.of(destination, 2, "d"), n_dst, k)
                for k in range(2)]
    kernel = GaussianKernel.from_basicsr(2.0, 1.2, 0.4)
    share = ResampledNoise(sampling).share(kernel, 4.0)
    rng = np.random.default_rng(3)
    draws = []
    for _ in range(12):
        noise = rng.standard_normal((1, n_src, n_src))
        out = resample(kernel.apply(noise), [s.weights for s in sampling], 1)
        draws.append(np.mean(out[:, 10:-10, 10:-10] ** 2))
    assert share == pytest.approx(np.mean(draws), rel=0.02)  # the draws' own spread: ~0.5%
    if source == destination:
        assert share == pytest.approx(float(np.sum(kernel.sampled() ** 2)), rel=1e-12)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
@pytest.mark.parametrize("noise", [0.02, 0.05])
def test_known_noise_is_corrected_across_grids(sigma, noise):
    """A given s_A removes the bias (plain: sigma 1 -> 1.03 / 1.15) to within 0.5%."""
    reference, target, grid = _pair(sigma, noise)
    plain = fit_blur(reference, target, target_grid=grid, reference_noise=0, warn=False)
    fit = fit_blur(reference, target, target_grid=grid, reference_noise=noise, warn=False)
    assert plain.sigma[0] > sigma * (1 + noise / 10)  # the bias to remove
    assert fit.sigma[0] == pytest.approx(sigma, rel=0.005)
    assert fit.reference_noise == noise and fit.reference_noise_corrected
    go = fit_blur(reference, 3 * target + 1, target_grid=grid, reference_noise=noise,
                  gain_offset=True, warn=False)
    assert go.sigma[0] == pytest.approx(sigma, rel=0.005)
    assert go.gain == pytest.approx(3.0, rel=0.01)


@pytest.mark.parametrize("sigma, noise, tolerance", [(1.0, 0.02, 0.02), (1.0, 0.05, 0.03),
                                                     (2.0, 0.05, 0.02)])
def test_auto_estimates_and_corrects_across_grids(sigma, noise, tolerance):
    """'auto': s_A within 15% from the pair; sigma within 2% (3% at SNR 20 for sigma 1); a note."""
    reference, target, grid = _pair(sigma, noise, seed=1)
    fit = fit_blur(reference, target, target_grid=grid, warn=False)
    assert fit.reference_noise == pytest.approx(noise, rel=0.15)
    assert fit.sigma[0] == pytest.approx(sigma, rel=tolerance)
    assert fit.reference_noise_corrected
    if noise == 0.05:
        finding = next(f for f in fit.findings if f.code == "reference_noise")
        assert finding.values["plain_sigma"][0] > sigma * 1.02
        assert "this fit is corrected for it" in finding.text


def test_auto_does_no_harm_on_a_clean_reference_across_grids():
    reference, target, grid = _pair(2.0, 0.0, seed=2)
    plain = fit_blur(reference, target, target_grid=grid, reference_noise=0, warn=False)
    fit = fit_blur(reference, target, target_grid=grid, warn=False)
    assert fit.sigma[0] == pytest.approx(plain.sigma[0], rel=0.005)
    assert not [f for f in fit.findings if f.code == "reference_noise"]


def test_known_noise_is_corrected_on_a_pair_large_enough_for_a_crop():
    """A 1024^2 reference (real texture without a period): the corrected fit runs on the crop,
    then on every pixel."""
    from volumes import textured

    image = textured((2, 1024, 1024), seed=3)[0]
    rng = np.random.default_rng(5)
    reference = image + 0.05 * rng.standard_normal(image.shape)
    target = _block(ndimage.gaussian_filter(image, 1.5), 2)
    target = target + TARGET_NOISE * rng.standard_normal(target.shape)
    grid = Grid(2.0, translate=0.5)
    fit = fit_blur(reference, target, target_grid=grid, reference_noise=0.05, warn=False)
    assert fit.sigma[0] == pytest.approx(1.5, rel=0.005) and fit.reference_noise_corrected
    auto = fit_blur(reference, target, target_grid=grid, warn=False)
    assert auto.sigma[0] == pytest.approx(1.5, rel=0.02)
