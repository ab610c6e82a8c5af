"""One fit's problem: a kernel model, a loss and the data; points, gradients and Hessians.

Derivatives never need a Jacobian image per parameter in memory: ``J_k^T rho'(r)`` is the lag
correlation of the loss's derivative with the padded reference, contracted with ``dK/dtheta_k``
(one forward FFT and a pruned inverse). The Hessian ``J^T diag(rho'') J`` needs one Jacobian image
at a time (two FFTs per parameter). Gain and offset are solver variables like the kernel's, except
for L2, whose best gain and offset are closed form at every point (variable projection).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from .._kernel_model import KernelModel
from .._losses import Loss
from .spectrum import ReferenceSpectrum, dot, transform_dtype


@dataclass(frozen=True)
class Settings:
    """What one fit solves for: the kernel model, the loss, and whether gain/offset are free."""

    model: KernelModel
    loss: Loss
    gain_offset: bool
    # the reference's noise variance per pixel that a least-squares loss is corrected for: its
    # expected share ``n_used * gain**2 * noise * sum K**2`` is taken out (errors in variables)
    noise: float = 0.0

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return self.model.ndim

    def with_loss(self, loss: Loss) -> Settings:
        """The same fit under another loss (a threshold set since, or L2 for a start)."""
        return replace(self, loss=loss)


class Point(NamedTuple):
    """A candidate solution and what was computed at it."""

    x: np.ndarray  # free kernel parameters
    gain: float
    offset: float
    loss: float
    kernel: Any  # the kernel model's kernel
    sampled: np.ndarray  # the kernel array
    model: np.ndarray | None  # reference blurred by the kernel (crop, frames first), when kept
    residual: np.ndarray | None  # gain * model + offset - target

    def without_arrays(self) -> Point:
        """The parameters alone: no image-sized arrays kept alive."""
        return self._replace(model=None, residual=None)


class Normal(NamedTuple):
    """The loss's gradient and (when asked for) Hessian over ``[kernel parameters, gain, offset]``."""

    matrix: np.ndarray | None
    gradient: np.ndarray


def fits(radius, spatial) -> bool:
    """Whether a kernel of ``radius`` fits an image of ``spatial`` shape (2 radius + 1 px per axis)."""
    return all(2 * r + 1 <= n for r, n in zip(radius, spatial))


def check_radius(radius, spatial) -> None:
    """Raise unless a kernel of ``radius`` fits an image of ``spatial`` shape."""
    if not fits(radius, spatial):
        raise ValueError(f"the image (spatial shape {tuple(spatial)}) is too small for a kernel of "
                         f"radius {tuple(radius)} px: a blur and a shift cannot be told apart; use a "
                         "larger image or a smaller truncate")


class Problem:
    """Reference spectrum, target and used pixels of one fit; evaluates points and normal equations.

    Points keep their own residual in the spectrum's dtype, and with ``keep_models`` their model
    when the gain is fitted (the exact Hessian needs it); without, a fitted gain and offset are
    applied inside the transform. ``space`` (a `KernelSpace`) gives the unweighted Gauss-Newton
    matrix from statistics instead of Jacobian images.
    """

    def __init__(self, reference, target, used, settings: Settings, radius, workers, *,
                 dtype=np.float64, space=None, keep_models: bool = True):
        self.space = space
        # the exact Hessian with gain/offset needs each point's model; chord steps (a fixed
        # matrix) and gradients do not: without a copy per point, two image-sized arrays fewer
        self.keep_models = keep_models
        self.settings = settings
        self.reference = reference
        self.target = target
        self.used = None if used is None else used.astype(np.float64)
        self.n_used = int(target.size if used is None else np.count_nonzero(used))
        self.workers = workers
        self.evaluations = 0
        self.spectrum = ReferenceSpectrum(reference, tuple(radius), workers,
                                          dtype=transform_dtype(dtype, reference, target))
        self._residuals: list[tuple[np.ndarray, weakref.ref]] = []  # buffers and their handed-out views

    @property
    def model(self) -> KernelModel:
        """The kernel model."""
        return self.settings.model

    @property
    def loss(self) -> Loss:
        """The loss minimised."""
        return self.settings.loss

    def _residual_buffer(self) -> np.ndarray:
        """An image-sized array for a new point's residual, in memory no live point uses.

        The solver holds at most a point and a trial at once, so two buffers take turns (a third
        stands by). A fresh array per evaluation is paged in and zeroed by the kernel each time,
        a large share of a 3D fit's time (docs/design.md, section 10.6). A buffer is handed out as a
        view and is free again once that view is gone.
        """
        for i, (buffer, handed) in enumerate(self._residuals):
            if handed() is None:
                view = buffer.view()
                self._residuals[i] = buffer, weakref.ref(view)
                return view
        buffer = np.empty(self.target.shape, self.spectrum.dtype)
        view = buffer.view()
        if len(self._residuals) < 3:
            self._residuals.append((buffer, weakref.ref(view)))
        return view

    def page_in(self) -> Problem:
        """Touch the memory the first evaluations write (the spectra's buffer, two residuals) now.

        Fresh memory is paged in on first touch, slowly on the benchmark machine; a problem built
        ahead on a thread of its own (`strategy.prefetch`) pays that while the crops are solved.
        """
        self.spectrum.page_in()
        for view in [self._residual_buffer(), self._residual_buffer()]:
            view.fill(0)
        return self

    def with_settings(self, settings: Settings) -> Problem:
        """Take ``settings`` of the same fit (a loss threshold set since it was built).

        The spectrum and buffers stay: only the loss's settings change.
        """
        self.settings = settings
        return self

    def reach(self, kernel) -> None:
        """Grow the padded grid, if need be, to hold ``kernel`` (a kernel of the model)."""
        self._ensure_radius(self.model.sampled(kernel))

    def _ensure_radius(self, kernel: np.ndarray) -> None:
        radius = tuple((k - 1) // 2 for k in kernel.shape)
        # every kernel against the image, not only one that outgrows the grid: the grid grows half
        # as much again as the kernel that needed it, so it holds kernels the image cannot
        check_radius(radius, self.target.shape[1:])
        if any(r > p for r, p in zip(radius, self.spectrum.radius)):
            grown = tuple(max(r, p) * 3 // 2 + 2 for r, p in zip(radius, self.spectrum.radius))
            dtype, self.spectrum = self.spectrum.dtype, None  # the old buffers go first
            self.spectrum = ReferenceSpectrum(self.reference, grown, self.workers, dtype=dtype)

    def _sum(self, values: np.ndarray) -> float:
        return float(values.sum(dtype=np.float64)) if self.used is None else float(dot(self.used, values))

    def evaluate(self, x, gain: float, offset: float) -> Point:
        """Model, residual and loss at ``x``; least squares' gain/offset are the closed-form best."""
        model_, loss = self.model, self.loss
        kernel = model_.kernel(x)
        sampled = model_.sampled(kernel)
        self._ensure_radius(sampled)
        self.evaluations += 1
        fitted = self.settings.gain_offset and (loss.least_squares or self.keep_models)
        # a view of a reused buffer: the bare model, or gain * model + offset made in the transform
        model = self.spectrum.model(sampled, model_.factors(kernel), gain=1.0 if fitted else gain,
                                    offset=0.0 if fitted else offset)
        if not fitted:
            residual = np.subtract(model, self.target, out=self._residual_buffer(), dtype=self.spectrum.dtype)
            loss_ = self.loss_of(residual) - self.noise_share(sampled, gain)
            return Point(x, gain, offset, loss_, kernel, sampled, None, residual)
        if loss.least_squares:
            gain, offset = self._best_l2(model, sampled)
        residual = np.multiply(model, gain, out=self._residual_buffer(), dtype=self.spectrum.dtype)
        residual += offset
        residual -= self.target
        kept = np.ascontiguousarray(model) if self.keep_models else None
        loss_ = self.loss_of(residual) - self.noise_share(sampled, gain)
        return Point(x, gain, offset, loss_, kernel, sampled, kept, residual)

    def _noise(self, loss: Loss | None = None) -> float:
        """The noise variance the loss is corrected for (least squares only)."""
        return self.settings.noise if (loss or self.loss).least_squares else 0.0

    def noise_share(self, sampled: np.ndarray, gain: float) -> float:
        """The reference noise's expected share of the L2 loss: ``n * gain**2 * s**2 * sum K**2``."""
        noise = self._noise()
        return self.n_used * gain * gain * noise * float(np.vdot(sampled, sampled)) if noise else 0.0

    def noise_matrix(self, point: Point) -> np.ndarray:
        """The noise's expected share of ``J^T J`` (kernel parameters, then gain and offset).

        ``J_k = gain * dK_k * A`` and ``J_gain = K * A`` carry the blurred noise: its Gram matrix
        is ``n * s**2`` times the kernels' inner products (the offset's column has none).
        """
        derivs = self.model.derivatives(point.kernel).reshape(-1, point.sampled.size)
        columns = point.gain * derivs
        if self.settings.gain_offset:
            columns = np.vstack([columns, point.sampled.reshape(1, -1), np.zeros((1, columns.shape[1]))])
        return self.n_used * self._noise() * (columns @ columns.T)

    def parameter_covariance(self, jtj: np.ndarray, s2: float, point: Point) -> np.ndarray:
        """Covariance of the parameters: ``s2 (J^T J)^-1``, a sandwich when corrected for noise.

        The reference's noise inflates ``J^T J`` as if it were detail: the bread is ``J^T J``
        less the noise's share (`noise_matrix`), the filling ``J^T J`` itself.
        """
        with np.errstate(all="ignore"):
            try:
                if not self._noise():
                    return s2 * np.linalg.inv(jtj)
                inverse = np.linalg.inv(jtj - self.noise_matrix(point))
                return s2 * inverse @ jtj @ inverse
            except np.linalg.LinAlgError:
                return np.full(jtj.shape, np.nan)

    def loss_at(self, kernel, gain: float, offset: float) -> float:
        """The loss of a kernel of the model (least squares: at its best gain/offset)."""
        return self.evaluate(self.model.params(kernel), gain, offset).loss

    def model_of(self, point: Point) -> np.ndarray:
        """The point's model: the kept copy, or made again (a view of the reused model buffer)."""
        return point.model if point.model is not None else self.spectrum.model(point.sampled)

    def _best_l2(self, model, sampled) -> tuple[float, float]:
        m = self.used
        sw = float(self.n_used)
        wf = model if m is None else model * m
        sf, sff = float(wf.sum(dtype=np.float64)), float(dot(wf, model))
        sff -= self.noise_share(sampled, 1.0)  # the model's power less its noise's
        sb, sfb = self._sum(self.target), float(dot(wf, self.target))
        det = sw * sff - sf * sf
        if det <= 1e-12 * max(sw * sff, 1e-300):
            return 0.0, sb / sw
        gain = (sw * sfb - sf * sb) / det
        return gain, (sb - gain * sf) / sw

    def loss_of(self, residual: np.ndarray) -> float:
        """``sum rho(residual)`` over the pixels used."""
        if self.used is None and self.loss.least_squares:
            return dot(residual, residual)
        if self.used is None:
            return self.loss.value(residual)
        return self.loss.value(residual[self.used > 0], overwrite=True)

    def rss(self, point: Point) -> float:
        """Residual sum of squares over the pixels used."""
        r = point.residual
        return float(dot(r, r if self.used is None else r * self.used))

    def _hessian_weights(self, point: Point, loss: Loss) -> tuple[np.ndarray | None, float]:
        """``(w, c)`` with ``rho'' = c * w`` per pixel (``w`` None: the mask, or every pixel).

        A loss with one ``rho''`` everywhere (L2) needs no image of weights, and without a mask
        its unweighted matrix may come from `KernelSpace`. The others read it from the residual
        (`Loss.hessian_weights`), in one image-sized array.
        """
        if loss.constant_curvature is not None:
            return self.used, loss.constant_curvature
        a = np.abs(point.residual)
        return loss.hessian_weights(a, self._sum(a) / max(self.n_used, 1), self.used, self.n_used), 1.0

    def normal(self, point: Point, *, matrix: bool, loss: Loss | None = None) -> Normal:
        """Gradient ``J^T rho'(r)`` and, with ``matrix``, the Hessian ``J^T diag(rho'') J``.

        Over the kernel parameters, then gain and offset. ``loss`` defaults to the fit's;
        ``rho'`` times the mask is written straight into the FFT buffer.
        """
        loss = loss or self.loss
        grad = self._gradient(point, loss)
        if not (matrix or self._noise(loss)):
            return Normal(None, grad)
        derivs = self.model.derivatives(point.kernel)
        grad = grad - self._noise_gradient(point, derivs, loss)
        if not matrix:
            return Normal(None, grad)
        weights, scale = self._hessian_weights(point, loss)
        radius = tuple((k - 1) // 2 for k in point.sampled.shape)
        return Normal(scale * self._matrix(point, weights, derivs, radius), grad)

    def _gradient(self, point: Point, loss: Loss) -> np.ndarray:
        """``J^T rho'(r)`` over the kernel parameters (then gain and offset), without the noise term.

        A factorising kernel's from one forward FFT (`ReferenceSpectrum.axis_correlation`), any
        other's from the lag correlation (a forward and an inverse FFT).
        """
        def psi(r, out):
            self._derivative(loss, r, out)

        go = self.settings.gain_offset
        separable = self.model.axis_derivatives(point.kernel)
        if separable is not None:
            rows, mapping = separable
            table, total = self.spectrum.axis_correlation(point.residual, rows, transform=psi)
            axis_terms = []  # one derivative row on one axis, the factors on the others
            for axis, axis_rows in enumerate(rows):
                for j in range(1, len(axis_rows)):
                    axis_terms.append(table[(0,) * axis + (j,) + (0,) * (len(rows) - axis - 1)])
            grad = list(point.gain * (mapping @ np.array(axis_terms)))
            sampled_term = float(table[(0,) * len(rows)])
        else:
            derivs = self.model.derivatives(point.kernel)
            radius = tuple((k - 1) // 2 for k in point.sampled.shape)
            corr, total = self.spectrum.lag_correlation(point.residual, radius, transform=psi)
            grad = list(point.gain * (derivs.reshape(len(derivs), -1) * corr.reshape(-1)).sum(axis=1))
            sampled_term = float(np.vdot(point.sampled, corr)) if go else 0.0
        if go:  # sum(psi m) = sum_n K[n] c[n]: the model is not needed
            grad += [sampled_term, total]
        return np.array(grad)

    def _noise_gradient(self, point: Point, derivs: np.ndarray, loss: Loss) -> np.ndarray | float:
        """The gradient of `noise_share` over the kernel parameters, gain and offset (or 0)."""
        noise = self._noise(loss)
        if not noise:
            return 0.0
        k, n = point.sampled.reshape(-1), self.n_used * noise
        grad = 2.0 * n * point.gain**2 * (derivs.reshape(len(derivs), -1) @ k)
        if self.settings.gain_offset:
            grad = np.concatenate([grad, [2.0 * n * point.gain * float(k @ k), 0.0]])
        return grad

    def gauss_newton(self, point: Point) -> np.ndarray:
        """``J^T J`` over the pixels used (the least-squares covariance's inverse, up to ``s^2``)."""
        derivs = self.model.derivatives(point.kernel)
        radius = tuple((k - 1) // 2 for k in point.sampled.shape)
        return self._matrix(point, self.used, derivs, radius)

    def _derivative(self, loss: Loss, residual: np.ndarray, out: np.ndarray) -> None:
        """``out = rho'(residual)`` times the mask."""
        loss.derivative(residual, out=out)
        if self.used is not None:
            np.multiply(out, self.used, out=out, casting="unsafe")

    def _matrix(self, point: Point, w, derivs, radius) -> np.ndarray:
        """``J^T W J``: one Jacobian image at a time, its row from a lag correlation."""
        if self.space is not None and w is None:
            return self.space.matrix_at(point.kernel, point.gain)
        k = len(derivs)
        p = k + (2 if self.settings.gain_offset else 0)
        out = np.zeros((p, p))
        go = self.settings.gain_offset
        model = None
        if go:  # the point's kept model, or made again as a copy (the Jacobians reuse its buffer)
            model = point.model if point.model is not None else self.spectrum.model(point.sampled).copy()
        wf = (model if w is None else w * model) if go else None
        for i, dk in enumerate(derivs):
            jac = self.spectrum.model(dk)
            wj = jac if w is None else w * jac
            if go:  # before the lag correlation, which overwrites the model buffer (jac)
                out[i, k] = out[k, i] = point.gain * float(dot(wf, jac))
                out[i, k + 1] = out[k + 1, i] = point.gain * float(wj.sum(dtype=np.float64))
            corr, _ = self.spectrum.lag_correlation(wj, radius)
            out[i, :k] = point.gain**2 * (derivs.reshape(len(derivs), -1) * corr.reshape(-1)).sum(axis=1)
        if go:
            sw = float(self.n_used) if w is None else float(w.sum())
            out[k, k], out[k, k + 1] = float(dot(wf, model)), float(wf.sum(dtype=np.float64))
            out[k + 1, k], out[k + 1, k + 1] = out[k, k + 1], sw
        return 0.5 * (out + out.T)
