"""The model across grids on a region of the pair, and its least-squares solver.

`Evaluator` gives the model's used destination pixels for a kernel: the source crop filtered
(separable where the kernel is) and resampled (`_resample`), the crop regrown when the kernel
outgrows its margin. `levenberg_marquardt` fits residual vectors with finite-difference
Jacobians (docs/design.md section 18).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from ._gain_offset import l2_gain_offset
from ._gaussian import GaussianKernel, GaussianModel
from ._grid_pair import GridPair
from ._resample import product_along, reflect_convolution, resample
from ._whole.spectrum import ReferenceSpectrum, transform_dtype
from ._whole.strategy import FLOAT32_PIXELS

STEP = 1e-3  # finite-difference step: log sigma (or log-Cholesky entry), and px for a shift
LINES = 256  # lines of the last axis filtered and resampled at a time


class Region(NamedTuple):
    """A block of destination pixels and the source crop they read, with a margin for the kernel.

    ``room``: source pixels beyond the read columns per axis (inf where the crop reaches the
    image edge, where the model reflects).
    """

    source: np.ndarray
    destination: np.ndarray  # the used pixels' values, flat
    used: np.ndarray | None
    weights: tuple
    room: tuple[float, ...]


def region(pair: GridPair, frames: slice, block: tuple[slice, ...], margin: tuple[int, ...]) -> Region:
    """The destination pixels of ``block`` (relative to the inside block) and their source crop."""
    weights, crop, room = [], [], []
    for sampling, rows, pad in zip(pair.sampling, block, margin):
        w = sampling.weights[rows]
        read = np.flatnonzero(np.diff(w.tocsc().indptr))
        first, last = int(read[0]), int(read[-1]) + 1
        n = w.shape[1]
        lo, hi = max(0, first - pad), min(n, last + pad)
        weights.append(w[:, lo:hi].tocsr())
        crop.append(slice(lo, hi))
        room.append(min(np.inf if lo == 0 else first - lo, np.inf if hi == n else hi - last))
    used = None if pair.used is None else pair.used[(slice(None) if pair.used.shape[0] == 1 else frames,)
                                                       + block]
    values = pair.destination[(frames,) + block]
    return Region(pair.source[(frames,) + tuple(crop)], _used_values(values, used), used,
                  tuple(weights), tuple(room))


def _used_values(image: np.ndarray, used: np.ndarray | None) -> np.ndarray:
    return image.reshape(-1) if used is None else image[np.broadcast_to(used, image.shape)]


def blurred_resampled(frames: np.ndarray, kernel: GaussianKernel, truncate: float,
                      weights, dtype=np.float64) -> np.ndarray:
    """``K * frames`` over the spatial (last) axes, reflect borders, resampled by ``weights``.

    For a separable ``kernel`` (a rotated one goes through `Evaluator`'s cached spectrum), axis
    by axis (operators on different axes commute, borders included): the last axis, whose lines
    are contiguous, by `scipy.ndimage` then resampled; every other axis as one sparse product of
    its resampling and reflect-convolution matrices, which reads rows whole where
    `scipy.ndimage` would gather strided lines, and computes only the destination's rows.
    ``dtype``: of the arithmetic (float32 on large regions, as `resample`); the result is float64.
    """
    factors = kernel.factors(truncate)
    first = frames.ndim - kernel.ndim
    out = np.empty(frames.shape[:-1] + (weights[-1].shape[0],), dtype=dtype)
    lines, into = frames.reshape(-1, frames.shape[-1]), out.reshape(-1, out.shape[-1])
    factor = factors[-1].astype(frames.dtype)
    for start in range(0, len(lines), LINES):  # a block at a time: its temporaries stay small
        block = slice(start, start + LINES)
        into[block] = resample(ndimage.convolve1d(lines[block], factor, mode="reflect"), [weights[-1]], 1,
                               dtype)
    for k in range(kernel.ndim - 1):
        axis = first + k
        operator = weights[k] @ reflect_convolution(factors[k], frames.shape[axis])
        out = product_along(out, operator.astype(dtype), axis)
    return np.asarray(out, dtype=np.float64)


class Evaluator:
    """The model's used pixels on a region of the pair, for a kernel (the region regrown as needed)."""

    def __init__(self, pair: GridPair, frames: slice, block: tuple[slice, ...], model: GaussianModel,
                 tick: Callable[[str], None]):
        self.pair, self.frames, self.block, self.model, self.tick = pair, frames, block, model, tick
        self.region: Region | None = None
        self.n_evaluations = 0
        self._spectrum: ReferenceSpectrum | None = None  # the region's, for kernels that do not factorise
        self._dtype = np.dtype(np.float64)  # of the arithmetic, set with the region (`_set_region`)

    def values(self, kernel: GaussianKernel) -> np.ndarray:
        """The model's used destination pixels for ``kernel``, flat: a new array (callers may write)."""
        radius = self.model.radius(kernel)
        margin = tuple(int(1.5 * r) + 2 for r in radius)
        if self.region is None or any(r > room for r, room in zip(radius, self.region.room)):
            self._set_region(margin)
        self.tick("filtering (fit across grids)")
        self.n_evaluations += 1
        dtype = self._dtype
        if kernel.factors(self.model.truncate) is not None:
            image = blurred_resampled(self.region.source, kernel, self.model.truncate, self.region.weights,
                                      dtype)
        else:  # a rotated kernel: the source crop's spectrum, made once, times the kernel's
            if self._spectrum is None or any(r > m for r, m in zip(radius, self._spectrum.radius)):
                self._spectrum = ReferenceSpectrum(self.region.source, margin, None, dtype=dtype)
            image = resample(self._spectrum.model(self.model.sampled(kernel)), self.region.weights, 1,
                             dtype)
        return _used_values(image, self.region.used)

    def _set_region(self, margin: tuple[int, ...]) -> None:
        self.region, self._spectrum = region(self.pair, self.frames, self.block, margin), None
        # float32 arithmetic on large regions, as the one-grid engine: an evaluation there ends a
        # fit at a coarse step (`_grid_fit.FULL_XTOL`); a crop's fit, to a fine step, needs
        # float64's smooth loss
        large = self.region.source.size > FLOAT32_PIXELS
        self._dtype = transform_dtype(np.float32 if large else np.float64, self.region.source,
                                      self.region.destination)

    @property
    def target(self) -> np.ndarray:
        """The destination's used pixels of the region (the same whatever the source's margin)."""
        if self.region is None:  # not evaluated yet: the destination needs no margin
            self._set_region((0,) * self.model.ndim)
        return self.region.destination


class Fitted(NamedTuple):
    """The model at a parameter vector: residual, gain, offset and the model's used pixels."""

    residual: np.ndarray
    gain: float
    offset: float


def residual_at(evaluator: Evaluator, params: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """``gain * model + offset - target`` over the used pixels, made in the model's new array."""
    f = evaluator.values(evaluator.model.kernel(params))
    return brighten_minus(f, gain, offset, evaluator.target)


def brighten_minus(f: np.ndarray, gain: float, offset: float, target: np.ndarray) -> np.ndarray:
    """``gain * f + offset - target`` in ``f``'s memory."""
    f *= gain
    f += offset
    f -= target
    return f


def l2_fitted(evaluator: Evaluator, params: np.ndarray, gain_offset: bool) -> Fitted:
    f = evaluator.values(evaluator.model.kernel(params))
    g, o = l2_gain_offset(f, evaluator.target)[:2] if gain_offset else (1.0, 0.0)
    return Fitted(brighten_minus(f, g, o, evaluator.target), float(g), float(o))


class Solved(NamedTuple):
    params: np.ndarray
    residual: np.ndarray
    jacobian: np.ndarray


def empty_jacobian(n_residuals: int, n_params: int) -> np.ndarray:
    """A Jacobian to fill column by column: float32 above `FLOAT32_PIXELS` rows (half the memory)."""
    dtype = np.float32 if n_residuals > FLOAT32_PIXELS else np.float64
    return np.empty((n_residuals, n_params), dtype=dtype, order="F")


def finite_differences(fun, params: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """The Jacobian of ``fun`` at ``params`` (where it is ``residual``) by forward differences."""
    jac = empty_jacobian(residual.size, len(params))
    for i, e in enumerate(np.eye(len(params))):
        column = fun(params + STEP * e)  # a new array: worked on in place
        column -= residual
        column /= STEP
        jac[:, i] = column
    return jac


def normal_equations(jac: np.ndarray, residual: np.ndarray,
                     rows: int = 2**18) -> tuple[np.ndarray, np.ndarray]:
    """``(J^T J, J^T r)`` summed in float64 a block of ``rows`` at a time (J may be float32)."""
    hess, grad = np.zeros((jac.shape[1],) * 2), np.zeros(jac.shape[1])
    for start in range(0, len(jac), rows):
        block = np.asarray(jac[start:start + rows], dtype=np.float64)
        hess += block.T @ block
        grad += block.T @ residual[start:start + rows]
    return hess, grad


def levenberg_marquardt(fun, params: np.ndarray, lower: np.ndarray, upper: np.ndarray, *,
                        max_jacobians: int, xtol: float, jacobian=None, penalty=None) -> Solved:
    """Least squares of ``fun(params)`` (a residual vector) plus an optional ``penalty``.

    ``jacobian(params, residual)`` gives the residual's Jacobian (default: finite differences);
    ``penalty(params) -> (value, gradient)`` is a cheap smooth term added to the cost (its
    curvature is left to the damping). Steps are clipped to the bounds.
    """
    def cost_of(p, r):
        return float(r @ r) + (penalty(p)[0] if penalty is not None else 0.0)

    r = fun(params)
    cost, damping = cost_of(params, r), 1e-4
    jac = None
    for _ in range(max_jacobians):
        jac = jacobian(params, r) if jacobian is not None else finite_differences(fun, params, r)
        hess, grad = normal_equations(jac, r)
        if penalty is not None:
            grad = grad + 0.5 * penalty(params)[1]
        while True:
            step = np.linalg.solve(hess + damping * np.diag(np.diag(hess) + 1e-300), -grad)
            trial = np.clip(params + step, lower, upper)
            r_trial = fun(trial)
            c_trial = cost_of(trial, r_trial)
            if c_trial < cost:
                moved = np.max(np.abs(trial - params))
                params, r, cost = trial, r_trial, c_trial
                damping = max(damping / 10, 1e-8)
                break
            damping *= 10
            # no step lowers the cost: a minimum to the step's precision (more damping would
            # only shorten a step already below xtol, each try a whole evaluation)
            if damping > 1e8 or np.max(np.abs(trial - params)) < xtol:
                return Solved(params, r, jac)
        if moved < xtol:
            break
    return Solved(params, r, jac)
