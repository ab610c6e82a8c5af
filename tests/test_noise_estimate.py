"""The reference-noise estimate's fast binning reads the same bins and sums as the plain one."""

import numpy as np
import pytest
from scipy import ndimage

from napari_blurfit import fit
from napari_blurfit._kernels import transfer
from napari_blurfit._noise import BINS, Reach, coefficients, estimate_noise, line, sampled_transfers
from napari_blurfit._options import FitOptions


def _stats(shape, seed=0):
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.random(shape), 1.0) + rng.normal(0, 0.02, shape)
    target = ndimage.gaussian_filter(image, 1.2) + rng.normal(0, 0.01, shape)
    return fit._statistics(fit._problem(image, target, FitOptions(per_axis=True))).stats


@pytest.mark.parametrize("shape", [(96, 80), (300, 7), (5, 300), (9, 9), (12, 30, 40)])
@pytest.mark.parametrize("scale", [0.0, 0.3, 0.8, 1.5, 2.5, 30.0])
@pytest.mark.parametrize("gain", [1.0, 0.7])
def test_estimate_matches_per_coefficient_bins(shape, scale, gain):
    """The bins from the transfer per axis (`sample_bins`) are `line`'s, coefficient by coefficient.

    Wide kernels too, whose truncated tails ripple about 0 and go negative.
    """
    stats = _stats(shape)
    for sigma in (np.full(len(shape), scale), scale * np.linspace(0.5, 1.3, len(shape))):
        c = coefficients(stats, sigma, gain, 4.0)
        want = line(np.abs(c.transfer), c.residual, c.reference, gain)
        got = estimate_noise(stats, sigma, gain, 4.0)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("sigma", [(0.7, 0.7), (1.5, 1.5), (1.1, 2.6), (3.0, 0.5), (9.0, 9.0)])
def test_reach_splits_the_sample(sigma):
    """The block and the regions left in the lowest bin cover the sample once; those are in it."""
    parts = sampled_transfers(sigma, (512, 384), 4.0, (slice(None, None, 2),) * 2)
    bins = np.floor(np.abs(np.multiply.outer(*parts)) * BINS)
    reach = Reach.of(np.abs(parts[0]), np.abs(parts[1]))
    covered = np.zeros(bins.shape, dtype=int)
    covered[reach.rows, : reach.head] += 1
    for picked in reach.lowest():
        covered[picked] += 1
        assert not bins[picked].any()
    assert np.all(covered == 1)


@pytest.mark.parametrize("sigma", [0.0, 0.4, 1.5, 7.0, 60.0])
@pytest.mark.parametrize("size, step", [(1024, 4), (1000, 3), (37, 1)])
def test_sampled_transfer_is_the_axis_transfer(sigma, size, step):
    got = sampled_transfers([sigma], (size,), 4.0, (slice(None, None, step),))[0]
    np.testing.assert_allclose(got, transfer([sigma], size, 4.0)[::step, 0], rtol=0, atol=1e-15)
