"""Pixel losses as objects: value, derivative, curvature and IRLS weights, in one convention.

Each loss is a function ``rho(r)`` of one residual; a fit minimises ``sum rho(r)`` over the pixels
used. Every method follows the same convention (as `scipy.optimize.least_squares` keeps its
losses in one table): ``derivative`` is ``rho'(r)``, ``curvature`` the mean of ``rho''``,
``hessian_weights`` a per-pixel ``rho''``. So a solver that takes ``J^T rho'`` as the gradient and
``J^T diag(rho'') J`` as the Hessian never asks which loss it minimises.

- L2: ``rho = r^2`` (``rho' = 2 r``, ``rho'' = 2``), the one loss that is ``least_squares``: its
  value is the residual sum of squares, its gain/offset are closed form, and for kernels the DCT
  diagonalises it is a contraction of spectral statistics.
- L1: ``rho = |r|`` (``rho' = sign r``, smoothed within ``smoothing`` when that is set;
  ``rho'' = 2 delta(r)``, estimated from the residuals' density at zero).
- Huber: `scipy.special.huber` with threshold ``delta``: ``r^2 / 2`` inside, ``delta (|r| - delta / 2)``
  outside (``rho' = clip(r, -delta, delta)``, ``rho'' = 1[|r| <= delta]``).

Sums are returned (not means) so that blocks of a stack or a dask array can be added up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

HUBER_K = 1.345  # default Huber threshold in units of the L2 fit's residual noise scale
FLOAT32_LOSS_JITTER = 1e-7  # relative jitter of a loss summed over a float32 model (measured)
L1_WINDOW = 0.5  # half-width of the L1 residual-density window, in mean |r| (a third of a noise sigma)
CHUNK = 2**16  # pixels per slice of a pass over an image: the slice's temporaries stay in cache


def chunks(*arrays: np.ndarray):
    """Matching flat slices of same-sized arrays, `CHUNK` pixels at a time.

    A pass of several elementwise steps over a large image is memory-bound; done a slice at a
    time the intermediate arrays stay in cache (2-4x faster here for 16M pixels).
    """
    flat = [a.reshape(-1) for a in arrays]
    for start in range(0, flat[0].size, CHUNK):
        yield [a[start : start + CHUNK] for a in flat]


def sum64(x: np.ndarray) -> float:
    """Sum in float64 (pairwise) without a float64 copy of a float32 array."""
    return float(np.add.reduce(x, axis=None, dtype=np.float64))


@dataclass(frozen=True)
class Loss:
    """A pixel loss ``rho(r)``; subclasses fill in the maths (module notes).

    Attributes
    ----------
    delta : float
        The Huber threshold, or for L1 the floor of its IRLS weights ``1 / max(|r|, delta)``
        (and of its curvature window); unused by L2. In the residuals' units.
    smoothing : float
        L1 only: ``rho'`` is ``clip(r / smoothing, -1, 1)``, the sign smoothed near zero, where a
        solver needs a gradient that does not jump; 0 is the exact sign.
    """

    delta: float = 0.0
    smoothing: float = 0.0

    name: ClassVar[str]
    least_squares: ClassVar[bool] = False  # rho = r^2 (module notes)
    constant_curvature: ClassVar[float | None] = None  # ``rho''`` where it is one number everywhere
    has_threshold: ClassVar[bool] = False  # ``delta`` is a threshold a user may set (Huber)

    def with_delta(self, delta: float) -> Loss:
        """The same loss with another ``delta``."""
        return dataclasses.replace(self, delta=float(delta))

    def for_noise(self, noise: float, threshold: float | None = None) -> Loss:
        """The loss set up for residuals of noise sigma ``noise`` (``threshold``: a user's).

        Huber's threshold is ``threshold``, else `HUBER_K` noise sigmas; L1's sign is smoothed
        and its weights floored within a thousandth of the noise; L2 has nothing to set.
        """
        return self

    def value(self, residual: np.ndarray, *, overwrite: bool = False) -> float:
        """``sum rho(residual)`` in float64; ``overwrite`` lets it use ``residual``'s memory."""
        if not overwrite and residual.size > CHUNK and residual.flags.c_contiguous:  # no big temporary
            return sum(self.value(part.copy(), overwrite=True) for (part,) in chunks(residual))
        return self._sum_in_place(residual if overwrite else residual.copy())

    def _sum_in_place(self, r: np.ndarray) -> float:
        """``sum rho(r)``, free to overwrite ``r``."""
        raise NotImplementedError

    def derivative(self, residual: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """``rho'(residual)`` elementwise, into ``out`` if given (any float dtype)."""
        raise NotImplementedError

    def irls_weights(self, a: np.ndarray) -> np.ndarray:
        """Weights of iteratively reweighted least squares from ``a = |r|``: they majorise ``rho``."""
        raise NotImplementedError

    def curvature_window(self, mean_abs: float) -> float:
        """Half-width of the residuals around zero where ``rho''`` is read (`mean_curvature`)."""
        return np.inf

    def curvature_from_count(self, inside: float, n: float, window: float) -> float:
        """Mean ``rho''`` from the count of residuals within ``window`` of zero, of ``n``.

        Counts add up over dask blocks, so a blockwise pass gives the same curvature as one pass.
        """
        raise NotImplementedError

    def mean_curvature(self, residual: np.ndarray) -> float:
        """Mean ``rho''`` over the residuals: the scale of the loss's Hessian.

        The Hessian of ``sum rho(r)`` over a smooth model is close to ``c * J^T J`` with ``c`` this
        mean. It seeds the quasi-Newton model of the sigma search, which corrects it from
        measured gradients.
        """
        a = np.abs(residual)
        window = self.curvature_window(float(np.mean(a)))
        return self.curvature_from_count(float(np.count_nonzero(a <= window)), a.size, window)

    def hessian_weights(self, a: np.ndarray, mean_abs: float, used: np.ndarray | None,
                        n_used: int) -> np.ndarray:
        """Per-pixel ``rho''`` from ``a = |r|`` (overwritten and returned), times the mask ``used``.

        Where fewer than `MIN_INSIDE` of the pixels used fall inside the curvature window (a
        two-valued residual) the IRLS weights stand in.
        """
        raise NotImplementedError


MIN_INSIDE = 0.01  # least fraction of pixels inside the curvature window (`Loss.hessian_weights`)


@dataclass(frozen=True)
class L2(Loss):
    """Squared error ``rho = r^2``."""

    name: ClassVar[str] = "l2"
    least_squares: ClassVar[bool] = True
    constant_curvature: ClassVar[float | None] = 2.0

    def _sum_in_place(self, r):
        return float(np.square(r, out=r).sum(dtype=np.float64))

    def derivative(self, residual, *, out=None):
        return np.multiply(residual, 2, out=out, casting="unsafe")

    def irls_weights(self, a):
        return np.ones_like(a)

    def curvature_from_count(self, inside, n, window):
        return 2.0

    def mean_curvature(self, residual):
        return 2.0

    def hessian_weights(self, a, mean_abs, used, n_used):
        a[...] = 2.0
        return a if used is None else np.multiply(a, used, out=a, casting="unsafe")


@dataclass(frozen=True)
class L1(Loss):
    """Absolute error ``rho = |r|``."""

    name: ClassVar[str] = "l1"

    def _sum_in_place(self, r):
        return float(np.abs(r, out=r).sum(dtype=np.float64))

    def derivative(self, residual, *, out=None):
        if not self.smoothing:
            return np.sign(residual, out=out)
        out = np.multiply(residual, 1.0 / self.smoothing, out=out, casting="unsafe")
        return np.clip(out, -1.0, 1.0, out=out)

    def for_noise(self, noise, threshold=None):
        return dataclasses.replace(self, delta=1e-3 * noise, smoothing=1e-3 * noise)

    def irls_weights(self, a):
        return 1.0 / np.maximum(a, self.delta)

    def curvature_window(self, mean_abs):
        # ``rho'' = 2 delta(r)``: twice the residual density at zero, read over a window of
        # ``L1_WINDOW`` mean |r|; `hessian_weights` floors it at ``delta``
        return L1_WINDOW * mean_abs + 1e-300

    def curvature_from_count(self, inside, n, window):
        return 2.0 * inside / (2.0 * window * max(n, 1))

    def hessian_weights(self, a, mean_abs, used, n_used):
        window = max(L1_WINDOW * mean_abs, self.delta)
        return _windowed(a, window, 1.0 / window, used, n_used, fallback=lambda w: np.divide(1.0, w, out=w),
                         floor=self.delta)


@dataclass(frozen=True)
class Huber(Loss):
    """`scipy.special.huber` with threshold ``delta``."""

    name: ClassVar[str] = "huber"
    has_threshold: ClassVar[bool] = True

    def _sum_in_place(self, r):
        return huber_sum(np.abs(r, out=r), self.delta)

    def for_noise(self, noise, threshold=None):
        return self.with_delta(HUBER_K * noise if threshold is None else threshold)

    def derivative(self, residual, *, out=None):
        return np.clip(residual, -self.delta, self.delta, out=out)

    def irls_weights(self, a):
        return np.minimum(1.0, self.delta / np.maximum(a, 1e-300))

    def curvature_window(self, mean_abs):
        return self.delta

    def curvature_from_count(self, inside, n, window):
        return max(inside / max(n, 1), 1e-3)

    def hessian_weights(self, a, mean_abs, used, n_used):
        delta = self.delta
        return _windowed(a, delta, 1.0, used, n_used, fallback=lambda w: np.divide(delta, w, out=w),
                         floor=delta)


def _windowed(a: np.ndarray, window: float, height: float, used, n_used: int, *, fallback,
              floor: float) -> np.ndarray:
    """``height * 1[a < window]`` in ``a``'s memory (times ``used``), or the IRLS weights.

    The IRLS weights (``fallback`` of ``max(a, floor)``) stand in when fewer than `MIN_INSIDE` of
    the pixels used lie inside the window.
    """
    inside = a < window
    if np.count_nonzero(inside if used is None else inside & (used > 0)) >= MIN_INSIDE * n_used:
        np.multiply(inside, height, out=a)
    else:
        fallback(np.maximum(a, floor, out=a))
    return a if used is None else np.multiply(a, used, out=a, casting="unsafe")


def huber_sum(a: np.ndarray, delta: float) -> float:
    """``sum scipy.special.huber(delta, r)`` from ``a = |r|`` (overwritten), in float64.

    ``rho = m (|r| - m / 2)`` with ``m = min(|r|, delta)``: ``r^2 / 2`` inside, ``delta (|r| -
    delta / 2)`` outside; plain arithmetic runs at twice the speed of the special function.
    """
    m = np.minimum(a, a.dtype.type(delta))
    a -= 0.5 * m
    return float(np.einsum("i,i->", m.reshape(-1), a.reshape(-1), dtype=np.float64))


LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (L2, L1, Huber)}


def get_loss(name: str, *, delta: float = 0.0, smoothing: float = 0.0) -> Loss:
    """The loss called ``name`` (one of `LOSSES`); ``ValueError`` naming the choices otherwise."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}; got {name!r}")
    return LOSSES[name](delta=float(delta), smoothing=float(smoothing))
