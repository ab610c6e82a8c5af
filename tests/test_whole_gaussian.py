"""fit_blur with full_covariance / shift: accuracy, honesty by default, and every entry point."""

import numpy as np
import pytest
from scipy import ndimage

from napari_blurfit import BlurFitWarning, blur_map, fit_blur, fit_blur_stack
from napari_blurfit._gaussian import GaussianKernel

COV = np.array([[5.0, 2.4], [2.4, 3.2]])  # principal sigmas ~2.6 and ~1.2, rotated
SHIFT = (0.6, -0.9)


def rel_frobenius(a, b):
    return np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b)


def noise(image, fraction, seed=0):
    return np.random.default_rng(seed).normal(0, fraction * np.ptp(image), image.shape)


def impulses(image, fraction, seed=1):
    rng = np.random.default_rng(seed)
    out = image.copy()
    hit = rng.random(image.shape) < fraction
    out[hit] = rng.choice([image.min(), image.max()], hit.sum())
    return out


@pytest.fixture(scope="module")
def rotated_pair(camera):
    kernel = GaussianKernel(COV, SHIFT)
    return camera, 0.7 * kernel.apply(camera) + 12.0


def test_rotated_and_shifted_recovered_with_gain_offset(rotated_pair):
    a, b = rotated_pair
    fit = fit_blur(a, b + noise(a, 0.002), full_covariance=True, shift=True, gain_offset=True)
    assert rel_frobenius(fit.covariance, COV) < 0.01
    np.testing.assert_allclose(fit.shift, SHIFT, atol=0.03)
    assert fit.gain == pytest.approx(0.7, rel=0.01)
    np.testing.assert_allclose(fit.sigma, np.sqrt(np.diag(fit.covariance)))
    assert fit.full_covariance and fit.shift_fitted
    major, minor, theta = fit.basicsr
    assert (major, minor) == pytest.approx(fit.principal_sigmas)
    expected = GaussianKernel(COV, SHIFT).basicsr()
    assert theta == pytest.approx(expected.theta, abs=0.01)
    assert all(np.isfinite(fit.shift_stderr)) and np.isfinite(fit.covariance_stderr).all()
    # the result's own images use the whole model
    np.testing.assert_allclose(fit.fitted(a), 0.7 * GaussianKernel(COV, SHIFT).apply(a) + 12.0,
                               atol=0.02 * np.ptp(a) * 0.01 + 0.5)


@pytest.mark.parametrize("loss", ["l1", "huber"])
def test_robust_losses_with_impulse_noise(rotated_pair, loss):
    a, b = rotated_pair
    fit = fit_blur(a, impulses(b, 0.02), full_covariance=True, shift=True, gain_offset=True,
                   loss=loss)
    assert rel_frobenius(fit.covariance, COV) < 0.02
    np.testing.assert_allclose(fit.shift, SHIFT, atol=0.05)


def test_shift_alone_keeps_one_sigma(camera):
    target = ndimage.shift(ndimage.gaussian_filter(camera, 2.0), (0.0, 0.0))
    moved = GaussianKernel(np.eye(2) * 4.0, (0.7, 0.4)).apply(camera)
    fit = fit_blur(camera, moved + noise(camera, 0.002), shift=True)
    assert fit.sigma[0] == fit.sigma[1] == pytest.approx(2.0, rel=0.01)
    np.testing.assert_allclose(fit.shift, (0.7, 0.4), atol=0.03)
    assert not fit.full_covariance
    fit0 = fit_blur(camera, target, shift=True)
    np.testing.assert_allclose(fit0.shift, 0.0, atol=0.01)


def test_axis_aligned_blur_with_full_covariance_is_the_per_axis_fit(cell):
    target = ndimage.gaussian_filter(cell, (1.5, 3.0)) + noise(cell, 0.002)
    full = fit_blur(cell, target, full_covariance=True)
    per_axis = fit_blur(cell, target, per_axis=True)
    assert abs(full.covariance[0, 1]) < 0.01 * np.sqrt(full.covariance[0, 0] * full.covariance[1, 1])
    np.testing.assert_allclose(full.sigma, per_axis.sigma, rtol=0.005)


@pytest.mark.slow
def test_3d_volume(volume):
    cov = np.array([[2.0, 0.5, 0.0], [0.5, 3.0, 1.0], [0.0, 1.0, 2.5]])
    target = GaussianKernel(cov, (0.3, -0.5, 0.4)).apply(volume)
    fit = fit_blur(volume, target + noise(volume, 0.002), full_covariance=True, shift=True)
    assert rel_frobenius(fit.covariance, cov) < 0.01
    np.testing.assert_allclose(fit.shift, (0.3, -0.5, 0.4), atol=0.03)
    assert fit.angle is None and fit.basicsr is None


# honest by default -------------------------------------------------------------------------------
def test_default_fit_warns_about_a_shift(camera):
    target = GaussianKernel(np.eye(2) * 4.0, (0.0, 1.0)).apply(camera) + noise(camera, 0.002)
    with pytest.warns(BlurFitWarning, match=r"misaligned by 1\.0\d px .*shift=True"):
        fit_blur(camera, target)


def test_default_fit_warns_about_a_rotated_ellipse(camera):
    kernel = GaussianKernel.from_basicsr(3.0, 1.0, np.pi / 4)
    target = kernel.apply(camera) + noise(camera, 0.002)
    with pytest.warns(BlurFitWarning, match="elliptical and rotated .*full_covariance=True"):
        fit_blur(camera, target)
    with pytest.warns(BlurFitWarning, match="elliptical and rotated"):  # per axis cannot fit it
        fit_blur(camera, target, per_axis=True)


def test_default_fit_warns_about_an_axis_aligned_ellipse(camera):
    target = ndimage.gaussian_filter(camera, (1.0, 3.0)) + noise(camera, 0.002)
    with pytest.warns(BlurFitWarning, match="elliptical along the array axes .*per_axis=True"):
        fit_blur(camera, target)


@pytest.mark.parametrize("sigma", [0.8, 2.0, 6.0])
def test_clean_centred_round_pair_says_nothing(camera, cell, sigma):
    for image in (camera, cell):
        fit = fit_blur(image, ndimage.gaussian_filter(image, sigma) + noise(image, 0.002))
        assert fit.notes == ()  # and no warning: the suite turns warnings into errors


HALVE = "a gain/offset would more than halve the L2 loss"


@pytest.mark.parametrize("loss", ["l2", "l1"])
def test_a_whole_gaussian_fit_says_when_a_gain_offset_would_halve_the_loss(rotated_pair, loss):
    """Brightness-scaled target (0.7 G A + 12), no gain/offset: the rotated/shifted fit says so."""
    reference, target = rotated_pair
    kwargs = dict(loss=loss, full_covariance=True, shift=True, warn=False)
    fit = fit_blur(reference, target + noise(reference, 0.002), **kwargs)
    assert any(note.startswith(HALVE) for note in fit.notes)
    fit = fit_blur(reference, target + noise(reference, 0.002), gain_offset=True, **kwargs)
    assert not any(note.startswith(HALVE) for note in fit.notes)
    same_brightness = GaussianKernel(COV, SHIFT).apply(reference) + noise(reference, 0.002)
    fit = fit_blur(reference, same_brightness, **kwargs)
    assert not any(note.startswith(HALVE) for note in fit.notes)


# everywhere a fit is ----------------------------------------------------------------------------
def test_stacks_joint_and_per_frame(camera, cell):
    kernel = GaussianKernel(COV, SHIFT)
    a = np.stack([camera, cell])
    b = np.stack([kernel.apply(f) for f in a])
    joint = fit_blur(a, b, spatial_axes=(1, 2), full_covariance=True, shift=True)
    assert rel_frobenius(joint.covariance, COV) < 0.01
    for fit in fit_blur_stack(a, b, full_covariance=True, shift=True):
        assert rel_frobenius(fit.covariance, COV) < 0.01
        np.testing.assert_allclose(fit.shift, SHIFT, atol=0.03)


def test_blur_map_of_shifts(camera):
    target = GaussianKernel(np.eye(2) * 4.0, (0.5, 0.0)).apply(camera)
    m = blur_map(camera, target, tile=128, shift=True)
    good = m.reason == ""
    assert good.all()
    np.testing.assert_allclose(m.shift[good], np.broadcast_to((0.5, 0.0), m.shift[good].shape),
                               atol=0.05)
    np.testing.assert_allclose(m.sigma[good], 2.0, rtol=0.02)


def test_world_units_and_dict(rotated_pair):
    a, b = rotated_pair
    fit = fit_blur(a, b, full_covariance=True, shift=True, gain_offset=True)
    world = fit.in_world_units((0.5, 0.25))
    np.testing.assert_allclose(world["shift"], np.array(fit.shift) * (0.5, 0.25))
    np.testing.assert_allclose(world["covariance"], fit.covariance * np.outer((0.5, 0.25), (0.5, 0.25)))
    d = fit.to_dict()
    np.testing.assert_allclose(d["covariance"], fit.covariance)
    assert d["shift"] == list(fit.shift) and d["angle"] == pytest.approx(fit.angle)
    assert "shift" in fit.summary() and "principal" in fit.summary()


def test_dask_refused_with_a_clear_message(rotated_pair):
    da = pytest.importorskip("dask.array")
    a, b = rotated_pair
    with pytest.raises(ValueError, match="full_covariance and shift fits need images in memory"):
        fit_blur(da.from_array(a), da.from_array(b), shift=True)


def test_too_small_for_a_shift():
    rng = np.random.default_rng(0)
    a = rng.random((6, 40))
    with pytest.raises(ValueError, match="at least 8 pixels"):
        fit_blur(a, ndimage.gaussian_filter(a, 1.0), shift=True)


def test_default_3d_fit_warns_about_a_shift_only_when_there_is_one(volume):
    moved = GaussianKernel(np.diag([1.0, 4.0, 4.0]), (0.0, 1.0, 0.0)).apply(volume)
    # 3D is probed by cross-correlation alone (cheap), less exact than the 2D probe's fit
    with pytest.warns(BlurFitWarning, match=r"misaligned by (0\.[5-9]|1\.[0-3])\d px .*shift=True"):
        fit_blur(volume, moved + noise(volume, 0.002), per_axis=True)
    centred = ndimage.gaussian_filter(volume, (1.0, 2.0, 2.0)) + noise(volume, 0.002)
    assert fit_blur(volume, centred, per_axis=True).notes == ()
