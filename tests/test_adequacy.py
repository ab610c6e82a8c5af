"""How Gaussian is the blur: r2, r2_linear, the transfer curve and the not-Gaussian note."""

import numpy as np
import pytest
from scipy import fft, ndimage

from napari_blurfit import BlurFitWarning, fit_blur, fit_blur_stack
from napari_blurfit._adequacy import assess
from napari_blurfit._kernels import transfer
from napari_blurfit._spectral import block_stats


def disk(radius):
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    k = (x * x + y * y <= radius * radius).astype(float)
    return k / k.sum()


def noisy(image, blurred, seed=0):
    rng = np.random.default_rng(seed)
    return blurred + rng.normal(0, 0.002 * np.ptp(image), image.shape)


def share(fit):
    """Share of the Gaussian's residual that the free filter removes."""
    return (fit.r2_linear - fit.r2) / (1 - fit.r2)


def test_gaussian_pair_with_noise_is_gaussian(camera):
    fit = fit_blur(camera, noisy(camera, ndimage.gaussian_filter(camera, 2.0)))  # no warning
    assert share(fit) <= 0.05
    assert fit.r2 <= fit.r2_linear <= 1
    t = fit.transfer
    assert np.all(np.diff(t.frequency) > 0) and t.frequency[0] > 0
    assert t.measured.shape == t.model.shape == t.frequency.shape
    energetic = t.stderr < 0.01  # where the reference has energy
    assert energetic.sum() >= 20
    np.testing.assert_allclose(t.measured[energetic], t.model[energetic], atol=0.05)
    assert not any("not Gaussian" in n for n in fit.notes)


@pytest.mark.parametrize("kernel", ["disk", "box"])
def test_disk_and_box_are_flagged(camera, kernel):
    if kernel == "disk":
        blurred = ndimage.convolve(camera, disk(4), mode="reflect")
    else:
        blurred = ndimage.uniform_filter(camera, 5, mode="reflect")
    with pytest.warns(BlurFitWarning, match=r"not Gaussian: a free kernel would remove \d+%"):
        fit = fit_blur(camera, noisy(camera, blurred))
    assert share(fit) >= 0.5
    assert fit.r2 < fit.r2_linear <= 1
    t = fit.transfer
    reliable = t.stderr < 0.02
    # a disk's and a box's transfer turn negative where the reference has energy; a Gaussian's never
    assert t.measured[reliable].min() < -0.05
    assert t.model.min() > -1e-4  # a truncated sampled Gaussian dips by ~1e-6 at most
    assert "changes sign" in fit.notes[-1]


def test_3d_widefield_like_psf_is_flagged(volume):
    """A double-cone PSF (defocus that grows away from focus): anisotropic and not Gaussian."""
    z, y, x = np.mgrid[-4:5, -6:7, -6:7]
    psf = (np.hypot(y, x) <= 1.5 + np.abs(z)).astype(float) / (1 + np.abs(z)) ** 2
    target = 3.0 * ndimage.convolve(volume, psf / psf.sum(), mode="reflect") + 10.0
    with pytest.warns(BlurFitWarning, match="not Gaussian"):
        fit = fit_blur(volume, noisy(volume, target), per_axis=True, gain_offset=True)
    assert share(fit) >= 0.3
    gaussian = fit_blur(volume, noisy(volume, ndimage.gaussian_filter(volume, (1.0, 2.0, 1.5))),
                        per_axis=True)
    assert share(gaussian) <= 0.05


def test_noiseless_gaussian_explains_everything(cell):
    fit = fit_blur(cell, 0.5 * ndimage.gaussian_filter(cell, 3.0) + 7.0, gain_offset=True)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit.r2_linear == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(fit.transfer.measured, fit.transfer.model, atol=1e-6)


def test_r2_equals_one_minus_rss_over_sst(camera):
    target = noisy(camera, 0.8 * ndimage.gaussian_filter(camera, (1.5, 2.5)) + 3.0)
    for options in ({}, {"per_axis": True, "gain_offset": True}, {"loss": "l1"},
                    {"loss": "huber", "gain_offset": True}):
        fit = fit_blur(camera, target, warn=False, **options)
        r = fit.residual(camera, target)
        expected = 1 - np.sum(r**2) / np.sum((target - target.mean()) ** 2)
        assert fit.r2 == pytest.approx(expected, rel=1e-9), options
        assert fit.r2 <= fit.r2_linear <= 1


def test_r2_over_the_used_pixels_only(camera):
    target = noisy(camera, ndimage.gaussian_filter(camera, 2.0))
    target[:, :100] = np.random.default_rng(1).random((256, 100)) * 1e4  # garbage, masked out
    mask = np.zeros(camera.shape, bool)
    mask[:, 110:] = True
    fit = fit_blur(camera, target, mask=mask)
    used = fit.residual(camera, target)[mask]
    expected = 1 - np.sum(used**2) / np.sum((target[mask] - target[mask].mean()) ** 2)
    assert fit.r2 == pytest.approx(expected, rel=1e-9)
    assert share(fit) <= 0.05  # the garbage does not count against the Gaussian


def test_stacks_and_frames_carry_the_adequacy(camera, cell):
    a = np.stack([camera, cell])
    b = np.stack([noisy(f, ndimage.gaussian_filter(f, 2.0), i) for i, f in enumerate(a)])
    joint = fit_blur(a, b, spatial_axes=(-2, -1))
    assert 0.99 < joint.r2 <= joint.r2_linear <= 1 and share(joint) <= 0.05
    for frame in fit_blur_stack(a, b):
        assert 0.99 < frame.r2 <= frame.r2_linear <= 1
        assert len(frame.transfer.frequency) > 20
    d = joint.to_dict()
    assert set(d["transfer"]) >= {"frequency", "measured", "model"}
    assert d["r2"] == joint.r2


def test_share_matches_a_brute_force_shell_filter():
    """The closed form against an explicit per-shell least-squares filter over scipy's DCT."""
    rng = np.random.default_rng(4)
    a = ndimage.zoom(rng.random((16, 20)), 4)  # 64 x 80: one coefficient per block
    b = ndimage.uniform_filter(a, 3, mode="reflect") + rng.normal(0, 1e-3, a.shape)
    sigma, gain = (1.1, 0.9), 1.2
    stats = block_stats(a, b, 2)
    result = assess(stats, sigma, gain, truncate=4.0)

    ah, bh = fft.dctn(a, norm="ortho"), fft.dctn(b, norm="ortho")
    h = np.outer(transfer([sigma[0]], 64)[:, 0], transfer([sigma[1]], 80)[:, 0])
    m = gain * h * ah
    ky, kx = np.meshgrid(np.arange(64) / 128, np.arange(80) / 160, indexing="ij")
    shells = np.floor(np.hypot(ky, kx) / (1 / 64)).astype(int)
    residual = np.sum((m - bh) ** 2) - (m[0, 0] - bh[0, 0]) ** 2
    noise = residual / (a.size - 1)
    removed = 0.0
    for s in np.unique(shells):
        inside = (shells == s)
        inside[0, 0] = False
        mm, mb = np.sum(m[inside] ** 2), np.sum(m[inside] * bh[inside])
        if mm > 0:
            removed += max((mm - mb) ** 2 / mm - noise, 0.0)
    assert result.share == pytest.approx(removed / residual, rel=1e-9)


@pytest.mark.parametrize("shape, ndim", [((300, 410), 2), ((40, 70, 90), 3), ((3, 64, 80), 2)])
def test_binned_statistics_give_the_full_statistics_answer(shape, ndim):
    """A rotated/shifted fit's check sums the products straight into blocks: same answer."""
    from napari_blurfit._adequacy import assess_model, binned_stats
    from napari_blurfit._spectral import SpectralStats, frame_dct

    rng = np.random.default_rng(5)
    a = rng.random(shape).astype(np.float32)
    b = ndimage.gaussian_filter(a, 1.5) + rng.normal(0, 0.05, shape).astype(np.float32)
    m = ndimage.gaussian_filter(a, 1.3).astype(np.float32)
    a_hat, b_hat, m_hat = (frame_dct(x, ndim) for x in (a, b, m))

    def full(x, y):
        return lambda: SpectralStats.zeros(shape[-ndim:]).accumulate(x, y)

    def binned(x, y):
        return lambda: binned_stats(x, y, ndim)

    want = assess_model(full(m_hat, b_hat), full(a_hat, b_hat), full(a_hat, m_hat), 0.9)
    got = assess_model(binned(m_hat, b_hat), binned(a_hat, b_hat), binned(a_hat, m_hat), 0.9)
    assert got.share == pytest.approx(want.share, rel=1e-9, abs=1e-12)
    for field in ("frequency", "measured", "model", "stderr", "energy"):
        np.testing.assert_allclose(getattr(got.transfer, field), getattr(want.transfer, field),
                                   rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shape, ndim", [((300, 410), 2), ((40, 70, 90), 3), ((3, 64, 80), 2)])
def test_binned_pairs_are_each_pairs_binned_statistics(shape, ndim):
    """Three transforms' pairs in one pass (float32 products formed in float64): `binned_stats`."""
    from napari_blurfit._adequacy import binned_pairs, binned_stats
    from napari_blurfit._spectral import frame_dct

    rng = np.random.default_rng(6)
    hats = [frame_dct(rng.random(shape).astype(np.float32), ndim) for _ in range(3)]
    pairs = [(2, 1), (0, 1), (0, 2)]
    for got, (i, j) in zip(binned_pairs(hats, pairs, ndim), pairs):
        want = binned_stats(hats[i], hats[j], ndim)
        for field in ("paa", "pab", "dc_aa", "dc_ab", "cbb", "dc_b"):
            np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-12)

