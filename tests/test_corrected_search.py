"""The noise rounds' search re-reads contractions it made ahead: the answers of fresh contractions."""

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from napari_blurfit import fit
from napari_blurfit._corrected import CorrectedSearch, _interpolated, solution_at
from napari_blurfit._findings import brightness_rss, brightness_sigmas
from napari_blurfit._noise import BINS, _bin_sums
from napari_blurfit._options import FitOptions


@pytest.fixture(scope="module")
def noisy_camera():
    """Statistics and problem of camera (range 0-1) blurred by 1.5, its reference with noise 0.05."""
    rng = np.random.default_rng(0)
    image = data.camera()[:256, :256] / 255.0
    target = ndimage.gaussian_filter(image, 1.5) + rng.normal(0, 0.01, image.shape)
    problem = fit._problem(image + rng.normal(0, 0.05, image.shape), target, FitOptions(warn=False))
    return fit._statistics(problem).stats, problem


def test_bin_sums_by_runs_are_bincounts():
    rng = np.random.default_rng(1)
    # runs of one bin, as neighbouring coefficients have, and lone ones
    index = np.repeat(rng.integers(0, BINS, 300), rng.integers(1, 9, 300))
    weights = rng.random(len(index))
    counts, sums = _bin_sums(index, weights)
    np.testing.assert_array_equal(counts, np.bincount(index, minlength=BINS))
    np.testing.assert_allclose(sums, np.bincount(index, weights, BINS), rtol=1e-13)


@pytest.mark.parametrize("expect", [None, "answer", "far"])
def test_grids_read_ahead_give_the_fresh_answer(noisy_camera, expect):
    stats, problem = noisy_camera
    plain = fit._spectral_fit(stats, problem)
    variances = [0.0025, 0.0024, 0.0024 * np.exp(0.02)]  # the rounds' and the nudged one

    fresh = CorrectedSearch(fit._spectral_fit)
    wanted = [fresh(stats.with_noise(v), problem, near=plain.sigma).sigma[0] for v in variances]
    ahead = CorrectedSearch(fit._spectral_fit)
    guess = {None: None, "answer": np.log(wanted[0]), "far": np.log(plain.sigma[0]) + 0.15}[expect]
    table = ahead.prefetch(stats, problem, plain.sigma, brightness_sigmas(plain.sigma), expect=guess)
    got = [ahead(stats.with_noise(v), problem, near=plain.sigma).sigma[0] for v in variances]

    np.testing.assert_allclose(got, wanted, rtol=1e-10)
    assert wanted[0] == pytest.approx(1.5, rel=0.03)  # corrected: the plain fit reads ~1.6
    assert brightness_rss(stats, plain.sigma, 4.0, table=table) == pytest.approx(
        brightness_rss(stats, plain.sigma, 4.0), rel=1e-12)


def test_corrected_rss_read_off_the_zoom_is_the_contraction_s(noisy_camera):
    """The corrected fit's RSS from its search's fine table, to 1e-9 of its own contraction."""
    stats, problem = noisy_camera
    plain = fit._spectral_fit(stats, problem)
    search = CorrectedSearch(fit._spectral_fit)
    corrected = stats.with_noise(0.0024)
    sol = search(corrected, problem, near=plain.sigma)
    read = search.residual_at(corrected, problem, sol.sigma)
    assert read is not None
    assert read == pytest.approx(solution_at(corrected, problem, sol.sigma).rss, rel=1e-9)
    assert search.residual_at(corrected, problem, sol.sigma * 1.01) is None  # not one of its answers


@pytest.mark.parametrize("t", [0.0, 0.013, -0.05, 0.11, 0.1199])
def test_interpolated_is_exact_or_declines(t):
    grid = np.linspace(-0.12, 0.12, 13)
    f = lambda u: 100.0 + 50.0 * (u - 0.01) ** 2 + 30.0 * np.exp(3.0 * u)  # noqa: E731
    got = _interpolated(grid, f(grid), t)
    assert got is None or got == pytest.approx(f(t), rel=1e-10)
    if abs(t) < 0.06:  # mid-grid it reads
        assert got is not None
