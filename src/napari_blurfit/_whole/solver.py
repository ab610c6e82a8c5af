"""Levenberg-Marquardt with secant updates, for any problem that evaluates points and gradients.

The solver asks a problem for two things (`Problem` satisfies them; the tests use a toy one):
``evaluate(x, gain, offset)`` returning a point with ``x``, ``gain``, ``offset`` and ``loss``, and
``normal(point, matrix=...)`` returning the loss's gradient over ``[x, gain, offset]`` (gain and
offset only where the problem steps them) and, when asked, its Hessian or a model of it. The
loss is any ``sum rho(r)``: the gradient is its true gradient, so a step's predicted decrease is
``-(g.d + d.M.d / 2)`` whatever the loss.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, NamedTuple

import numpy as np

MAX_STEP = 1.0  # largest change of a kernel parameter (log-Cholesky entry, px of shift) in one step
MAX_TRIES = 12  # trial evaluations per step


class Status(str, Enum):
    """Why the solver stopped."""

    CONVERGED = "converged"  # the last step lowered the loss by less than the tolerance
    NO_DESCENT = "no descent"  # no damped step lowered the loss beyond its rounding: a minimum
    MAX_ITERATIONS = "max iterations"  # stopped by the step budget while still descending


class Solved(NamedTuple):
    """The solver's answer."""

    point: Any
    matrix: np.ndarray  # the last Hessian (or model of it) used, at the point the last step left
    iterations: int  # accepted steps
    status: Status


def levenberg_marquardt(problem, point, *, refresh: bool, max_iter: int,
                        matrix: np.ndarray | None = None, rtol: float = 1e-10,
                        callback=None, precision: float = 0.0) -> Solved:
    """Minimise the loss from ``point``; ``refresh=False`` keeps the first matrix (chord method).

    Without ``refresh`` the matrix gets a BFGS update from each step and the change of the exact
    gradient it caused: the Gauss-Newton matrix misses the curvature of large residuals (a model
    that fits only roughly), a crop's matrix that of other content; the secant supplies it, so the
    chord steps converge in a few iterations instead of linearly. Should no damped step descend
    with the held matrix, the problem's own is taken once (a held matrix can be wrong enough to
    stall: one from statistics, whose edge strips dominate when the kernel spans much of an axis,
    measured so on sparse beads). ``precision``: the loss's relative rounding (a float32 model's
    jitter), below which no decrease is chased.
    """
    normal = problem.normal(point, matrix=matrix is None or refresh)
    if normal.matrix is not None:
        matrix = normal.matrix
    lam, done, status = 1e-4, 0, Status.MAX_ITERATIONS
    held, last_decrease = not refresh, np.inf  # the last accepted step's decrease
    for done in range(1, max_iter + 1):
        if callback is not None:
            callback(f"whole Gaussian: step {done}")
        floor = precision * abs(point.loss)
        trial, lam = damped_step(problem, point, matrix, normal.gradient, lam, floor)
        if trial is None and held and newton_decrease(matrix, normal.gradient) > 10 * max(
                rtol * abs(point.loss), floor):  # far from a minimum: the matrix, not the point
            held, normal = False, problem.normal(point, matrix=True)
            matrix, lam = normal.matrix, 1e-4
            trial, lam = damped_step(problem, point, matrix, normal.gradient, lam, floor)
        if trial is None:
            return Solved(point, matrix, done - 1, Status.NO_DESCENT)
        step = difference(trial, point, len(normal.gradient))
        decrease, point = point.loss - trial.loss, trial
        # the next step's decrease (this one's, at the rate of the last two: the steps converge
        # at least linearly) within the rounding, or this one within twice it: the next could not
        # be told from rounding, and its gradient is a pass or more over the image
        predicted = decrease * decrease / last_decrease if last_decrease < np.inf else np.inf
        if decrease <= max(rtol * abs(point.loss), 2 * floor) or predicted <= floor:
            status = Status.CONVERGED
            break
        last_decrease = decrease
        if done == max_iter:  # the budget is spent: no gradient for a step not taken
            break
        new = problem.normal(point, matrix=refresh)
        matrix = new.matrix if refresh else secant_update(matrix, step, new.gradient - normal.gradient)
        normal = new
    return Solved(point, matrix, done, status)


def difference(a, b, size: int) -> np.ndarray:
    """``a - b`` over the solver's variables: kernel parameters, then gain and offset if stepped."""
    diff = a.x - b.x
    return diff if size == len(diff) else np.r_[diff, a.gain - b.gain, a.offset - b.offset]


def secant_update(matrix: np.ndarray, step: np.ndarray, change: np.ndarray) -> np.ndarray:
    """BFGS update of a positive definite matrix (skipped where the curvature is not positive)."""
    ms = matrix @ step
    sy, sms = float(step @ change), float(step @ ms)
    if sy <= 1e-10 * np.linalg.norm(step) * np.linalg.norm(change) or sms <= 0:
        return matrix
    return matrix - np.outer(ms, ms) / sms + np.outer(change, change) / sy


def damped_step(problem, point, matrix, gradient, lam: float, floor: float = 0.0):
    """One accepted Marquardt step ``(trial, damping)``, or ``(None, damping)``.

    A failed trial is cut back once along its own direction, to the minimum of the parabola
    through the loss, its slope and the trial's loss: where the matrix underestimates the
    curvature (a crop's matrix scaled to an image of other content), that is one more
    evaluation, where raising the damping took four. Further failures raise the damping. A
    step whose predicted decrease is below ``floor`` (the loss's rounding) is not tried: an
    evaluation could not tell it; nor is another after a failed trial that the rounding hid.
    """
    k = len(point.x)
    scale = np.sqrt(np.maximum(np.diag(matrix), 1e-300))
    scaled = matrix / np.outer(scale, scale)
    delta, cut = None, False
    for _ in range(MAX_TRIES):
        if delta is None:
            try:
                delta = -np.linalg.solve(scaled + lam * np.eye(len(scale)), gradient / scale) / scale
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            big = np.abs(delta[:k]).max(initial=0.0)
            if big > MAX_STEP:
                delta *= MAX_STEP / big
        if floor > 0 and predicted_decrease(delta, matrix, gradient) <= floor:
            break
        gain, offset = point.gain, point.offset
        if len(delta) > k:
            gain, offset = gain + delta[k], offset + delta[k + 1]
        try:
            trial = problem.evaluate(point.x + delta[:k], gain, offset)
        except ValueError:  # the kernel outgrew the image: too long a step
            trial = None
        if trial is not None and trial.loss < point.loss:
            return trial, max(lam / 10.0, 1e-12)
        if trial is not None and trial.loss - point.loss <= floor \
                and predicted_decrease(delta, matrix, gradient) <= 10 * floor:
            break  # a change the loss's rounding hides, for a small predicted one: resolved
        slope = float(gradient @ delta)
        if trial is not None and not cut and slope < 0:
            rise = trial.loss - point.loss - slope  # > 0: the parabola's curvature term
            delta = delta * float(np.clip(-slope / (2.0 * rise), 0.05, 0.5))
            cut = True
        else:
            if np.abs(delta[:k]).max(initial=0.0) < 1e-10:  # the step vanished: converged to rounding
                break
            lam, delta = lam * 10.0, None
        trial = None  # let its arrays go before the next trial makes its own
    return None, lam


def newton_decrease(matrix: np.ndarray, gradient: np.ndarray) -> float:
    """Decrease the quadratic model promises for its own minimum, ``g.M^-1.g / 2`` (inf if singular)."""
    try:
        return 0.5 * abs(float(gradient @ np.linalg.solve(matrix, gradient)))
    except np.linalg.LinAlgError:
        return float("inf")


def predicted_decrease(delta: np.ndarray, matrix: np.ndarray, gradient: np.ndarray) -> float:
    """Loss decrease the quadratic model ``g.d + d.M.d / 2`` predicts for a step."""
    return -float(gradient @ delta + 0.5 * delta @ matrix @ delta)
