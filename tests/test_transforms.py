"""The package's own transforms against `scipy.fft`."""

import numpy as np
import pytest
from scipy import fft as sfft

from napari_blurfit._spectral import strided
from napari_blurfit._transforms import HalfSpectrum, dividing_stride


@pytest.mark.parametrize("shape, limit", [((2, 20, 37), 50), ((1, 33, 35), 50), ((2, 37, 50), 50),
                                          ((3, 8, 9, 10), 50), ((1, 64, 48), 10**6)],
                         ids=["odd last axis", "odd axes", "even last axis", "3D frames", "every frequency"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_half_spectrum_reads_the_complex_transform_at_the_picked_frequencies(shape, limit, dtype):
    """A real FFT read with X[-k] = conj(X[k]) gives `scipy.fft.fftn` at every picked frequency."""
    x = np.random.default_rng(0).random(shape).astype(dtype)
    picked = strided(shape[1:], limit)
    want = sfft.fftn(x, axes=tuple(range(1, len(shape))))[(Ellipsis, *picked)]
    got = HalfSpectrum(x, len(picked)).picked(picked)
    assert got.shape == want.shape
    tolerance = 1e-6 if dtype == np.float32 else 1e-12
    assert np.abs(got - want).max() <= tolerance * np.abs(want).max()


@pytest.mark.parametrize("shape, step, picked", [
    ((1, 64, 48), 4, (slice(None, None, 4), slice(None, None, 8))),
    ((2, 32, 48, 40), 2, (slice(None, None, 2), slice(None, None, 4), slice(0, 21, 2))),
    ((1, 30, 45), 3, (slice(None, None, 3), slice(None, None, 3)))],
    ids=["2D", "3D frames, a half spectrum", "odd axes"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_folded_half_spectrum_reads_the_transform_at_its_subgrid(shape, step, picked, dtype):
    """Kept at every ``step``-th frequency (the blocks summed, then a small transform), a
    subgrid stepping by multiples of it reads `scipy.fft.fftn` there; one off it is refused."""
    x = np.random.default_rng(1).random(shape).astype(dtype)
    want = sfft.fftn(x, axes=tuple(range(1, len(shape))))[(Ellipsis, *picked)]
    spectrum = HalfSpectrum(x, len(picked), step=step)
    got = spectrum.picked(picked)
    tolerance = 1e-6 if dtype == np.float32 else 1e-12
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= tolerance * np.abs(want).max()
    with pytest.raises(ValueError, match=f"off the every-{step}th subgrid kept"):
        spectrum.picked((slice(None, None, step + 1),) * len(picked))


def test_dividing_stride():
    """The largest stride from the given one down to half of it that divides every axis: never
    fewer frequencies than the limit allows."""
    assert dividing_stride((128, 256, 256), 3) == 2
    assert dividing_stride((1024, 1024), 2) == 2
    assert dividing_stride((256, 256), 5) == 4
    assert dividing_stride((64, 160, 160), 3) == 2
    assert dividing_stride((257, 256), 3) == 3  # none divides 257: the given one, read unfolded
