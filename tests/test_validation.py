"""Bad input gets a clear error naming the argument and the problem."""

import numpy as np
import pytest
from scipy import ndimage

from napari_blurfit import fit_blur


@pytest.fixture
def pair(coins):
    a = coins[:64, :64].copy()
    return a, ndimage.gaussian_filter(a, 2.0)


def test_shape_mismatch_names_both_shapes(pair):
    a, b = pair
    with pytest.raises(ValueError, match=r"same shape; got reference \(64, 64\) and target \(64, 63\)"):
        fit_blur(a, b[:, :63])


def test_unknown_loss(pair):
    with pytest.raises(ValueError, match=r"loss must be one of 'l2', 'l1', 'huber'; got 'L3'"):
        fit_blur(*pair, loss="L3")


@pytest.mark.parametrize("which", ["reference", "target"])
def test_constant_image(pair, which):
    a, b = pair
    flat = np.full_like(a, 7.0)
    args = (flat, b) if which == "reference" else (a, flat)
    with pytest.raises(ValueError, match=f"{which} is constant"):
        fit_blur(*args)
    zeros = np.zeros_like(a)
    args = (zeros, b) if which == "reference" else (a, zeros)
    with pytest.raises(ValueError, match=f"{which} is constant"):
        fit_blur(*args, gain_offset=True)


def test_rgb_is_explained(pair):
    a, _ = pair
    rgb = np.stack([a, a, a], axis=-1)
    with pytest.raises(ValueError, match=r"looks like an RGB\(A\) image: its last axis has 3"):
        fit_blur(rgb, rgb)


def test_rgb_fitted_as_channels_when_asked(pair):
    a, b = pair
    fit = fit_blur(np.stack([a, a * 0.5], -1), np.stack([b, b * 0.5], -1), spatial_axes=(0, 1))
    np.testing.assert_allclose(fit.sigma, (2.0, 2.0), rtol=1e-3)


@pytest.mark.parametrize("shape", [(50,), (4, 4, 8, 8)])
def test_wrong_dimensionality(shape):
    x = np.random.default_rng(0).random(shape)
    with pytest.raises(ValueError, match=f"must be a 2D or 3D image; got a {len(shape)}-D array"):
        fit_blur(x, x)


def test_one_pixel_axis():
    x = np.random.default_rng(0).random((1, 40))
    with pytest.raises(ValueError, match="only 1 pixel"):
        fit_blur(x, x)


def test_empty():
    with pytest.raises(ValueError, match=r"reference is empty \(shape \(0, 5\)\)"):
        fit_blur(np.zeros((0, 5)), np.zeros((0, 5)))


@pytest.mark.parametrize("bad, err, msg", [
    ("a string", TypeError, "reference must be an image array, got str"),
    (None, TypeError, "reference must be an image array, got NoneType"),
    ([[1, 2], [3]], TypeError, "reference cannot be read as an array"),
    (np.ones((8, 8), bool), TypeError, "reference has dtype bool"),
    (np.ones((8, 8), complex), TypeError, "reference has complex dtype"),
])
def test_not_an_image(bad, err, msg):
    with pytest.raises(err, match=msg):
        fit_blur(bad, np.ones((8, 8)))


def test_all_nan(pair):
    a, b = pair
    with pytest.raises(ValueError, match="no pixel is finite"):
        fit_blur(a, np.full_like(b, np.nan))


def test_values_too_large_for_float32(pair):
    a, b = pair
    huge = (a / a.max() * 3e37).astype(np.float32)  # finite, but the transform overflows
    with pytest.raises(ValueError, match="too large for a float32 transform"):
        fit_blur(huge, ndimage.gaussian_filter(huge, 2.0))
    fit = fit_blur(huge.astype(np.float64), ndimage.gaussian_filter(huge.astype(np.float64), 2.0))
    np.testing.assert_allclose(fit.sigma, (2.0, 2.0), rtol=1e-3)


def test_mask_errors(pair):
    a, b = pair
    with pytest.raises(ValueError, match="mask selects no pixels"):
        fit_blur(a, b, mask=np.zeros(a.shape, bool))
    with pytest.raises(ValueError, match=r"mask has shape \(10, 10\); it must match the images \(64, 64\)"):
        fit_blur(a, b, mask=np.ones((10, 10), bool))
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        fit_blur(a, b, mask=np.full(a.shape, 0.5))


def test_option_errors(pair):
    a, b = pair
    with pytest.raises(ValueError, match="sigma_bounds must satisfy 0 <= low < high"):
        fit_blur(a, b, sigma_bounds=(5, 1))
    with pytest.raises(ValueError, match="sigma_bounds must be"):
        fit_blur(a, b, sigma_bounds="wide")
    with pytest.raises(ValueError, match="exclude_border=40 leaves no pixels along spatial axis 0"):
        fit_blur(a, b, exclude_border=40)
    with pytest.raises(ValueError, match="huber_delta must be a positive number"):
        fit_blur(a, b, loss="huber", huber_delta=-1)
    with pytest.raises(ValueError, match=r"spatial_axes must name 2 or 3 axes, got \(0,\)"):
        fit_blur(a, b, spatial_axes=(0,))


def test_image_smaller_than_kernel():
    """A tiny image still fits; the default upper bound follows its size."""
    rng = np.random.default_rng(1)
    a = rng.random((6, 7))
    fit = fit_blur(a, ndimage.gaussian_filter(a, 1.0))
    np.testing.assert_allclose(fit.sigma, (1.0, 1.0), rtol=1e-3)
    assert fit.sigma_bounds == ((0.0, 3.5), (0.0, 3.5))
