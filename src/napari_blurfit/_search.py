"""Global and local minimisation over log-sigma.

Work is in ``t = log(sigma)``: blur scales multiplicatively, so relative steps are the natural unit.
`grid_zoom` is global: a dense grid over the whole box (cheap, because the spectral L2 objective
evaluates a whole grid in one tensor contraction), then grids shrinking around each of the best
local minima; `grid_brent` is its one-dimensional form. `local_minimize` polishes an objective
that costs a filter pass per evaluation (L1, Huber, masked) from the L2 optimum: bracket then
Brent, one axis at a time; `quasi_newton` does the same from values and gradients (in memory).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import ndimage, optimize

CANDIDATE_MARGIN = 0.05  # relative: local minima of the first grid worth zooming into


def _local_minima(values: np.ndarray, count: int) -> list[tuple[int, ...]]:
    """Indices of up to ``count`` lowest grid points that are no higher than their neighbours."""
    finite = np.where(np.isfinite(values), values, np.inf)
    is_min = finite <= ndimage.minimum_filter(finite, size=3, mode="nearest")
    flat = np.flatnonzero(is_min.ravel())
    order = flat[np.argsort(finite.ravel()[flat], kind="stable")][:count]
    return [np.unravel_index(i, values.shape) for i in order]


def grid_zoom(
    evaluate: Callable[[list[np.ndarray]], np.ndarray],
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    first: int = 48,
    points: int = 25,
    candidates: int = 3,
    tol: float = 1e-6,
) -> tuple[np.ndarray, float, list[tuple[np.ndarray, np.ndarray]]]:
    """Minimise over a box in log-sigma with shrinking grids.

    Parameters
    ----------
    evaluate : callable
        Takes one 1-D array of log-sigma values per search dimension and returns the objective on
        their outer grid.
    lower, upper : ndarray
        Box in log-sigma, one entry per search dimension.
    first, points : int
        Grid points per dimension on the first grid and on each zoomed grid.
    candidates : int
        Local minima of the first grid that are each zoomed into.
    tol : float
        Stop when the grid spacing (in log-sigma) is below this.

    Returns
    -------
    best : ndarray
        Log-sigma of the lowest value found.
    value : float
        The objective there.
    grids : list
        Every ``(axes, values)`` evaluated, first grid first (used for profiles).
    """
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    axes = [np.linspace(lo, hi, first) if hi > lo else np.array([lo]) for lo, hi in zip(lower, upper)]
    values = evaluate(axes)
    grids = [(axes, values)]
    best_t, best_v = None, np.inf
    minima = _local_minima(values, candidates)
    lowest = float(values[minima[0]])
    for index in minima:
        if float(values[index]) > lowest + CANDIDATE_MARGIN * abs(lowest):
            continue  # far above the best grid point: a dip between grid points cannot be that deep

        center = np.array([ax[i] for ax, i in zip(axes, index)])
        value = float(values[index])
        width = np.array([(ax[1] - ax[0]) if len(ax) > 1 else 0.0 for ax in axes])
        while np.max(width) > tol:
            zoomed = []
            for c, w, lo, hi in zip(center, width, lower, upper):
                a, b = max(lo, c - w), min(hi, c + w)
                zoomed.append(np.linspace(a, b, points) if b > a else np.array([c]))
            zvalues = evaluate(zoomed)
            zi = np.unravel_index(int(np.nanargmin(zvalues)), zvalues.shape)
            if zvalues[zi] <= value:
                center = np.array([ax[i] for ax, i in zip(zoomed, zi)])
                value = float(zvalues[zi])
            width = width * 2.0 / (points - 1)
        if value < best_v:
            best_t, best_v = center, value
    return best_t, best_v, grids


def grid_brent(
    evaluate: Callable[[list[np.ndarray]], np.ndarray],
    lower: float,
    upper: float,
    *,
    first: int = 32,
    candidates: int = 3,
    xtol: float = 1e-5,
) -> tuple[np.ndarray, float, list[tuple[np.ndarray, np.ndarray]]]:
    """One-dimensional version of `grid_zoom`.

    A dense grid, then bounded Brent between the grid neighbours of each competitive local minimum
    (each Brent step is a single evaluation).
    """
    axis = np.linspace(lower, upper, first) if upper > lower else np.array([lower])
    values = evaluate([axis])
    grids = [([axis], values)]
    minima = _local_minima(values, candidates)
    lowest = float(values[minima[0]])
    best_t, best_v = np.array([axis[minima[0][0]]]), lowest
    for (i,) in minima:
        if float(values[i]) > lowest + CANDIDATE_MARGIN * abs(lowest) or len(axis) < 3:
            continue
        a, b = axis[max(i - 1, 0)], axis[min(i + 1, len(axis) - 1)]
        res = optimize.minimize_scalar(lambda t: float(evaluate([np.array([t])])[0]),
                                       bounds=(a, b), method="bounded", options={"xatol": xtol})
        if res.fun < best_v:
            best_t, best_v = np.array([float(res.x)]), float(res.fun)
    return best_t, best_v, grids


def local_minimize(
    f: Callable[[np.ndarray], float],
    start: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    step: float = 0.02,
    xtol: float = 1e-4,
    cycles: int = 4,
) -> tuple[np.ndarray, float]:
    """Polish ``f`` (of log-sigma) from ``start`` within the box; returns ``(t, f(t))``.

    One axis at a time (bracket, then Brent), cycling until no axis moves by more than a few
    ``xtol``: sigmas of different axes act on different frequency directions, so they are nearly
    independent and a couple of cycles converge, in far fewer evaluations than Nelder-Mead.
    """
    t = np.clip(np.asarray(start, dtype=np.float64), lower, upper)
    value = f(t)
    for _ in range(cycles if t.size > 1 else 1):
        moved = 0.0
        for i in range(t.size):
            def along(x, i=i):
                u = t.copy()
                u[i] = x
                return f(u)
            best, v = _bracket_brent(along, float(t[i]), float(lower[i]), float(upper[i]),
                                     step, xtol)
            if v <= value:
                moved = max(moved, abs(float(best[0]) - t[i]))
                t[i], value = float(best[0]), v
        if moved < 3 * xtol:
            break
        step = max(min(step, 2 * moved), 4 * xtol)
    return t, value


def _bracket_brent(f, t0, lo, hi, step, xtol):
    """Walk downhill from ``t0`` with growing steps until bracketed, then bounded Brent."""
    cache: dict[float, float] = {}

    def g(t):
        t = min(max(t, lo), hi)
        if t not in cache:
            cache[t] = f(t)
        return cache[t]

    left, right = max(lo, t0 - step), min(hi, t0 + step)
    f0 = g(t0)
    while g(left) < f0 and left > lo:  # minimum lies further left
        t0, f0, left = left, g(left), max(lo, left - 2 * (t0 - left))
    while g(right) < f0 and right < hi:
        t0, f0, right = right, g(right), min(hi, right + 2 * (right - t0))
    if right > left:
        res = optimize.minimize_scalar(g, bounds=(left, right), method="bounded",
                                       options={"xatol": xtol})
        if res.fun < f0:
            t0, f0 = float(res.x), float(res.fun)
    best = min(cache, key=cache.get)
    return np.array([best]), cache[best]


class Probe(NamedTuple):
    """What an objective with a gradient returns at one point of the search."""

    value: float
    gradient: np.ndarray  # d value / d t (log-sigma)
    curvature: float  # scale of the loss's Hessian relative to the model Hessian


class _Point(NamedTuple):
    t: np.ndarray
    value: float
    gradient: np.ndarray


def quasi_newton(
    f: Callable[[np.ndarray], Probe],
    start: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    model_hessian: Callable[[np.ndarray], np.ndarray],
    *,
    xtol: float = 1e-5,
    rtol: float = 1e-8,
    max_evals: int = 12,
    max_step: float = 0.5,
) -> tuple[np.ndarray, float]:
    """Minimise ``f`` (of log-sigma, with gradient) from ``start`` within the box: ``(t, f(t))``.

    BFGS started from a model Hessian rather than the identity: ``curvature * model_hessian(t)``
    (the L2 Gauss-Newton matrix scaled by the loss's mean second derivative), so the first step
    is already close to Newton's and a handful of evaluations converge, in 2D and 3D alike.
    Safeguards: steps are capped at ``max_step`` in log-sigma, projected onto the box (bound
    coordinates pushed outward are frozen), and accepted only when the loss decreases
    (backtracking by quadratic interpolation), so the result is never worse than the start.
    Stops when the next step is below ``xtol``, when it promises less than ``rtol`` relative
    decrease (the loss with gain/offset solved on a pixel sample is smooth only to ~1e-9: chasing
    it costs filter passes for nothing), or after ``max_evals`` evaluations.
    """
    t0 = np.clip(np.asarray(start, dtype=np.float64), lower, upper)
    probe = f(t0)
    cur = _Point(t0, probe.value, np.asarray(probe.gradient, dtype=np.float64))
    hessian = _positive_definite(max(probe.curvature, 1e-300) * model_hessian(t0), cur.gradient)
    evals = 1
    while evals < max_evals:
        p = _projected_newton(hessian, cur, lower, upper)
        p *= min(1.0, max_step / max(float(np.max(np.abs(p))), 1e-300))
        promise = -0.5 * float(cur.gradient @ p)
        if np.max(np.abs(p)) < xtol or promise < rtol * abs(cur.value):
            break
        # a small promised gain that fails at once is gradient noise (float32 transforms, the
        # sampled gain/offset): stop rather than spend filter passes backtracking for it
        tries = 1 if promise < 100 * rtol * abs(cur.value) else 3
        trial, used = _backtrack(f, cur, p, lower, upper, xtol, rtol * abs(cur.value) / promise,
                                 min(tries, max_evals - evals))
        evals += used
        if trial is None:
            break
        s, y = trial.t - cur.t, trial.gradient - cur.gradient
        if s @ y > 1e-12 * np.sqrt((s @ s) * (y @ y)):
            hs = hessian @ s
            hessian = hessian + np.outer(y, y) / (s @ y) - np.outer(hs, hs) / (s @ hs)
        cur = trial
    return cur.t, cur.value


def _backtrack(f, cur: _Point, p, lower, upper, xtol, min_alpha, budget):
    """A point along ``p`` with a lower value (quadratic backtracking); None if none is found.

    Gives up when the step gets shorter than ``xtol`` or than ``min_alpha`` of ``p``.
    """
    alpha, used = 1.0, 0
    slope = float(cur.gradient @ p)
    while used < budget:
        t = np.clip(cur.t + alpha * p, lower, upper)
        probe = f(t)
        used += 1
        if probe.value < cur.value:
            return _Point(t, probe.value, np.asarray(probe.gradient, dtype=np.float64)), used
        if alpha * np.max(np.abs(p)) < xtol:
            break
        rise = probe.value - cur.value - alpha * slope
        guess = -slope * alpha**2 / (2 * rise) if rise > 0 and slope < 0 else 0.25 * alpha
        alpha = min(max(guess, 0.1 * alpha), 0.5 * alpha)
        if alpha < min_alpha or alpha * np.max(np.abs(p)) < xtol:
            break
    return None, used


def _positive_definite(hessian: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """The model Hessian with its eigenvalues floored (a flat direction must not give a huge step)."""
    h = np.atleast_2d(np.asarray(hessian, dtype=np.float64))
    h = 0.5 * (h + h.T)
    if not np.all(np.isfinite(h)):
        h = np.eye(len(h)) * max(float(np.abs(gradient).max()), 1e-300)
    w, v = np.linalg.eigh(h)
    floor = max(1e-6 * float(w.max(initial=0.0)), 1e-300)
    if w.max(initial=0.0) <= 0:  # no model at all: a unit step along the steepest descent
        return np.eye(len(h)) * max(float(np.abs(gradient).max()), 1e-300)
    return (v * np.maximum(w, floor)) @ v.T


def _projected_newton(hessian, cur: _Point, lower, upper) -> np.ndarray:
    """Newton step ``-H^-1 g`` with coordinates at a bound that would leave the box frozen."""
    g, t = cur.gradient, cur.t
    free = np.ones(len(g), bool)
    p = np.zeros(len(g))
    for _ in range(len(g)):
        p = np.zeros(len(g))
        if free.any():
            p[free] = np.linalg.solve(hessian[np.ix_(free, free)], -g[free])
        blocked = free & (((t <= lower) & (p < 0)) | ((t >= upper) & (p > 0)))
        if not blocked.any():
            break
        free &= ~blocked
    return p


class Edge(NamedTuple):
    """A point just across a kernel-radius jump next to a search result, and its side's box."""

    t: np.ndarray  # log-sigma, one coordinate moved across the jump
    axis: int
    lower: float  # the other piece's extent along ``axis`` (log-sigma)
    upper: float


def radius_edges(t: np.ndarray, truncate: float, *, reach: float = 0.002) -> list[Edge]:
    """Points across the kernel-radius jumps within ``reach`` (log-sigma) of ``t``.

    scipy's kernel radius is ``int(truncate * sigma + 0.5)``: the loss jumps where it changes
    (the kernel gains or loses its outermost taps), and a gradient at fixed radius cannot see
    that. The best point of the piece next door can lie on its edge, just across the jump.
    """
    edges = []
    for axis, ti in enumerate(np.asarray(t, dtype=np.float64)):
        sigma = float(np.exp(ti))
        radius = int(truncate * sigma + 0.5)
        below = (radius - 0.5) / truncate  # radius - 1 under this sigma
        above = (radius + 0.5) / truncate  # radius + 1 from this sigma on
        for edge, side in ((below, -1), (above, 1)):
            if edge <= 0 or abs(np.log(edge) - ti) > reach:
                continue
            across = np.log(edge) + side * 1e-9
            moved = np.array(t, dtype=np.float64)
            moved[axis] = across
            lower, upper = (across, np.inf) if side > 0 else (-np.inf, across)
            edges.append(Edge(moved, axis, lower, upper))
    return edges


def radius_piece(t: np.ndarray, truncate: float) -> tuple[np.ndarray, np.ndarray]:
    """The box (log-sigma) around ``t`` in which no coordinate's kernel radius changes."""
    sigma = np.exp(np.asarray(t, dtype=np.float64))
    radius = np.floor(truncate * sigma + 0.5)
    low = (radius - 0.5) / truncate
    lower = np.where(low > 0, np.log(np.maximum(low, 1e-300)), -np.inf) + 1e-12
    upper = np.log((radius + 0.5) / truncate) - 1e-9
    return lower, upper


def piecewise_minimize(
    f: Callable[[np.ndarray], Probe],
    start: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    model_hessian: Callable[[np.ndarray], np.ndarray],
    truncate: float,
    *,
    n_used: int = 1,
    precision: float = 0.0,
    pieces: int = 4,
) -> tuple[np.ndarray, float]:
    """`quasi_newton` over a loss that jumps where the kernel radius changes: ``(t, f(t))``.

    The loss is smooth between radius jumps (pieces 0.25 px wide in sigma) and its gradient
    blind to them. A coarse search crosses pieces freely (the jumps are ~1e-6 of the loss); a fine
    one then stays inside the piece it reached, and the points just across the nearest jumps are
    tried (`radius_edges`): if one is lower, the fine search continues in that piece.

    Tolerances are statistical: a move of one standard error of sigma changes a loss summed over
    ``n_used`` pixels by about ``value / n_used``; the fine search stops when the next step promises
    less than 1e-3 of that (a few hundredths of a standard error), the coarse one at 0.1. Neither
    chases less than ``precision``, the relative resolution of the values themselves (a float32
    model jitters a loss sum by ~1e-7 of itself: docs/design.md section 11).
    """
    per_pixel = 1.0 / max(n_used, 1)
    t, value = quasi_newton(f, start, lower, upper, model_hessian, xtol=1e-3,
                            rtol=max(0.1 * per_pixel, precision))
    for _ in range(pieces):
        piece_lo, piece_hi = radius_piece(t, truncate)
        box_lo, box_hi = np.maximum(lower, piece_lo), np.minimum(upper, piece_hi)
        t, value = quasi_newton(f, np.clip(t, box_lo, box_hi), box_lo, box_hi, model_hessian,
                                rtol=max(1e-3 * per_pixel, precision))
        moved = False
        for edge in radius_edges(t, truncate):
            if lower[edge.axis] <= edge.t[edge.axis] <= upper[edge.axis]:
                across = f(edge.t).value
                if across < value:
                    t, value, moved = edge.t, across, True
                    break
        if not moved:
            break
    return t, value
