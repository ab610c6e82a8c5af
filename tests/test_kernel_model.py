"""The kernel-model interface (`_kernel_model.KernelModel`): the Gaussian's, and a new shape.

The whole-kernel solver knows kernels only through this interface; the last test plugs in a
kernel shape it has never seen (a separable Laplace kernel) and recovers its width.
"""

from dataclasses import dataclass

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from napari_blurfit._gaussian import IDENTIFIABLE_FROM, GaussianKernel, GaussianModel
from napari_blurfit._kernel_model import KernelModel
from napari_blurfit._losses import L2
from napari_blurfit._whole import Problem, Settings
from napari_blurfit._whole.solver import levenberg_marquardt


@pytest.mark.parametrize("ndim, isotropic, full, shift, n_params",
                         [(2, True, False, False, 1), (2, False, False, False, 2), (2, False, True, False, 3),
                          (2, False, True, True, 5), (3, True, False, True, 4), (3, False, True, True, 9)])
def test_parameters_round_trip_through_the_kernel(ndim, isotropic, full, shift, n_params):
    model = GaussianModel(ndim, 4.0, full_covariance=full, shift=shift, isotropic=isotropic)
    assert model.n_params == n_params
    rng = np.random.default_rng(ndim + n_params)
    x = rng.normal(0, 0.3, n_params)
    kernel = model.kernel(x)
    np.testing.assert_allclose(model.params(kernel), x, atol=1e-12)
    assert model.diagonal_in_dct(kernel) == (not full and not shift)
    assert model.radius(kernel) == kernel.grid(4.0).radius
    assert all(p >= 1.5 * r for p, r in zip(model.pad_radius([kernel]), model.radius(kernel)))


@pytest.mark.parametrize("full, shift", [(True, True), (False, True), (True, False)])
def test_derivatives_are_those_of_the_sampled_kernel(full, shift):
    model = GaussianModel(2, 3.0, full_covariance=full, shift=shift)
    x = model.params(GaussianKernel.from_basicsr(2.2, 1.3, 0.4 if full else 0.0, (0.3, -0.2)))
    derivs = model.derivatives(model.kernel(x))
    shape = model.sampled(model.kernel(x)).shape
    for p in range(model.n_params):
        h = np.zeros_like(x)
        h[p] = 1e-6
        up, down = (model.sampled(model.kernel(x + s * h)) for s in (1, -1))
        assert up.shape == down.shape == shape  # the support is fixed for so small a step
        np.testing.assert_allclose(derivs[p], (up - down) / 2e-6, atol=1e-8)


def test_starts_and_standard_errors():
    assert len(GaussianModel(2, full_covariance=True).starts((1.0, 2.0), np.zeros(2))) == 3
    starts = GaussianModel(3, full_covariance=True).starts((0.1, 2.0, 1.0), np.zeros(3))
    assert len(starts) == 7 and starts[0].sigma.min() == IDENTIFIABLE_FROM
    model = GaussianModel(2, full_covariance=True)
    errors = model.standard_errors(GaussianKernel.from_sigma((2.0, 1.0)), np.eye(3) * 1e-4)
    assert errors["covariance"].shape == (2, 2) and np.all(np.isnan(errors["shift"]))
    # sigma^2 = exp(2 log sigma): se(C_00) = 2 sigma^2 se(log sigma) = 2 * 4 * 0.01
    assert errors["covariance"][0, 0] == pytest.approx(0.08)
    with pytest.raises(ValueError, match="exclude each other"):
        GaussianModel(2, full_covariance=True, isotropic=True)


@dataclass(frozen=True)
class LaplaceModel(KernelModel):
    """``K[n] ∝ prod_i exp(-|n_i| / b)``, one width ``b`` (px) for every axis: not a Gaussian."""

    ndim: int
    identity_below = 0.1
    identifiable_from = 0.3

    @property
    def n_params(self):
        return 1

    def kernel(self, params):
        return float(np.exp(params[0]))

    def params(self, kernel):
        return np.array([np.log(kernel)])

    def _factor(self, b):
        n = np.arange(-int(8 * b + 1), int(8 * b + 1) + 1, dtype=float)
        return n, np.exp(-np.abs(n) / b)

    def factors(self, kernel):
        _, f = self._factor(kernel)
        return [f / f.sum()] * self.ndim

    def sampled(self, kernel):
        out = np.ones(())
        for f in self.factors(kernel):
            out = np.multiply.outer(out, f)
        return out

    def derivatives(self, kernel):
        n, f = self._factor(kernel)
        g = f / f.sum()
        dg = g * (np.abs(n) - np.sum(g * np.abs(n))) / kernel  # d g / d log b
        out = np.zeros(self.sampled(kernel).shape)
        for axis in range(self.ndim):
            term = np.ones(())
            for j in range(self.ndim):
                term = np.multiply.outer(term, dg if j == axis else g)
            out += term
        return out[None]

    def starts(self, start_sigma, shift):
        return [float(np.mean(start_sigma))]

    def diagonal_in_dct(self, kernel):
        return True

    def standard_errors(self, kernel, param_covariance):
        return {"width": kernel * np.sqrt(np.diag(param_covariance))}


def test_a_new_kernel_shape_is_fitted_by_the_unchanged_solver():
    image = data.camera()[96:288, 160:352].astype(np.float64) / 255
    model = LaplaceModel(2)
    target = ndimage.convolve(image, model.sampled(1.7), mode="reflect")
    problem = Problem(image[None], target[None], None, Settings(model, L2(), False),
                      model.pad_radius([3.0]), None)
    h = np.array([1e-6])
    numeric = (model.sampled(model.kernel(model.params(1.9) + h)) -
               model.sampled(model.kernel(model.params(1.9) - h))) / 2e-6
    np.testing.assert_allclose(model.derivatives(1.9)[0], numeric, atol=1e-8)
    start = problem.evaluate(model.params(1.0), 1.0, 0.0)
    solved = levenberg_marquardt(problem, start, refresh=True, max_iter=40, rtol=1e-14)
    assert model.kernel(solved.point.x) == pytest.approx(1.7, rel=1e-6)
    assert solved.point.loss < 1e-12 * start.loss
