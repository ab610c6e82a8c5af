"""The Levenberg-Marquardt solver of whole-kernel fits (`_whole.solver`) on toy problems.

The solver asks a problem only to evaluate points and to give the loss's gradient and Hessian;
these problems are small least-squares and absolute-value fits with known minima.
"""

from typing import NamedTuple

import numpy as np
import pytest

from napari_blurfit._whole.solver import Status, levenberg_marquardt, secant_update


class Point(NamedTuple):
    x: np.ndarray
    gain: float
    offset: float
    loss: float


class Normal(NamedTuple):
    matrix: np.ndarray | None
    gradient: np.ndarray


class Rosenbrock:
    """``sum r^2`` with ``r = (1 - x0, 10 (x1 - x0^2))``: minimum 0 at (1, 1), a curved valley."""

    def __init__(self):
        self.evaluations = 0

    def residual(self, x):
        return np.array([1.0 - x[0], 10.0 * (x[1] - x[0] ** 2)])

    def evaluate(self, x, gain, offset):
        self.evaluations += 1
        r = self.residual(x)
        return Point(np.asarray(x, dtype=float), gain, offset, float(r @ r))

    def normal(self, point, *, matrix):
        jac = np.array([[-1.0, 0.0], [-20.0 * point.x[0], 10.0]])
        r = self.residual(point.x)
        return Normal(2.0 * jac.T @ jac if matrix else None, 2.0 * jac.T @ r)  # rho = r^2


def test_converges_on_a_curved_valley_with_the_exact_matrix():
    problem = Rosenbrock()
    solved = levenberg_marquardt(problem, problem.evaluate(np.array([-1.2, 1.0]), 1.0, 0.0),
                                 refresh=True, max_iter=100, rtol=1e-14)
    np.testing.assert_allclose(solved.point.x, [1.0, 1.0], atol=1e-6)
    assert solved.point.loss < 1e-12
    assert solved.status in (Status.CONVERGED, Status.NO_DESCENT)


def test_chord_steps_with_the_start_matrix_held_converge_by_secant_updates():
    """The start's matrix misses the valley's curvature further on; BFGS updates supply it.

    Held fixed without updates, 200 steps end at (0.81, 0.65) from this start (measured).
    """
    problem = Rosenbrock()
    start = problem.evaluate(np.array([0.5, 0.5]), 1.0, 0.0)
    matrix = problem.normal(start, matrix=True).matrix
    solved = levenberg_marquardt(problem, start, refresh=False, matrix=matrix, max_iter=40, rtol=1e-14)
    np.testing.assert_allclose(solved.point.x, [1.0, 1.0], atol=1e-6)


def test_the_step_budget_is_reported():
    problem = Rosenbrock()
    solved = levenberg_marquardt(problem, problem.evaluate(np.array([-1.2, 1.0]), 1.0, 0.0),
                                 refresh=True, max_iter=2, rtol=1e-14)
    assert solved.status is Status.MAX_ITERATIONS and solved.iterations == 2
    assert solved.point.loss < problem.evaluate(np.array([-1.2, 1.0]), 1.0, 0.0).loss


def test_a_minimum_already_reached_is_no_descent():
    problem = Rosenbrock()
    solved = levenberg_marquardt(problem, problem.evaluate(np.array([1.0, 1.0]), 1.0, 0.0),
                                 refresh=True, max_iter=10)
    assert solved.status is Status.NO_DESCENT and solved.iterations == 0
    np.testing.assert_array_equal(solved.point.x, [1.0, 1.0])


class Bowl:
    """``1 + sum w x^2``: minimum 1 at 0; counts the gradients asked for."""

    def __init__(self):
        self.w, self.gradients = np.array([1.0, 30.0]), 0

    def evaluate(self, x, gain, offset):
        return Point(np.asarray(x, dtype=float), gain, offset, float(1.0 + self.w @ x**2))

    def normal(self, point, *, matrix):
        self.gradients += 1
        return Normal(np.diag(2.0 * self.w) if matrix else None, 2.0 * self.w * point.x)


def test_a_loss_known_to_its_rounding_ends_without_a_gradient_it_cannot_use():
    """With a loss exact to ``precision`` of itself, the chord stops once the next step's decrease
    (extrapolated at the last two steps' rate) or this one's is within the rounding: no gradient
    is taken after the last step, and the loss is within a few roundings of the minimum."""
    problem, precision = Bowl(), 1e-7
    start = problem.evaluate(np.array([0.3, -0.2]), 1.0, 0.0)
    held = np.diag([5.0, 90.0])  # 2.5x and 1.5x the curvature: linear convergence, then secant updates
    solved = levenberg_marquardt(problem, start, refresh=False, matrix=held, max_iter=40, rtol=1e-14,
                                 precision=precision)
    assert solved.status is Status.CONVERGED
    assert problem.gradients == solved.iterations  # one per step taken, none after the last
    assert solved.point.loss - 1.0 <= 5 * precision


class LinearL1:
    """``sum |a x + g - b|`` over (x, gain as a free offset): a robust line fit, minimum known.

    The gradient of ``|r|`` is smoothed within ``eps`` (as the whole-kernel fit's L1), the matrix
    is ``J^T diag(1[|r| < h] / h) J``; the solver steps gain and offset with the parameters.
    """

    def __init__(self, rng):
        self.a = np.linspace(-1, 1, 401)
        self.b = 2.0 * self.a + 0.5 + rng.normal(0, 0.01, self.a.size)
        self.b[::10] += 3.0  # gross outliers L2 would follow
        self.eps = 1e-6

    def evaluate(self, x, gain, offset):
        r = x[0] * self.a + offset - self.b
        return Point(np.asarray(x, dtype=float), gain, offset, float(np.abs(r).sum()))

    def normal(self, point, *, matrix):
        r = point.x[0] * self.a + point.offset - self.b
        psi = np.clip(r / self.eps, -1, 1)
        jac = np.stack([self.a, np.zeros_like(self.a), np.ones_like(self.a)], axis=1)
        grad = jac.T @ psi
        if not matrix:
            return Normal(None, grad)
        h = 0.5 * np.abs(r).mean()
        w = (np.abs(r) < h) / h
        return Normal(jac.T @ (w[:, None] * jac) + 1e-9 * np.eye(3), grad)


def test_an_absolute_value_loss_reaches_its_minimum():
    rng = np.random.default_rng(0)
    problem = LinearL1(rng)
    solved = levenberg_marquardt(problem, problem.evaluate(np.array([0.0]), 1.0, 0.0), refresh=True,
                                 max_iter=60, rtol=1e-12)
    slopes = np.linspace(1.9, 2.1, 401)
    brute = min(min(np.abs(s * problem.a + o - problem.b).sum() for o in np.linspace(0.4, 0.6, 201))
                for s in slopes)
    assert solved.point.loss <= brute * (1 + 1e-4)
    assert solved.point.x[0] == pytest.approx(2.0, abs=0.01)
    assert solved.point.offset == pytest.approx(0.5, abs=0.01)


def test_secant_update_satisfies_the_secant_equation_and_keeps_the_matrix_positive_definite():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 5))
    matrix = a @ a.T + 5 * np.eye(5)
    step = rng.normal(size=5)
    change = (matrix + 2 * np.eye(5)) @ step  # curvature along the step the matrix misses
    updated = secant_update(matrix, step, change)
    np.testing.assert_allclose(updated @ step, change, rtol=1e-12)
    np.testing.assert_allclose(updated, updated.T, rtol=1e-12)
    assert np.linalg.eigvalsh(updated).min() > 0
    # no positive curvature along the step: the matrix is kept as it was
    assert secant_update(matrix, step, -change) is matrix
