"""The maths at the heart of the engine, tested where it lives (docs/design.md sections 2-3, 8)."""

import numpy as np
import pytest
from scipy import fft, ndimage

from napari_blurfit._kernels import half_kernels, kernel_radius, transfer
from napari_blurfit._search import grid_brent, grid_zoom, local_minimize
from napari_blurfit._spectral import block_stats, l2_at, l2_grid, normal_matrix


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(7)
    return ndimage.zoom(rng.random((30, 26)), (10, 9.9))  # 300 x 257: odd, not a power of two


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.7, 9.0, 80.0])  # 80: kernel longer than the image
@pytest.mark.parametrize("truncate", [4.0, 2.5])
def test_dct_transfer_equals_scipy_filter(image, sigma, truncate):
    filtered = ndimage.gaussian_filter(image, sigma, mode="reflect", truncate=truncate)
    h = [transfer([sigma], n, truncate)[:, 0] for n in image.shape]
    predicted = np.outer(h[0], h[1]) * fft.dctn(image, norm="ortho")
    np.testing.assert_allclose(predicted, fft.dctn(filtered, norm="ortho"), rtol=0, atol=1e-12)


def test_half_kernel_is_scipys_kernel():
    for sigma in (0.2, 1.0, 3.3):
        g = half_kernels([sigma])[0]
        r = kernel_radius(sigma)
        impulse = np.zeros(2 * r + 1)
        impulse[r] = 1.0
        full = ndimage.gaussian_filter1d(impulse, sigma, mode="constant")
        np.testing.assert_allclose(g[: r + 1], full[r:], rtol=0, atol=1e-15)


def test_transfer_derivative_matches_finite_differences():
    sigma, eps = np.array([1.7]), 1e-6
    _, dh = transfer(sigma, 64, derivative=True)
    numeric = (transfer(sigma + eps, 64) - transfer(sigma - eps, 64)) / (2 * eps)
    np.testing.assert_allclose(dh, numeric, rtol=1e-6, atol=1e-9)


def test_spectral_l2_equals_brute_force_sum(image):
    rng = np.random.default_rng(1)
    frames_a = np.stack([image, image[::-1]])
    frames_b = np.stack([ndimage.gaussian_filter(f, (1.4, 2.2)) * 0.7 + 3 for f in frames_a])
    frames_b += rng.normal(0, 0.01, frames_b.shape)
    stats = block_stats(frames_a, frames_b, 2)
    sigma = (1.1, 2.5)
    models = l2_at(stats, sigma)
    blurred = np.stack([ndimage.gaussian_filter(f, sigma) for f in frames_a])
    plain = np.sum((blurred - frames_b) ** 2)
    assert models[False][0] == pytest.approx(plain, rel=1e-9)
    # with gain/offset: the closed form equals least squares over (gain, offset) in image space
    design = np.stack([blurred.ravel(), np.ones(blurred.size)], axis=1)
    (gain, offset), *_ = np.linalg.lstsq(design, frames_b.ravel(), rcond=None)
    rss = np.sum((design @ [gain, offset] - frames_b.ravel()) ** 2)
    assert models[True][0] == pytest.approx(rss, rel=1e-9)
    assert models[True][1] == pytest.approx(gain, rel=1e-9)
    assert models[True][2] == pytest.approx(offset, rel=1e-9)
    grid = l2_grid(stats, [np.array([1.1, 2.0]), np.array([2.5, 3.0])], joint=False,
                   gain_offset=False)[0]
    assert grid[0, 0] == pytest.approx(plain, rel=1e-9)


def test_normal_matrix_matches_finite_difference_jacobian(image):
    a = image[:64, :80]
    stats = block_stats(a, ndimage.gaussian_filter(a, (1.5, 2.0)), 2)
    sigma, eps = np.array([1.5, 2.0]), 1e-5
    columns = []
    for i in range(2):
        up, down = sigma.copy(), sigma.copy()
        up[i] += eps
        down[i] -= eps
        columns.append((ndimage.gaussian_filter(a, up) - ndimage.gaussian_filter(a, down)).ravel()
                       / (2 * eps))
    jac = np.stack(columns, axis=1)
    jtj = normal_matrix(stats, sigma, 1.0, per_axis=True, gain_offset=False)
    np.testing.assert_allclose(jtj, jac.T @ jac, rtol=1e-5)


def test_grid_zoom_finds_the_global_minimum_of_a_two_well_function():
    # a shallow well near the start of the box and the deep one far away, in log-sigma
    def f(t):
        return (1 - 0.5 * np.exp(-((t - 0.2) ** 2) / 0.01)
                - 0.9 * np.exp(-((t - 2.3) ** 2) / 0.02))

    def evaluate(axes):
        x, y = np.meshgrid(*axes, indexing="ij")
        return f(x) * f(y) + 0.1 * (x - y) ** 2

    best, value, _ = grid_zoom(evaluate, np.array([-2.0, -2.0]), np.array([3.5, 3.5]))
    np.testing.assert_allclose(best, [2.3, 2.3], atol=1e-3)
    assert value == pytest.approx(evaluate([np.array([2.3]), np.array([2.3])])[0, 0], abs=1e-6)


def test_grid_brent_reaches_brent_accuracy():
    def evaluate(axes):
        t = axes[0]
        return np.cos(3 * t) + 0.1 * (t - 1.7) ** 2  # several local minima

    best, value, _ = grid_brent(evaluate, -3.0, 4.0)
    fine = np.linspace(-3, 4, 700001)
    assert value <= evaluate([fine]).min() + 1e-9
    assert best[0] == pytest.approx(fine[np.argmin(evaluate([fine]))], abs=1e-4)


def test_local_minimize_converges_on_a_coupled_quadratic():
    target = np.array([0.3, -0.8])

    def f(t):
        d = t - target
        return float(d @ np.array([[2.0, 0.6], [0.6, 1.0]]) @ d)

    best, value = local_minimize(f, np.array([1.0, 1.0]), np.array([-2.0, -2.0]),
                                 np.array([2.0, 2.0]), cycles=20)
    np.testing.assert_allclose(best, target, atol=2e-3)
    assert value < 1e-5


def test_threaded_accumulate_equals_the_single_threaded_sums():
    """A large frame's products are summed by several threads, each over its own pixels."""
    from napari_blurfit._spectral import SCRATCH_PIXELS, SpectralStats

    rng = np.random.default_rng(19)
    shape = (2, 5 * SCRATCH_PIXELS // 256 + 3, 256)  # two frames, pixels not a multiple of the chunk
    a, b = rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)
    one = SpectralStats.zeros(shape[1:]).accumulate(a, b, workers=1)
    three = SpectralStats.zeros(shape[1:]).accumulate(a, b, workers=3)
    np.testing.assert_array_equal(three.paa, one.paa)
    np.testing.assert_array_equal(three.pab, one.pab)
    assert three.cbb == pytest.approx(one.cbb, rel=1e-12)
    assert three.cbb == pytest.approx(float(np.square(b, dtype=np.float64).sum()), rel=1e-12)
    np.testing.assert_array_equal(three.dc_a, a.reshape(2, -1)[:, 0])


def test_float32_statistics_contract_like_float64_ones():
    """A whole-Gaussian fit's start statistics are summed in float32 and contracted in float64."""
    from napari_blurfit._kernels import transfer
    from napari_blurfit._spectral import CAST_BLOCK, SpectralStats, contract

    rng = np.random.default_rng(22)
    shape = (3, CAST_BLOCK // 200 + 7, 200)  # row blocks that do not divide the rows
    a, b = rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)
    wide = SpectralStats.zeros(shape[1:]).accumulate(a, b)
    narrow = SpectralStats.zeros(shape[1:], np.float32).accumulate(a, b)
    assert narrow.paa.dtype == np.float32 and narrow.compact() is narrow
    np.testing.assert_allclose(narrow.paa, wide.paa, rtol=2e-7)  # a rounding per frame summed
    vectors = [transfer([1.0, 2.5], n, 4.0) for n in shape[1:]]
    for joint in (True, False):
        expected = contract(narrow.paa.astype(np.float64), vectors, joint=joint)
        np.testing.assert_allclose(contract(narrow.paa, vectors, joint=joint), expected, rtol=1e-12)
