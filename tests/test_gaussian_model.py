"""Known-answer tests of the whole-Gaussian model (`_gaussian`) and its exact fit (`_whole`)."""

import numpy as np
import pytest
from scipy import ndimage, optimize
from skimage import data
from volumes import textured

from napari_blurfit._gaussian import GaussianKernel, GaussianModel
from napari_blurfit._losses import get_loss
from napari_blurfit._probe import probe_model
from napari_blurfit._shift import estimate_shift
from napari_blurfit._whole import Problem, Settings, fit_whole_gaussian, strategy
from napari_blurfit._whole.kernel_space import KernelSpace
from napari_blurfit._whole.solver import damped_step
from napari_blurfit._whole.spectrum import ReferenceSpectrum

NOISE = 0.002  # of the image range


def _crop(img, size, y0=None, x0=None):
    y0 = (img.shape[0] - size) // 2 if y0 is None else y0
    x0 = (img.shape[1] - size) // 2 if x0 is None else x0
    return np.ascontiguousarray(img[y0 : y0 + size, x0 : x0 + size]).astype(np.float64)


@pytest.fixture(scope="module")
def cam():
    return _crop(data.camera(), 160) / 255.0


@pytest.fixture(scope="module")
def vol():
    moon = data.moon().astype(np.float64) / 255.0
    return np.stack([moon[8 * i : 8 * i + 40, 100 + 4 * i : 140 + 4 * i] for i in range(24)])


def _noisy(clean, rng, fraction=NOISE):
    return clean + rng.normal(0, fraction * np.ptp(clean), clean.shape)


def _rel_frobenius(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _problem(reference, target, loss, *, kernel, gain_offset=False, full_covariance=False, shift=False):
    """A whole-fit problem on one frame, padded for ``kernel``."""
    model = GaussianModel(reference.ndim, 4.0, full_covariance, shift)
    loss = get_loss(loss) if isinstance(loss, str) else loss
    return Problem(reference[None], target, None, Settings(model, loss, gain_offset),
                   model.pad_radius([kernel]), None)


# (a) the diagonal, centred kernel is scipy's gaussian_filter ------------------------------------
@pytest.mark.parametrize("sigma, truncate", [((2.0, 1.3), 4.0), ((0.7, 3.1), 2.5), ((1.0, 1.0), 6.0)])
def test_diagonal_kernel_is_gaussian_filter_2d(cam, sigma, truncate):
    kernel = GaussianKernel.from_sigma(sigma)
    assert kernel.is_diagonal_centred
    expected = ndimage.gaussian_filter(cam, sigma, mode="reflect", truncate=truncate)
    np.testing.assert_allclose(kernel.apply(cam, truncate), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sigma, truncate", [((1.0, 2.0, 1.5), 4.0), ((2.2, 0.8, 0.8), 3.0)])
def test_diagonal_kernel_is_gaussian_filter_3d(vol, sigma, truncate):
    kernel = GaussianKernel.from_sigma(sigma)
    expected = ndimage.gaussian_filter(vol, sigma, mode="reflect", truncate=truncate)
    np.testing.assert_allclose(kernel.apply(vol, truncate), expected, rtol=0, atol=1e-12)


# (b) shift sign: the target is the reference moved by +mu ----------------------------------------
def test_shift_follows_ndimage_shift(cam):
    mu = np.array([1.4, -2.3])
    expected = ndimage.shift(ndimage.gaussian_filter(cam, 2.0), mu, order=3)
    inner = (slice(20, -20), slice(20, -20))
    err = np.abs(GaussianKernel.from_sigma([2.0, 2.0], mu).apply(cam) - expected)[inner].max()
    wrong = np.abs(GaussianKernel.from_sigma([2.0, 2.0], -mu).apply(cam) - expected)[inner].max()
    assert err < 2e-3 < wrong


# (c) parameterisations round trip ----------------------------------------------------------------
def test_log_cholesky_round_trip():
    rng = np.random.default_rng(0)
    for d in (2, 3):
        params = rng.normal(size=d * (d + 1) // 2)
        kernel = GaussianKernel.from_cholesky(params)
        np.testing.assert_allclose(kernel.cholesky, params, atol=1e-12)
        assert np.linalg.eigvalsh(kernel.covariance)[0] > 0


def test_basicsr_triple_round_trip():
    triple = (3.0, 1.0, 0.6)
    kernel = GaussianKernel.from_basicsr(*triple)
    np.testing.assert_allclose(tuple(kernel.basicsr()), triple, atol=1e-12)
    # theta turns from +x (columns) towards +y (rows): at 90 deg the major axis runs along the rows
    turned = GaussianKernel.from_basicsr(3.0, 1.0, np.pi / 2)
    np.testing.assert_allclose(turned.covariance, np.diag([9.0, 1.0]), atol=1e-12)
    # any triple gives the canonical one (sigma_x >= sigma_y, theta in (-pi/2, pi/2])
    same = GaussianKernel.from_basicsr(1.0, 3.0, 0.6 - np.pi / 2)
    np.testing.assert_allclose(tuple(same.basicsr()), triple, atol=1e-12)
    np.testing.assert_allclose(kernel.sigma, np.sqrt(np.diag(kernel.covariance)))


# (d) analytic kernel derivatives -----------------------------------------------------------------
@pytest.mark.parametrize("d", [2, 3])
def test_kernel_derivatives_match_finite_differences(d):
    rng = np.random.default_rng(d)
    chol = np.r_[np.log(rng.uniform(1.0, 2.0, d)), rng.normal(0, 0.4, d * (d - 1) // 2)]
    shift = rng.normal(0, 0.7, d)
    kernel = GaussianKernel.from_cholesky(chol, shift)
    analytic = kernel.derivatives()
    theta, nc, h = np.r_[chol, shift], len(chol), 1e-6
    for p in range(len(theta)):
        step = np.zeros(len(theta))
        step[p] = h
        plus = GaussianKernel.from_cholesky((theta + step)[:nc], (theta + step)[nc:]).sampled()
        minus = GaussianKernel.from_cholesky((theta - step)[:nc], (theta - step)[nc:]).sampled()
        assert plus.shape == analytic[p].shape
        np.testing.assert_allclose(analytic[p], (plus - minus) / (2 * h), atol=1e-8)


@pytest.mark.parametrize("d, isotropic, loss", [(2, False, "l2"), (2, True, "huber"), (3, False, "l1"),
                                                (3, True, "l2")])
def test_separable_gradient_is_the_lag_correlations(cam, vol, d, isotropic, loss, monkeypatch):
    """A factorising kernel's gradient by one forward FFT (`axis_correlation`) is the general one.

    Two frames, a shift, gain and offset; against the lag correlation's gradient (a kernel the
    model cannot factorise takes that path) and, for the smooth losses, finite differences.
    """
    rng = np.random.default_rng(20 + d)
    image = (cam if d == 2 else vol[:, :40, :40])
    reference = np.stack([image, image[::-1].copy()])
    sigma = (1.7,) * d if isotropic else (1.3, 2.1, 1.6)[:d]
    kernel = GaussianKernel.from_sigma(sigma, rng.normal(0, 0.6, d))
    target = np.stack([0.9 * kernel.apply(f) + 0.1 for f in reference]) + rng.normal(0, 0.01, reference.shape)
    model = GaussianModel(d, 4.0, shift=True, isotropic=isotropic)
    settings = Settings(model, get_loss(loss).for_noise(0.01), gain_offset=True)
    problem = Problem(reference, target, None, settings, model.pad_radius([kernel]), None)
    trial = GaussianKernel.from_sigma(np.array(sigma) * 1.1, kernel.shift + 0.2)
    x, gain, offset = model.params(trial), 0.85, 0.12
    point = problem.evaluate(x, gain, offset)
    assert model.axis_derivatives(trial) is not None
    fast = problem.normal(point, matrix=False).gradient
    monkeypatch.setattr(GaussianModel, "axis_derivatives", lambda self, kernel: None)  # the lag path
    general = problem.normal(problem.evaluate(x, gain, offset), matrix=False).gradient
    np.testing.assert_allclose(fast, general, rtol=1e-9, atol=1e-9 * np.abs(general).max())
    h = 1e-6
    for p in range(len(x) if loss != "l1" else 0):  # L1's kinks (smoothed at 1e-5) bend a difference
        step = np.zeros(len(x))
        step[p] = h
        up, down = problem.evaluate(x + step, gain, offset), problem.evaluate(x - step, gain, offset)
        slope = (up.loss - down.loss) / (2 * h)
        assert fast[p] == pytest.approx(slope, rel=1e-4, abs=1e-6 * np.abs(fast).max())


@pytest.mark.parametrize("d, isotropic, gain_offset", [(2, False, True), (3, False, True), (3, True, False)])
def test_statistics_grams_of_a_factorising_kernel_are_the_stacked_ones(d, isotropic, gain_offset):
    """`KernelSpace`'s Grams from the factors' line spectra equal those of the derivative kernels."""
    rng = np.random.default_rng(30 + d)
    model = GaussianModel(d, 4.0, shift=True, isotropic=isotropic)
    sigma = (1.4,) * d if isotropic else (2.2, 1.1, 1.6)[:d]
    kernel = GaussianKernel.from_sigma(sigma, rng.normal(0, 0.7, d))
    sampled = model.sampled(kernel)
    t = rng.random(tuple(2 * n - 1 for n in sampled.shape))
    t = t + t[(slice(None, None, -1),) * d]  # T is even
    space = KernelSpace.__new__(KernelSpace)
    space.settings, space.workers = Settings(model, get_loss("l2"), gain_offset), None
    stack = model.derivatives(kernel)
    stack = np.concatenate([stack, sampled[None]]) if gain_offset else stack
    want = space._grams(t, stack)
    got = space._axis_grams(t, *model.axis_derivatives(kernel), with_kernel=gain_offset)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())


def test_statistics_on_the_images_grid_are_its_gauss_newton_matrix():
    """`KernelSpace.on_grid` (lags past the grid's margin wrap) against the exact ``J^T J``.

    A kernel reaching 0.35 of the axial length, shifted, with gain and offset, on a 3D volume of
    real texture: every entry within 8% of the diagonal's scale (6.2% measured; the box sums taken
    as the reference's mean at every lag move the offset's column most).
    """
    volume = textured((48, 96, 96), seed=3)
    kernel = GaussianKernel.from_sigma((4.0, 1.2, 1.5), (0.6, -0.4, 0.3))
    model = GaussianModel(3, 4.0, shift=True)
    settings = Settings(model, get_loss("l2"), True)
    target = (0.9 * kernel.apply(volume) + 0.1)[None]
    problem = Problem(volume[None], target, None, settings, strategy.chord_radius(settings, [kernel]), None)
    exact = problem.gauss_newton(problem.evaluate(model.params(kernel), 0.9, 0.1))
    approx = KernelSpace.on_grid(problem, kernel).matrix_at(kernel, 0.9)
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
    assert np.abs((approx - exact) / scale).max() < 0.08


def test_estimate_shift(cam):
    mu = np.array([0.37, -1.62])
    target = GaussianKernel.from_basicsr(2.5, 1.2, 0.5, mu).apply(cam)
    np.testing.assert_allclose(estimate_shift(cam, target), mu, atol=0.06)


# (e) accuracy on real images ---------------------------------------------------------------------
def test_full_covariance_and_shift_2d(cam):
    rng = np.random.default_rng(1)
    true = GaussianKernel.from_basicsr(3.0, 1.2, 0.7, (0.4, -1.1))
    target = _noisy(0.8 * true.apply(cam) + 0.05, rng)
    fit = fit_whole_gaussian(cam, target, loss="l2", gain_offset=True, full_covariance=True, shift=True,
                             start_sigma=(2.0, 2.0))
    assert _rel_frobenius(fit.kernel.covariance, true.covariance) < 0.01
    np.testing.assert_allclose(fit.kernel.shift, true.shift, atol=0.03)
    assert abs(fit.gain - 0.8) < 0.01 and abs(fit.offset - 0.05) < 0.01
    assert np.all(np.isfinite(fit.covariance_stderr)) and np.all(fit.shift_stderr < 0.03)


@pytest.mark.slow
def test_full_covariance_and_shift_3d(vol):
    rng = np.random.default_rng(2)
    cov = np.array([[2.0, 0.5, 0.0], [0.5, 2.5, -0.6], [0.0, -0.6, 1.5]])
    true = GaussianKernel(cov, (0.5, -0.3, 0.8))
    target = _noisy(1.2 * true.apply(vol) - 0.1, rng)
    fit = fit_whole_gaussian(vol, target, gain_offset=True, full_covariance=True, shift=True,
                             start_sigma=(1.4, 1.4, 1.4))
    assert _rel_frobenius(fit.kernel.covariance, true.covariance) < 0.01
    np.testing.assert_allclose(fit.kernel.shift, true.shift, atol=0.03)


@pytest.mark.parametrize("loss", ["l1", "huber"])
def test_robust_losses_with_impulse_noise(cam, loss):
    rng = np.random.default_rng(3)
    true = GaussianKernel.from_basicsr(2.5, 1.5, -0.4, (-0.6, 0.9))
    target = _noisy(0.9 * true.apply(cam) + 0.1, rng)
    hit = rng.random(cam.shape) < 0.02
    target[hit] = rng.choice([0.0, 1.5], size=hit.sum())
    fit = fit_whole_gaussian(cam, target, loss=loss, gain_offset=True, full_covariance=True, shift=True,
                             start_sigma=(2.0, 2.0))
    assert _rel_frobenius(fit.kernel.covariance, true.covariance) < 0.02
    np.testing.assert_allclose(fit.kernel.shift, true.shift, atol=0.05)


@pytest.mark.parametrize("loss", ["l1", "huber"])
def test_chord_ladder_through_a_middle_crop_matches_the_direct_path(cam, loss, monkeypatch):
    """Large images rehearse the chord steps on a middle crop; shrunk here to run on 160^2."""
    rng = np.random.default_rng(11)
    true = GaussianKernel.from_basicsr(2.5, 1.5, -0.4, (-0.6, 0.9))
    target = _noisy(0.9 * true.apply(cam) + 0.1, rng)
    hit = rng.random(cam.shape) < 0.02
    target[hit] = rng.choice([0.0, 1.5], size=hit.sum())
    kwargs = dict(loss=loss, gain_offset=True, full_covariance=True, shift=True, start_sigma=(2.0, 2.0))
    monkeypatch.setitem(strategy.CROP_EDGE, 2, 48)
    direct = fit_whole_gaussian(cam, target, **kwargs)  # the middle crop (1024) is the image
    monkeypatch.setitem(strategy.MIDDLE_EDGE, 2, 80)
    ladder = fit_whole_gaussian(cam, target, **kwargs)
    assert ladder.loss_sum <= direct.loss_sum * (1 + 1e-6)
    assert _rel_frobenius(ladder.kernel.covariance, true.covariance) < 0.02
    np.testing.assert_allclose(ladder.kernel.shift, true.shift, atol=0.05)


def test_axis_aligned_blur_with_full_covariance(cam):
    rng = np.random.default_rng(4)
    true = GaussianKernel.from_sigma((2.5, 1.5))
    target = _noisy(true.apply(cam), rng)
    full = fit_whole_gaussian(cam, target, full_covariance=True, shift=False, start_sigma=(2.0, 2.0))
    per_axis = fit_whole_gaussian(cam, target, full_covariance=False, shift=False, start_sigma=(2.0, 2.0))
    assert abs(full.kernel.covariance[0, 1]) < 3 * full.covariance_stderr[0, 1] + 1e-3
    np.testing.assert_allclose(full.kernel.sigma, per_axis.kernel.sigma, rtol=3e-3)
    np.testing.assert_allclose(per_axis.kernel.sigma, (2.5, 1.5), rtol=5e-3)


def test_mask_and_nan_pixels(cam):
    rng = np.random.default_rng(5)
    true = GaussianKernel.from_basicsr(2.0, 1.0, 0.3, (0.5, 0.5))
    target = _noisy(true.apply(cam), rng)
    used = np.ones(cam.shape, bool)
    used[:40] = False
    target[:40] = 99.0  # garbage where the mask excludes pixels
    target[100, 100] = np.nan
    fit = fit_whole_gaussian(cam, target, used, full_covariance=True, start_sigma=(1.5, 1.5))
    assert fit.n_used == used.sum() - 1
    assert _rel_frobenius(fit.kernel.covariance, true.covariance) < 0.02


# (f) global: never worse than multi-start least_squares on the same model -------------------------
def _least_squares_best(reference, target, starts):
    def residual(theta):
        kernel = GaussianKernel.from_cholesky(theta[:3], theta[3:])
        return (kernel.apply(reference) - target).ravel()

    best = min((optimize.least_squares(residual, s, x_scale="jac") for s in starts), key=lambda r: r.cost)
    return 2 * best.cost


def _line_kernel(length, angle_deg, size=15):
    kernel = np.zeros((size, size))
    c = size // 2
    for t in np.linspace(-length / 2, length / 2, 4 * length):
        y = c + t * np.sin(np.radians(angle_deg))
        x = c + t * np.cos(np.radians(angle_deg))
        kernel[int(round(y)), int(round(x))] += 1
    return kernel / kernel.sum()


def _disk_kernel(radius, centre=(0.0, 0.0)):
    n = int(np.ceil(radius + np.abs(centre).max())) + 1
    y, x = np.mgrid[-n : n + 1, -n : n + 1]
    kernel = ((y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius**2).astype(float)
    return kernel / kernel.sum()


@pytest.mark.parametrize("name", ["gaussian", "motion", "disk"])
def test_never_worse_than_multistart_least_squares(name):
    reference = _crop(data.camera(), 64, 200, 220) / 255.0
    rng = np.random.default_rng(6)
    if name == "gaussian":
        clean = GaussianKernel.from_basicsr(2.5, 1.0, 0.9, (0.6, -0.4)).apply(reference)
    else:
        kernel = _line_kernel(9, 30) if name == "motion" else _disk_kernel(3.0, (0.7, -0.5))
        clean = ndimage.convolve(reference, kernel, mode="reflect")
    target = _noisy(clean, rng)
    fit = fit_whole_gaussian(reference, target, full_covariance=True, shift=True, start_sigma=(1.5, 1.5))
    starts = [np.r_[np.log(1.5), np.log(1.5), rho, 0.0, 0.0] for rho in (0.0, 0.8, -0.8)]
    reference_loss = _least_squares_best(reference, target, starts)
    assert fit.loss_sum <= reference_loss * (1 + 1e-4)


# (g) the probe -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def probe_image():
    return _crop(data.camera(), 256) / 255.0


def test_probe_warns_on_shift_and_ellipse(probe_image):
    rng = np.random.default_rng(7)
    shifted = _noisy(GaussianKernel.from_sigma((2.0, 2.0), (1.0, 0.0)).apply(probe_image), rng)
    probe = probe_model(probe_image, shifted)
    assert probe.misaligned and not probe.elliptical and len(probe.notes) == 1
    ellipse = _noisy(GaussianKernel.from_basicsr(3.0, 1.0, np.pi / 4).apply(probe_image), rng)
    probe = probe_model(probe_image, ellipse)
    assert probe.rotated and not probe.misaligned and "full_covariance" in probe.notes[0]
    assert abs(probe.angle - 45) < 2


def test_probe_silent_on_clean_round_pair(probe_image):
    rng = np.random.default_rng(8)
    target = _noisy(GaussianKernel.from_sigma((2.0, 2.0)).apply(probe_image), rng)
    probe = probe_model(probe_image, target, start_sigma=(2.0, 2.0))
    assert probe.notes == () and not (probe.misaligned or probe.elliptical)


# (h) clear errors --------------------------------------------------------------------------------
def test_too_small_images_raise():
    rng = np.random.default_rng(9)
    with pytest.raises(ValueError, match="at least 8 pixels"):
        fit_whole_gaussian(rng.random((6, 40)), rng.random((6, 40)), start_sigma=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"sigma \(3, 3\) px does not fit the image \(spatial shape \(12,"):
        fit_whole_gaussian(rng.random((12, 12)), rng.random((12, 12)), start_sigma=(3.0, 3.0))
    with pytest.raises(ValueError, match="loss must be"):
        fit_whole_gaussian(rng.random((32, 32)), rng.random((32, 32)), loss="l3", start_sigma=(1.0, 1.0))


# (i) the large-image L2 path (kernel-space matrix, float32 FFTs) agrees with the exact-matrix path -
def test_large_image_path_matches_exact_path(cam, monkeypatch):
    rng = np.random.default_rng(10)
    true = GaussianKernel.from_basicsr(2.6, 1.3, 0.5, (0.6, -0.8))
    target = _noisy(0.9 * true.apply(cam) + 0.02, rng)
    kwargs = dict(gain_offset=True, full_covariance=True, shift=True, start_sigma=(2.0, 2.0))
    exact = fit_whole_gaussian(cam, target, **kwargs)
    monkeypatch.setattr(strategy, "EXACT_MATRIX_PIXELS", 0)
    monkeypatch.setattr(strategy, "FLOAT32_PIXELS", 0)
    monkeypatch.setitem(strategy.CROP_EDGE, 2, 96)
    fast = fit_whole_gaussian(cam, target, **kwargs)
    assert fast.loss_sum <= exact.loss_sum * (1 + 1e-5)
    assert _rel_frobenius(fast.kernel.covariance, true.covariance) < 0.01
    np.testing.assert_allclose(fast.kernel.shift, true.shift, atol=0.03)
    np.testing.assert_allclose(fast.covariance_stderr, exact.covariance_stderr, rtol=0.2)


# (j) the full-image stage's building blocks: separable spectra, folded gain/offset, lag sums ------
def test_diagonal_kernels_factorise_shifted_or_not():
    rng = np.random.default_rng(12)
    for d in (2, 3):
        kernel = GaussianKernel(np.diag(rng.uniform(0.8, 2.5, d) ** 2), rng.uniform(-1.2, 1.2, d))
        outer = np.ones(())
        for factor in kernel.factors(3.5):
            outer = np.multiply.outer(outer, factor)
        np.testing.assert_allclose(outer, kernel.sampled(3.5), rtol=1e-12, atol=1e-17)
    assert GaussianKernel.from_basicsr(2.0, 1.0, 0.3).factors() is None


@pytest.mark.parametrize("shape", [(2, 40, 52), (1, 14, 18, 22)])
def test_model_from_factors_with_gain_and_offset_is_the_plain_convolution(shape):
    rng = np.random.default_rng(13)
    d = len(shape) - 1
    reference = rng.random(shape)
    kernel = GaussianKernel(np.diag(rng.uniform(0.8, 1.6, d) ** 2), rng.uniform(-1.0, 1.0, d))
    spectrum = ReferenceSpectrum(reference, tuple(r + 2 for r in kernel.grid().radius), None)
    plain = spectrum.model(kernel.sampled()).copy()
    np.testing.assert_allclose(plain, kernel.apply(reference), rtol=0, atol=1e-12)  # reflect borders
    folded = spectrum.model(kernel.sampled(), kernel.factors(), gain=0.7, offset=-0.3)
    np.testing.assert_allclose(folded, 0.7 * plain - 0.3, rtol=0, atol=1e-12)


def test_lag_correlation_is_the_direct_sum_over_the_padded_reference():
    rng = np.random.default_rng(14)
    reference, image = rng.random((2, 30, 41)), rng.normal(size=(2, 30, 41))
    radius = (5, 6)
    spectrum = ReferenceSpectrum(reference, radius, None)
    m = spectrum.margin  # the reflect-padded reference, as scipy.ndimage's "reflect" extends it
    padded = np.pad(reference, [(0, 0)] + [(mi, n - mi - size) for mi, n, size in
                                           zip(m, spectrum.lengths, reference.shape[1:])], mode="symmetric")
    corr, total = spectrum.lag_correlation(image, radius,
                                           transform=lambda r, out: np.clip(r, -0.5, 0.5, out=out))
    clipped = np.clip(image, -0.5, 0.5)
    direct = np.zeros(corr.shape)
    for index in np.ndindex(*corr.shape):
        lag = [i - r for i, r in zip(index, radius)]
        moved = (slice(None),) + tuple(slice(mi - n, mi - n + size)
                                       for mi, n, size in zip(m, lag, image.shape[1:]))
        direct[index] = np.sum(clipped * padded[moved])  # c[n] = sum_x f(x) A_pad(x + m - n)
    np.testing.assert_allclose(corr, direct, rtol=0, atol=1e-10 * np.abs(direct).max())
    assert total == pytest.approx(clipped.sum(), abs=1e-10)


def test_a_step_the_matrix_underestimates_is_cut_back_once_not_damped_four_times(cam):
    """A crop's matrix scaled to an image of other content can miss the curvature many times over."""
    rng = np.random.default_rng(15)
    true = GaussianKernel.from_basicsr(2.2, 1.4, 0.4, (0.5, -0.3))
    target = _noisy(true.apply(cam), rng)[None]
    problem = _problem(cam, target, "l2", full_covariance=True, shift=True, kernel=true)
    start = GaussianKernel.from_basicsr(2.0, 1.6, 0.2, (0.3, -0.1))
    point = problem.evaluate(problem.model.params(start), 1.0, 0.0)
    normal = problem.normal(point, matrix=True)
    before = problem.evaluations
    trial, _ = damped_step(problem, point, normal.matrix / 30.0, normal.gradient, 1e-4)
    assert trial is not None and trial.loss < point.loss
    assert problem.evaluations - before <= 2


@pytest.mark.parametrize("loss", ["l1", "huber"])
def test_float32_chord_of_a_robust_loss_matches_the_exact_path(cam, loss, monkeypatch):
    """Large images run the chord in float32 and keep its joint gain/offset (no exact polish)."""
    rng = np.random.default_rng(16)
    true = GaussianKernel.from_basicsr(2.4, 1.4, 0.5, (0.6, -0.7))
    target = _noisy(0.85 * true.apply(cam) + 0.05, rng)
    hit = rng.random(cam.shape) < 0.02
    target[hit] = rng.choice([0.0, 1.5], size=hit.sum())
    kwargs = dict(loss=loss, gain_offset=True, full_covariance=True, shift=True, start_sigma=(2.0, 2.0))
    monkeypatch.setitem(strategy.CROP_EDGE, 2, 64)
    exact = fit_whole_gaussian(cam, target, **kwargs)  # float64, gain/offset polished exactly
    monkeypatch.setattr(strategy, "FLOAT32_PIXELS", 0)
    fast = fit_whole_gaussian(cam, target, **kwargs)
    assert fast.loss_sum <= exact.loss_sum * (1 + 1e-5)
    assert fast.gain == pytest.approx(exact.gain, rel=1e-3)
    assert fast.offset == pytest.approx(exact.offset, abs=1e-3)
    assert _rel_frobenius(fast.kernel.covariance, true.covariance) < 0.02
    np.testing.assert_allclose(fast.kernel.shift, true.shift, atol=0.05)


@pytest.mark.parametrize("loss, tolerance", [("l1", 0.05), ("huber", 0.01)])
def test_robust_loss_matrix_is_the_hessian_of_the_loss(cam, loss, tolerance):
    """The L1/Huber matrix is the loss's Hessian (finite differences of the exact gradient).

    IRLS weights, the majoriser used before, overstated the L1 Hessian 7-10x here (Huber 1.17x):
    chord steps that short crept along flat valleys.
    """
    rng = np.random.default_rng(17)
    true = GaussianKernel.from_basicsr(2.2, 1.4, 0.4, (0.5, -0.3))
    target = _noisy(0.9 * true.apply(cam) + 0.05, rng, 0.01)[None]
    problem = _problem(cam, target, loss, gain_offset=True, full_covariance=True, shift=True, kernel=true)
    noise = strategy.noise_scale(problem.evaluate(problem.model.params(true), 0.9, 0.05), problem)
    problem = _problem(cam, target, problem.loss.for_noise(noise), gain_offset=True,
                       full_covariance=True, shift=True, kernel=true)
    x0 = np.r_[problem.model.params(true), 0.9, 0.05]
    k = len(x0) - 2
    matrix = problem.normal(problem.evaluate(x0[:k], *x0[k:]), matrix=True).matrix
    steps = np.r_[np.full(k, 0.02), 0.002, 0.002]
    columns = []
    for i, h in enumerate(steps):
        grads = []
        for sign in (1, -1):
            x = x0.copy()
            x[i] += sign * h
            grads.append(problem.normal(problem.evaluate(x[:k], *x[k:]), matrix=False).gradient)
        columns.append((grads[0] - grads[1]) / (2 * h))
    hessian = np.array(columns).T
    hessian = 0.5 * (hessian + hessian.T)
    assert np.linalg.norm(matrix - hessian) < tolerance * np.linalg.norm(hessian)


@pytest.mark.parametrize("loss", ["l1", "huber"])
def test_a_two_valued_residual_falls_back_to_irls_weights(cam, loss):
    """No pixel inside the curvature window: the IRLS weights stand in (finite, positive)."""
    two_valued = np.abs(np.where(np.random.default_rng(18).random(cam.shape) < 0.5, -0.2, 0.2))
    weights = get_loss(loss, delta=0.01).hessian_weights(two_valued, 0.2, None, two_valued.size)
    expected = 0.01 / 0.2 if loss == "huber" else 1.0 / 0.2  # min(1, delta/|r|), 1/max(|r|, eps)
    np.testing.assert_allclose(weights, expected, rtol=1e-12)


def test_residual_buffers_are_reused_but_never_under_a_live_point(cam):
    """Evaluations take turns on a few residual buffers; a point still held keeps its own."""
    kernel = GaussianKernel(np.diag([2.0, 3.0]), (0.2, -0.1))
    problem = _problem(cam, kernel.apply(cam)[None], "l1", full_covariance=True, shift=True, kernel=kernel)
    x = problem.model.params(kernel)
    first, second = problem.evaluate(x, 1.0, 0.0), problem.evaluate(x + 0.1, 1.0, 0.0)
    kept = first.residual.copy(), second.residual.copy()
    third = problem.evaluate(x - 0.1, 1.0, 0.0)
    assert not np.shares_memory(third.residual, first.residual)
    assert not np.shares_memory(third.residual, second.residual)
    np.testing.assert_array_equal(first.residual, kept[0])
    np.testing.assert_array_equal(second.residual, kept[1])
    memory = second.residual.base  # the buffer outlives the point that used it
    del second
    fourth = problem.evaluate(x + 0.2, 1.0, 0.0)
    assert np.shares_memory(fourth.residual, memory)
    np.testing.assert_array_equal(first.residual, kept[0])
    assert fourth.loss == pytest.approx(problem.evaluate(x + 0.2, 1.0, 0.0).loss, rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["l1", "huber"])
def test_3d_middle_crop_matrix_matches_the_direct_path(volume, loss, monkeypatch):
    """In 3D the full volume's chord takes the middle crop's own matrix; shrunk here to 24 x 96 x 96."""
    rng = np.random.default_rng(21)
    cov = np.array([[2.0, 0.4, 0.0], [0.4, 3.0, -0.6], [0.0, -0.6, 2.2]])
    true = GaussianKernel(cov, (0.3, -0.5, 0.4))
    target = 0.9 * true.apply(volume) + 5.0 + rng.normal(0, 2.0, volume.shape)
    hit = rng.random(volume.shape) < 0.02
    target[hit] = rng.choice([0.0, 300.0], size=hit.sum())
    kwargs = dict(loss=loss, gain_offset=True, full_covariance=True, shift=True, start_sigma=(1.5,) * 3)
    monkeypatch.setitem(strategy.CROP_EDGE, 3, 32)
    direct = fit_whole_gaussian(volume, target, **kwargs)  # the middle crop (128) is the volume
    monkeypatch.setitem(strategy.MIDDLE_EDGE, 3, 48)
    monkeypatch.setitem(strategy.REMATRIX_STEPS, 3, 0)  # whatever the middle crop's step count
    ladder = fit_whole_gaussian(volume, target, **kwargs)
    assert ladder.loss_sum <= direct.loss_sum * (1 + 1e-6)
    # the two answers agree within the fit's own uncertainty (L1 on 2e5 noisy voxels: 0.5% here)
    assert np.all(np.abs(ladder.kernel.covariance - direct.kernel.covariance)
                  <= 3 * ladder.covariance_stderr)
    assert _rel_frobenius(ladder.kernel.covariance, cov) < 0.04
    np.testing.assert_allclose(ladder.kernel.shift, true.shift, atol=0.05)


def test_float32_kernel_spectrum_keeps_the_kernel_sum_exactly():
    """Its zero frequency is the kernel's sum, not the float32 transforms' rounding of it.

    That rounding (an ulp, 6e-8 to 1.2e-7, for some kernels and not their neighbours) is a gain
    that jumps from kernel to kernel: an L1 loss weighs it by sum sign(r) m and jumped by 1e-6
    of itself between neighbouring kernels of the 3D benchmark, ten times the float32 rounding
    its chord steps allow for.
    """
    rng = np.random.default_rng(23)
    for d, shape in [(2, (1, 96, 112)), (3, (1, 24, 40, 48))]:
        reference = rng.random(shape).astype(np.float32)
        for _ in range(20):
            c = rng.normal(size=(d, d))
            kernel = GaussianKernel(c @ c.T + 2.0 * np.eye(d), rng.uniform(-1.0, 1.0, d))
            radius = GaussianModel(d).pad_radius([kernel])
            spectrum = ReferenceSpectrum(reference, radius, None, dtype=np.float32)
            sampled = 0.7 * kernel.sampled(4.0)
            zero = spectrum.kernel_spectrum(sampled)[(0,) * d]
            assert zero == np.complex64(sampled.sum())  # the sum, rounded once to float32


def test_the_full_image_problem_built_ahead_on_a_thread_gives_the_same_fit(cam, monkeypatch):
    """With two or more cores the full image's problem is built (and paged in) while the crops are
    solved; the answer is the one built in line (one core), to the last bit."""
    import threading

    rng = np.random.default_rng(22)
    true = GaussianKernel.from_basicsr(2.2, 1.4, 0.4, (0.5, -0.3))
    target = 0.9 * true.apply(cam) + 0.05 + rng.normal(0, 0.004, cam.shape)
    # the crop is not the image (the chord path) and 8 kernel radii wide (no band: built ahead)
    monkeypatch.setitem(strategy.CROP_EDGE, 2, 96)
    built_on = []
    build = strategy.chord_problem

    def recorded(*args, **kwargs):
        built_on.append(threading.current_thread())
        return build(*args, **kwargs)

    monkeypatch.setattr(strategy, "chord_problem", recorded)
    kwargs = dict(loss="l1", gain_offset=True, full_covariance=True, shift=True, start_sigma=(2.0, 2.0))
    in_line = fit_whole_gaussian(cam, target, workers=1, **kwargs)
    assert built_on == [threading.main_thread()]
    ahead = fit_whole_gaussian(cam, target, workers=2, **kwargs)
    assert built_on[1] is not threading.main_thread()
    assert ahead.loss_sum == in_line.loss_sum
    np.testing.assert_array_equal(ahead.kernel.covariance, in_line.kernel.covariance)
    np.testing.assert_array_equal(ahead.kernel.shift, in_line.kernel.shift)
    assert _rel_frobenius(ahead.kernel.covariance, true.covariance) < 0.02


def test_a_build_ahead_reports_its_error_when_its_result_is_asked_for():
    def build():
        raise MemoryError("no room for the full image")

    result = strategy.prefetch(build, 2)
    with pytest.raises(MemoryError, match="no room for the full image"):
        result()
    assert strategy.prefetch(build, 1) is build  # one core: nothing runs ahead


def test_a_kernel_too_large_for_the_image_fails_before_anything_is_built(cam, monkeypatch):
    """The check comes before the full image's problem is built ahead, in the user's terms."""
    started = []
    monkeypatch.setattr(strategy, "prefetch", lambda build, workers: started.append(build))
    spatial = cam.shape
    with pytest.raises(ValueError, match=rf"sigma \(40, 40\) px does not fit the image \(spatial shape "
                                         rf"\({spatial[0]}, {spatial[1]}\)\).*cut shorter than truncate=4"):
        fit_whole_gaussian(cam, cam, loss="l1", shift=True, start_sigma=(40.0, 40.0), workers=2)
    assert started == []


def test_crops_grow_with_the_kernel(cam, monkeypatch):
    """A kernel wider than the smallest crop is fitted on a crop grown to hold it, not refused."""
    monkeypatch.setitem(strategy.CROP_EDGE, 2, 48)
    true = GaussianKernel(np.diag([7.0, 5.0]) ** 2, (0.6, -0.4))
    target = true.apply(cam)
    fit = fit_whole_gaussian(cam, target, loss="l1", shift=True, start_sigma=(6.0, 6.0))
    assert _rel_frobenius(fit.kernel.covariance, true.covariance) < 0.01
    np.testing.assert_allclose(fit.kernel.shift, true.shift, atol=0.03)


def test_a_kernel_far_narrower_than_a_pixel_samples_to_a_point():
    """A solver's wild trial (sigma 1e-3 px, shifted off the grid) is a point at the nearest
    offset, not 0 / 0 (a NaN kernel and a RuntimeWarning)."""
    from napari_blurfit._gaussian import GaussianKernel

    kernel = GaussianKernel(np.diag([1e-6, 4.0]), (0.3, -0.2))
    sampled = kernel.sampled(4.0)
    assert np.isfinite(sampled).all() and sampled.sum() == pytest.approx(1.0)
    row = np.argmax(sampled.sum(axis=1))
    assert row == sampled.shape[0] // 2  # offset 0, the nearest to 0.3
    factors = kernel.factors(4.0)
    assert all(np.isfinite(f).all() for f in factors)
    np.testing.assert_allclose(np.multiply.outer(*factors), sampled, rtol=1e-9, atol=1e-15)


def test_a_kernel_the_image_cannot_hold_is_refused_even_where_the_grid_would():
    """Every kernel is checked against the image, not only one that outgrows the padded grid.

    The grid grows half as much again as the kernel that needed it, so it held kernels the image
    could not: a misfit 3D fit's crop (a target at 0.8 gain, no gain/offset) ran off to a z
    radius of 88 on 128 planes and failed deep inside the statistics. The solver's damped step
    takes the refusal as too long a step.
    """
    image = data.camera()[:40, :40].astype(np.float64)
    model = GaussianModel(2, 4.0, shift=True)
    settings = Settings(model, get_loss("l2"), False)
    problem = Problem(image[None], image[None], None, settings, (2, 2), None)
    problem.evaluate(model.params(GaussianKernel.from_sigma((3.0, 3.0))), 1.0, 0.0)  # radius 12
    assert problem.spectrum.radius[0] >= 19  # the grid grew past what the image holds
    refused = r"spatial shape \(40, 40\)\) is too small for a kernel of radius \(20, 20\)"
    with pytest.raises(ValueError, match=refused):
        problem.evaluate(model.params(GaussianKernel.from_sigma((5.0, 5.0))), 1.0, 0.0)
