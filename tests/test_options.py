"""Every option is honoured or refused by name, in every entry point (issue: no silent options).

Each test puts garbage where an option says it must not count, or swaps the images where
``reverse`` says they are swapped, and checks the answer is the true blur: an option that is
dropped gives a wrong answer, not a passing test.
"""

import numpy as np
import pytest
from scipy import ndimage

from napari_blurfit import BlurFitWarning, blur_map, fit_blur, fit_blur_stack

SIGMA = 2.0


@pytest.fixture(scope="module")
def pair(camera):
    return camera, ndimage.gaussian_filter(camera, SIGMA)


def garbage(shape, seed=0):
    return np.random.default_rng(seed).random(shape) * 1e4


# blur_map ---------------------------------------------------------------------------------------
def test_blur_map_honours_mask(pair):
    a, b = pair
    b = b.copy()
    b[:, :96] = garbage((256, 96))
    mask = np.zeros(a.shape, bool)
    mask[:, 96:] = True
    with pytest.warns(BlurFitWarning, match="masked out"):
        m = blur_map(a, b, tile=64, mask=mask)
    cols = m.centers[0, :, 1]
    assert (m.reason[:, cols + 32 <= 96 - 16] == "masked out").all()  # wholly outside, halo too
    good = m.reason == ""
    assert good.sum() >= 0.5 * good.size
    np.testing.assert_allclose(m.sigma[good], SIGMA, rtol=0.02)


@pytest.mark.slow
def test_blur_map_honours_exclude_border(pair):
    a, b = pair
    b = b.copy()
    band = np.ones(a.shape, bool)
    band[20:-20, 20:-20] = False
    b[band] = garbage(a.shape)[band]
    m = blur_map(a, b, tile=64, exclude_border=20)
    assert (m.reason == "").all()
    np.testing.assert_allclose(m.sigma, SIGMA, rtol=0.02)


def test_blur_map_honours_reverse(pair):
    a, b = pair
    m = blur_map(b, a, tile=64, reverse=True)  # the sharp image passed as the target
    assert (m.reason == "").all()
    np.testing.assert_allclose(m.sigma, SIGMA, rtol=0.02)


def test_blur_map_refuses_what_it_cannot_honour(pair):
    a, b = pair
    with pytest.raises(ValueError, match=r"blur_map cannot honour spatial_axes=\(0, 1\)"):
        blur_map(a, b, spatial_axes=(0, 1))
    with pytest.raises(TypeError, match=r"blur_map got unknown option\(s\) 'sigma'"):
        blur_map(a, b, sigma=2.0)
    with pytest.raises(ValueError, match="mask has shape"):
        blur_map(a, b, mask=np.ones((10, 10), bool))


# fit_blur_stack ---------------------------------------------------------------------------------
def test_stack_honours_reverse_border_and_mask(pair):
    a, b = pair
    sharp, blurred = np.stack([a, a[::-1]]), np.stack([b, b[::-1]])
    for fit in fit_blur_stack(blurred, sharp, reverse=True):
        assert fit.sigma[0] == pytest.approx(SIGMA, rel=1e-3) and fit.reverse
    dirty = blurred.copy()
    dirty[:, :12] = garbage((2, 12, 256))
    for fit in fit_blur_stack(sharp, dirty, exclude_border=12):
        assert fit.sigma[0] == pytest.approx(SIGMA, rel=1e-3)
    mask = np.ones(a.shape, bool)
    mask[:12] = False
    for fit in fit_blur_stack(sharp, dirty, mask=mask):
        assert fit.sigma[0] == pytest.approx(SIGMA, rel=1e-3)


def test_stack_refuses_unknown_and_invalid_options(pair):
    a, b = pair
    with pytest.raises(TypeError, match=r"fit_blur_stack got unknown option\(s\) 'per_axes'"):
        fit_blur_stack(np.stack([a, a]), np.stack([b, b]), per_axes=True)
    with pytest.raises(ValueError, match="huber_delta applies to loss='huber' only"):
        fit_blur_stack(np.stack([a, a]), np.stack([b, b]), huber_delta=3.0)


def test_stack_warn_false_is_silent(pair):
    a, b = pair
    blank = np.stack([a, np.full_like(a, 5.0)])
    fits = fit_blur_stack(blank, np.stack([b, b]), warn=False)  # no warning: filterwarnings=error
    assert np.isnan(fits[1].sigma[0]) and "constant" in fits[1].notes[0]


# fit_blur ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("options", "message"), [
    ({"huber_delta": 2.0}, "huber_delta applies to loss='huber' only"),
    ({"per_axis": "yes"}, "per_axis must be True or False"),
    ({"full_covariance": 1}, "full_covariance must be True or False"),
    ({"callback": 3}, "callback must be callable"),
    ({"truncate": float("nan")}, "truncate must be a positive number"),
])
def test_fit_blur_refuses_bad_options(pair, options, message):
    a, b = pair
    with pytest.raises((TypeError, ValueError), match=message):
        fit_blur(a, b, **options)
