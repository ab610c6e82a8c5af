"""The loss objects (`_losses`) and the best gain/offset under each (`_gain_offset`)."""

import numpy as np
import pytest
from scipy import optimize, special

from napari_blurfit._gain_offset import best_gain_offset
from napari_blurfit._losses import CHUNK, L1, L2, LOSSES, Huber, get_loss


@pytest.fixture(scope="module")
def residual():
    rng = np.random.default_rng(0)
    r = rng.normal(0, 1.0, 3 * CHUNK + 17)
    r[::50] += rng.choice([-8.0, 8.0], r[::50].size)  # outliers: Huber's linear part is used
    return r


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_are_the_textbook_sums(residual, dtype):
    r = residual.astype(dtype)
    r64 = r.astype(np.float64)
    assert L2().value(r) == pytest.approx(np.sum(r64**2), rel=1e-6)
    assert L1().value(r) == pytest.approx(np.sum(np.abs(r64)), rel=1e-6)
    assert Huber(delta=1.3).value(r) == pytest.approx(np.sum(special.huber(1.3, r64)), rel=1e-6)
    # the chunked pass (large contiguous arrays) equals one pass, and leaves the input alone
    before = r.copy()
    assert Huber(delta=1.3).value(r) == pytest.approx(Huber(delta=1.3).value(r[: CHUNK // 2]) +
                                                      Huber(delta=1.3).value(r[CHUNK // 2 :]), rel=1e-9)
    np.testing.assert_array_equal(r, before)


@pytest.mark.parametrize("loss", [L2(), L1(), Huber(delta=1.3), L1(smoothing=1e-9)])
def test_derivative_is_the_derivative_of_the_value(residual, loss):
    """One convention for every loss: ``derivative`` is d rho / d r, elementwise."""
    r = residual[:2000]
    r = r[np.abs(np.abs(r) - loss.delta) > 1e-3]  # away from Huber's kink
    r = r[np.abs(r) > 1e-3]  # and from L1's
    h = 1e-6
    numeric = np.array([(loss.value(np.array([x + h])) - loss.value(np.array([x - h]))) / (2 * h) for x in r])
    np.testing.assert_allclose(loss.derivative(r), numeric, rtol=1e-6, atol=1e-8)


def test_mean_curvature_is_the_mean_second_derivative():
    rng = np.random.default_rng(1)
    r = rng.normal(0, 2.0, 400_000)
    assert L2().mean_curvature(r) == 2.0
    inside = np.mean(np.abs(r) <= 1.5)
    assert Huber(delta=1.5).mean_curvature(r) == pytest.approx(inside, rel=1e-12)
    # L1: rho'' = 2 delta(r), twice the density at zero: 2 / (sqrt(2 pi) 2) for sd 2
    assert L1().mean_curvature(r) == pytest.approx(2 / (np.sqrt(2 * np.pi) * 2.0), rel=0.04)


def test_irls_weights_majorise_the_loss(residual):
    """``w r^2 / 2`` touches rho's curve at the current residual from above: IRLS descends."""
    a = np.abs(residual[:1000])
    for loss, rho in [(Huber(delta=1.3), lambda x: special.huber(1.3, x)), (L1(delta=1e-6), np.abs)]:
        w = loss.irls_weights(a)
        for scale in (0.5, 0.9, 1.1, 2.0):  # the majoriser through (a, rho(a)) lies above rho
            x = scale * a
            quad = rho(a) + 0.5 * w * (x**2 - a**2)
            assert np.all(quad >= rho(x) - 1e-9)
    np.testing.assert_array_equal(L2().irls_weights(a), np.ones_like(a))


def test_huber_threshold_and_l1_smoothing_come_from_the_noise():
    assert Huber().for_noise(2.0).delta == pytest.approx(1.345 * 2.0)
    assert Huber().for_noise(2.0, threshold=0.7).delta == 0.7
    l1 = L1().for_noise(2.0)
    assert l1.delta == l1.smoothing == pytest.approx(2e-3)
    assert L2().for_noise(2.0) == L2()


def test_unknown_loss_is_refused_by_name():
    assert list(LOSSES) == ["l2", "l1", "huber"]
    assert get_loss("huber", delta=0.5) == Huber(delta=0.5)
    with pytest.raises(ValueError, match=r"loss must be one of 'l2', 'l1', 'huber'; got 'l3'"):
        get_loss("l3")


@pytest.mark.parametrize("loss", [L2(), L1(), Huber(delta=0.05)])
def test_best_gain_offset_is_no_worse_than_a_direct_search(loss):
    rng = np.random.default_rng(2)
    model = rng.random(20_000)
    target = 0.8 * model + 0.1 + rng.normal(0, 0.02, model.size)
    target[rng.random(model.size) < 0.05] = 3.0  # outliers
    gain, offset, value = best_gain_offset(loss, model, target, 1.0, 0.0, n_eff=model.size)
    assert value == pytest.approx(loss.value(gain * model + offset - target), rel=1e-9)
    direct = optimize.minimize(lambda p: loss.value(p[0] * model + p[1] - target), [1.0, 0.0],
                               method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12})
    assert value <= direct.fun * (1 + 1e-7)
    if not loss.least_squares:  # the robust losses see through the outliers
        assert gain == pytest.approx(0.8, abs=0.01) and offset == pytest.approx(0.1, abs=0.01)
