"""Known blurs of real images are recovered to the accuracy the README promises."""

import numpy as np
import pytest
from scipy import ndimage

from napari_blurfit import fit_blur


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5, 6.0, 15.0])
@pytest.mark.parametrize("image", ["camera", "cell"])
def test_noiseless_isotropic_within_0p1_percent(request, image, sigma):
    a = request.getfixturevalue(image)
    fit = fit_blur(a, ndimage.gaussian_filter(a, sigma))
    np.testing.assert_allclose(fit.sigma, (sigma, sigma), rtol=1e-3)
    assert fit.identifiable and not fit.at_bound and not fit.target_sharper
    assert fit.gain == 1.0 and fit.offset == 0.0


@pytest.mark.parametrize("loss", ["l2", "l1", "huber"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_noisy_within_1_percent(camera, loss, dtype):
    rng = np.random.default_rng(3)
    target = ndimage.gaussian_filter(camera, 3.0) + rng.normal(0, 4.0, camera.shape)
    fit = fit_blur(camera.astype(dtype), target.astype(dtype), loss=loss)
    np.testing.assert_allclose(fit.sigma, (3.0, 3.0), rtol=0.01)


def test_per_axis_2d_with_gain_offset(cell):
    target = 0.6 * ndimage.gaussian_filter(cell, (1.5, 4.0)) + 25.0
    fit = fit_blur(cell, target, per_axis=True, gain_offset=True)
    np.testing.assert_allclose(fit.sigma, (1.5, 4.0), rtol=1e-3)
    assert fit.gain == pytest.approx(0.6, rel=1e-4)
    assert fit.offset == pytest.approx(25.0, rel=1e-3)


def test_per_axis_3d_volume(volume):
    target = ndimage.gaussian_filter(volume, (0.8, 2.0, 3.0))
    fit = fit_blur(volume, target, per_axis=True)
    np.testing.assert_allclose(fit.sigma, (0.8, 2.0, 3.0), rtol=1e-3)


def test_isotropic_3d_volume_noisy(volume):
    rng = np.random.default_rng(0)
    target = ndimage.gaussian_filter(volume, 1.8) + rng.normal(0, 2.0, volume.shape)
    fit = fit_blur(volume, target)
    np.testing.assert_allclose(fit.sigma, (1.8,) * 3, rtol=0.01)


@pytest.mark.parametrize("loss", ["l1", "huber"])
def test_robust_gain_offset_recovered_with_outliers(coins, loss):
    rng = np.random.default_rng(5)
    target = 1.3 * ndimage.gaussian_filter(coins, 2.2) - 7.0 + rng.normal(0, 1.0, coins.shape)
    spikes = rng.random(coins.shape) < 0.02  # hot pixels ruin L2, not L1/Huber
    target[spikes] += 400.0
    fit = fit_blur(coins, target, loss=loss, gain_offset=True)
    np.testing.assert_allclose(fit.sigma, (2.2, 2.2), rtol=0.01)
    assert fit.gain == pytest.approx(1.3, rel=0.01)
    assert fit.offset == pytest.approx(-7.0, abs=1.0)
    l2 = fit_blur(coins, target, loss="l2", gain_offset=True)
    assert abs(l2.sigma[0] - 2.2) > abs(fit.sigma[0] - 2.2)


def test_stderr_matches_spread_over_noise(camera):
    """The Gauss-Newton standard error agrees with the spread over noise draws (white noise)."""
    clean = ndimage.gaussian_filter(camera, 2.0)
    fits = [fit_blur(camera, clean + np.random.default_rng(i).normal(0, 10.0, camera.shape))
            for i in range(12)]
    spread = np.std([f.sigma[0] for f in fits], ddof=1)
    stderr = np.median([f.sigma_stderr[0] for f in fits])
    assert 0.5 < stderr / spread < 2.0


def test_fitted_and_residual_reproduce_target(cell):
    target = 2.0 * ndimage.gaussian_filter(cell, 3.0) + 1.0
    fit = fit_blur(cell, target, gain_offset=True)
    np.testing.assert_allclose(fit.fitted(cell), target, atol=1e-6 * target.max())
    assert np.abs(fit.residual(cell, target)).max() < 1e-6 * target.max()
    assert fit.loss == pytest.approx(np.mean(fit.residual(cell, target) ** 2), abs=1e-9)


def test_reverse_direction(cell):
    blurred = ndimage.gaussian_filter(cell, 2.0)
    with pytest.warns(UserWarning, match="looks sharper"):
        forward = fit_blur(blurred, cell)
    assert forward.target_sharper
    back = fit_blur(blurred, cell, reverse=True)
    np.testing.assert_allclose(back.sigma, (2.0, 2.0), rtol=1e-3)
    assert not back.target_sharper
    np.testing.assert_allclose(back.fitted(blurred, cell), blurred, atol=1e-6 * blurred.max())


def test_not_identifiable_below_0p3(camera):
    with pytest.warns(UserWarning, match="not identifiable"):
        fit = fit_blur(camera, ndimage.gaussian_filter(camera, 0.2))
    assert not fit.identifiable


def test_identity_reported_as_zero(camera):
    with pytest.warns(UserWarning, match="not identifiable"):
        fit = fit_blur(camera, camera.copy())
    assert fit.sigma == (0.0, 0.0)


def test_at_upper_bound_is_flagged(camera):
    with pytest.warns(UserWarning, match="bound"):
        fit = fit_blur(camera, ndimage.gaussian_filter(camera, 6.0), sigma_bounds=(0.5, 3.0))
    assert fit.at_bound and fit.sigma[0] == pytest.approx(3.0, rel=1e-3)


def test_mask_and_border_restrict_the_loss(cell):
    target = ndimage.gaussian_filter(cell, 2.5)
    target[:, :128] = ndimage.gaussian_filter(cell, 5.0)[:, :128]  # left half blurred differently
    mask = np.zeros(cell.shape, bool)
    mask[:, 140:] = True
    fit = fit_blur(cell, target, mask=mask)
    np.testing.assert_allclose(fit.sigma, (2.5, 2.5), rtol=1e-3)
    assert fit.n_pixels == mask.sum() and fit.n_excluded == cell.size - mask.sum()
    border = fit_blur(cell, ndimage.gaussian_filter(cell, 2.5, mode="constant"), exclude_border=12)
    np.testing.assert_allclose(border.sigma, (2.5, 2.5), rtol=1e-3)
    assert border.n_pixels == (256 - 24) ** 2


def test_nan_pixels_excluded_and_counted(cell):
    target = ndimage.gaussian_filter(cell, 3.0)
    target[100:104, 50:60] = np.nan
    ref = cell.copy()
    ref[10, 10] = np.inf
    with pytest.warns(UserWarning, match="41 pixel"):
        fit = fit_blur(ref, target)
    assert fit.n_nonfinite == 41
    np.testing.assert_allclose(fit.sigma, (3.0, 3.0), rtol=1e-2)
    assert np.isfinite(fit.loss)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float16])
def test_integer_and_half_inputs_do_not_overflow(camera, dtype):
    a = camera.astype(dtype)
    b = np.clip(np.round(ndimage.gaussian_filter(camera, 2.0)), 0, 255).astype(dtype)
    fit = fit_blur(a, b)
    np.testing.assert_allclose(fit.sigma, (2.0, 2.0), rtol=0.01)


def test_non_contiguous_views(camera):
    big = np.zeros((512, 512))
    big[::2, ::2] = camera
    a = big[::2, ::2]
    b = ndimage.gaussian_filter(camera, 1.5).T.copy().T
    assert not a.flags.c_contiguous
    fit = fit_blur(a, b)
    np.testing.assert_allclose(fit.sigma, (1.5, 1.5), rtol=1e-3)


def test_inputs_not_modified(cell):
    a = cell.copy()
    b = ndimage.gaussian_filter(cell, 2.0)
    b[5, 5] = np.nan
    a_before, b_before = a.copy(), b.copy()
    mask = np.ones(a.shape, bool)
    with pytest.warns(UserWarning):
        fit_blur(a, b, loss="l1", gain_offset=True, mask=mask)
    np.testing.assert_array_equal(a, a_before)
    np.testing.assert_array_equal(b, b_before)
    assert mask.all()


def test_lists_accepted(coins):
    small = coins[:48, :48]
    fit = fit_blur(small.tolist(), ndimage.gaussian_filter(small, 1.2).tolist())
    np.testing.assert_allclose(fit.sigma, (1.2, 1.2), rtol=1e-3)


def test_result_dict_json_and_repr(camera):
    import json

    fit = fit_blur(camera, ndimage.gaussian_filter(camera, 2.0), gain_offset=True)
    d = json.loads(fit.to_json())
    assert d["sigma"] == pytest.approx([2.0, 2.0], rel=1e-3)
    assert set(d) >= {"sigma", "sigma_stderr", "gain", "offset", "loss", "loss_name", "notes",
                      "at_bound", "identifiable", "target_sharper"}
    assert repr(fit).startswith("BlurFit(sigma=(2, 2), gain=1")
    assert "sigma" in fit.summary()
