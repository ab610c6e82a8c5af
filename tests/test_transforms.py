"""The package's own transforms against `scipy.fft`."""

import numpy as np
import pytest
from scipy import fft as sfft

from napari_blurfit._spectral import strided
from napari_blurfit._transforms import HalfSpectrum


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
