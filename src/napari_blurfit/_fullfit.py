"""Exact fit of the whole Gaussian: a full covariance and a shift (docs/design.md, "The whole Gaussian").

A full covariance or a shift breaks the even symmetry that makes the L2 loss diagonal in the DCT, so
the model is evaluated in space, exactly: the reference is reflect-padded once by the largest radius
the search can reach and transformed once (one rFFT per frame); a model is one inverse FFT of that
cached spectrum times the spectrum of the small kernel, then a crop. The kernel's spectrum is a
pruned DFT (a small matrix product per axis), not a full-size FFT.

Derivatives never need a Jacobian image per parameter in memory: ``J_k^T (w r)`` is the
cross-correlation of the weighted residual with the padded reference at the kernel's small lags,
contracted with ``dK/dtheta_k`` (one forward FFT and a pruned inverse). The Gauss-Newton matrix
``J^T W J`` needs one Jacobian image at a time (two FFTs per parameter).

Solver: Levenberg-Marquardt over the log-Cholesky covariance and the shift. Gain and offset are projected out
in closed form for L2 (variable projection) and stepped jointly for L1 and Huber, whose matrix weighs each
pixel by the loss's second derivative (`_Problem.weights`). Multi-start and most iterations run on a central
crop with the exact matrix at every step; the full image is then polished with that matrix held fixed (the
chord method: every step still follows the exact gradient, and every step is accepted only if the true loss
decreases).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import NamedTuple, TypeVar

import ducc0
import numpy as np
from scipy import fft as sfft
from scipy import signal

from ._gaussian import GaussianKernel, n_cholesky
from ._losses import (
    FLOAT32_LOSS_JITTER,
    HUBER_K,
    L1_WINDOW,
    LOSSES,
    huber_gain_offset,
    l1_gain_offset,
    loss_sum,
)
from ._shift import Frames, as_frames, central, estimate_shift
from ._spectral import threads

T = TypeVar("T")

CROP_EDGE = {2: 384, 3: 64}  # edge of the central crop used for the multi-start stage
MIDDLE_EDGE = {2: 1024, 3: 128}  # edge of the crop that rehearses the full image's chord steps
# solver steps from each start before the best start is solved to the end (3D: 7 starts, and a step
# with the exact matrix costs 27 FFTs of the crop: 2 steps already rank them)
SCOUT_STEPS = {2: 4, 3: 2}
# a crop solved only for a start stops at this relative decrease: at 1e-10 the 64^3 crop took 26 steps
# (2.4 s) where 8 (0.7 s) left its shift 0.02 px off, and the full image moves it by more than that
START_RTOL = 1e-6
# L1/Huber Newton steps on the crop when it is only a start: each recomputes the matrix (in 3D six
# Jacobian images of the crop, about 0.3 s), and the middle crop's chord steps carry on for a
# sixteenth of that. Full-volume evaluations with 1 / 12 steps: 3D L1 per axis + shift 9 / 11, L1 full
# covariance 13 / 12 (to a lower loss), the other benchmark rows as many (docs/whole-gaussian.md)
CROP_NEWTON_STEPS = 1
# 3D: a middle crop whose chord took this many steps or more had a matrix that fits it poorly; the loss's
# own matrix is taken at its end for the full volume (`_rehearse`). Not in 2D, where it made the rows
# without gain/offset take 8-11 full-image evaluations instead of 6-7 (docs/whole-gaussian.md)
REMATRIX_STEPS = {3: 4}
MIN_INSIDE = 0.01  # least fraction of pixels inside the curvature window of L1/Huber (`_Problem.weights`)
EXACT_MATRIX_PIXELS = 2**18  # up to this many pixels the exact L2 polish recomputes the exact matrix
FLOAT32_PIXELS = 2**20  # above this many pixels the full-image stage runs its FFTs in float32
SHIFT_START_PIXELS = 2**16  # crop of the shift's start estimate in a fit (the fit refines it)
L1_WINDOW_PIXELS = 2**18  # the exact L1 gain/offset's first window: as sure as a start from this many


# results ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FullFit:
    """Result of `fit_whole_gaussian`.

    Attributes
    ----------
    kernel : GaussianKernel
        Fitted covariance (px^2) and shift (px).
    gain, offset : float
        ``target ~ gain * kernel.apply(reference) + offset`` (1 and 0 without ``gain_offset``).
    loss_sum : float
        Sum of the loss over the pixels used; ``loss_name`` says which loss.
    rss : float
        Sum of squared residuals over the pixels used.
    n_used : int
        Pixels that counted.
    evaluations, iterations : int
        Model evaluations (inverse FFTs of the full problem) and accepted solver steps.
    covariance_stderr, shift_stderr : ndarray
        Gauss-Newton standard errors (delta method for the covariance entries); NaN where unknown.
    gain_stderr, offset_stderr : float
        Likewise (NaN when gain/offset were not fitted).
    delta : float or None
        Huber threshold used.
    residual : ndarray
        ``gain * kernel.apply(reference) + offset - target`` at every pixel (used or not), frames
        first, in the dtype the fit ran in. `fit_blur`'s checks turn it into the fitted image in
        place (the fit is done with it by then).
    """

    kernel: GaussianKernel
    gain: float
    offset: float
    loss_sum: float
    loss_name: str
    rss: float
    n_used: int
    evaluations: int
    iterations: int
    covariance_stderr: np.ndarray
    shift_stderr: np.ndarray
    gain_stderr: float
    offset_stderr: float
    delta: float | None
    residual: np.ndarray

    @property
    def loss(self) -> float:
        """Mean loss per pixel used."""
        return self.loss_sum / max(self.n_used, 1)


# the cached reference spectrum --------------------------------------------------------------------
def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)`` accumulated in float64, without a temporary or a copy of strided views (einsum)."""
    letters = "abcdefghij"[: a.ndim]
    return float(np.einsum(f"{letters},{letters}->", a, b, dtype=np.float64))


def _reflect_fill(grid: np.ndarray, frames: np.ndarray, margin: tuple[int, ...]) -> None:
    """Write ``frames`` into ``grid`` at ``margin`` and reflect-pad around it (numpy ``"symmetric"``).

    Axis by axis over the rows already filled, so corners are right; what lies beyond a reflection
    as wide as the image (only on tiny images) is filled by ``np.pad``.
    """
    spatial = frames.shape[1:]
    if any(m > n or g - m - n > n for m, n, g in zip(margin, spatial, grid.shape[1:])):
        pad = [(0, 0)] + [(m, g - m - n) for m, n, g in zip(margin, spatial, grid.shape[1:])]
        grid[...] = np.pad(frames, pad, mode="symmetric")
        return
    grid[(slice(None),) + tuple(slice(m, m + n) for m, n in zip(margin, spatial))] = frames
    for k, (m, n) in enumerate(zip(margin, spatial)):
        g = grid.shape[k + 1]
        view = np.moveaxis(grid, k + 1, 0)
        view[:m] = view[m : 2 * m][::-1]
        right = g - m - n
        view[m + n :] = view[m + n - right : m + n][::-1]


def _box_sums(grid: np.ndarray, margin: tuple[int, ...], spatial: tuple[int, ...],
              radius: tuple[int, ...]) -> np.ndarray:
    """``s[n] = sum over frames and x in the crop of grid(x - n)`` for lags ``|n_i| <= radius_i`` (float64).

    One ``np.add.reduceat`` per axis over the breakpoints ``crop edge - n``; the first pass reads the
    grid once and every later pass works on a small array; the axis that shrinks the most goes
    first.
    """
    out = grid
    order = sorted(range(len(spatial)), key=lambda k: (2 * radius[k] + 1) / grid.shape[k + 1])
    for k in order:
        m, n, r, axis = margin[k], spatial[k], radius[k], k + 1
        lags = np.arange(-r, r + 1)
        if n > 2 * r:
            idx = np.concatenate([m - lags[::-1], m + n - lags[::-1]])
            blocks = _reduceat64(out, idx, axis)
            prefix = np.cumsum(np.moveaxis(blocks, axis, 0), axis=0)
            prefix = np.concatenate([np.zeros_like(prefix[:1]), prefix[:-1]])  # sum idx[0]..idx[j]
            start, stop = prefix[r - lags], prefix[2 * r + 1 + r - lags]
        else:  # a tiny image: plain prefix sums
            prefix = np.cumsum(np.moveaxis(out, axis, 0), axis=0, dtype=np.float64)
            prefix = np.concatenate([np.zeros_like(prefix[:1]), prefix])
            start, stop = prefix[m - lags], prefix[m + n - lags]
        out = np.moveaxis(stop - start, 0, axis)
    return out.sum(axis=0)


def _reduceat64(a: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    """``np.add.reduceat(a, idx, axis, dtype=float64)`` a slab at a time along another axis.

    Given a float32 array, reduceat casts all of it to float64 first (1.7x the two inputs for the
    3D grid of `_KernelSpace`); slabs of about a million elements keep that copy small.
    """
    along = max((k for k in range(a.ndim) if k != axis), key=lambda k: a.shape[k])
    shape = list(a.shape)
    shape[axis] = len(idx)
    out = np.empty(shape)
    step = max(1, 2**20 * a.shape[along] // max(a.size, 1))
    for start in range(0, a.shape[along], step):
        slab = [slice(None)] * a.ndim
        slab[along] = slice(start, start + step)
        out[tuple(slab)] = np.add.reduceat(a[tuple(slab)], idx, axis=axis, dtype=np.float64)
    return out


class _ReferenceSpectrum:
    """One rFFT of the reflect-padded reference frames (frames first, spatial axes last).

    ``radius`` is the largest kernel radius per axis that a model may use. The crop sits ``margin``
    (at least ``radius``; twice it leaves room for the lags of `_KernelSpace`) from the origin; each
    axis is padded to a fast FFT length, the extra going to the right, so circular convolution never
    wraps into the crop. ``dtype`` is float64, or float32 for large images (half the time and memory).
    One grid-sized real buffer serves models and lag correlations in turn (the padded reference
    until then), one complex buffer their spectra.
    """

    def __init__(self, reference: np.ndarray, radius: tuple[int, ...], workers: int | None, *,
                 dtype=np.float64, margin: tuple[int, ...] | None = None):
        self.d = len(radius)
        self.radius = tuple(radius)
        self.margin = self.radius if margin is None else tuple(margin)
        self.nthreads = threads(-1 if workers is None else workers)  # default: all cores
        self.dtype = np.dtype(dtype)
        self.spatial = reference.shape[1:]
        self.lengths = tuple(sfft.next_fast_len(n + 2 * m, real=True)
                             for n, m in zip(self.spatial, self.margin))
        padded = np.empty((len(reference), *self.lengths), dtype=self.dtype)
        _reflect_fill(padded, reference, self.margin)
        self.axes = tuple(range(1, self.d + 1))
        self.spectrum = ducc0.fft.r2c(padded, axes=self.axes, nthreads=self.nthreads)
        self.crop = (slice(None),) + tuple(slice(m, m + n) for m, n in zip(self.margin, self.spatial))
        self._complex = np.empty_like(self.spectrum)
        # the padded reference until the first model or lag correlation, then their real buffer
        self._padded, self._holds_reference = padded, True

    def page_in(self) -> None:
        """Touch the spectra's buffer (its first write would otherwise page it in: `_Problem.page_in`)."""
        self._complex.fill(0)

    def box_sums(self, radius: tuple[int, ...]) -> np.ndarray:
        """Sums of the padded reference over the crop moved by every lag ``|n_i| <= radius_i``.

        Only before the first model or lag correlation: they reuse the reference's buffer.
        """
        if not self._holds_reference:
            raise RuntimeError("box_sums after a model or lag correlation overwrote the padded reference")
        return _box_sums(self._padded, self.margin, self.spatial, radius)

    def kernel_spectrum(self, kernel: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """DFT of the kernel placed with offset 0 at the origin (circularly, on the padded grid).

        Transformed axis by axis: the last (real) axis only over the kernel's few rows, the others
        over the rows already filled, so it costs less than a full-size transform. ``out``: a
        buffer of the spectrum's shape for the full-size last pass (else a new array).
        """
        radius = tuple((k - 1) // 2 for k in kernel.shape)
        nt = self.nthreads
        last = np.zeros((*kernel.shape[:-1], self.lengths[-1]), dtype=self.dtype)
        last[..., np.arange(-radius[-1], radius[-1] + 1) % self.lengths[-1]] = kernel
        spec = ducc0.fft.r2c(last, axes=(self.d - 1,), nthreads=nt)
        for axis in range(self.d - 2, -1, -1):
            shape = list(spec.shape)
            shape[axis] = self.lengths[axis]
            if axis == 0 and out is not None:
                grown = out
                grown.fill(0)
            else:
                grown = np.zeros(shape, dtype=spec.dtype)
            index = [slice(None)] * self.d
            index[axis] = np.arange(-radius[axis], radius[axis] + 1) % self.lengths[axis]
            grown[tuple(index)] = spec
            spec = ducc0.fft.c2c(grown, axes=(axis,), out=grown, nthreads=nt)
        # the zero frequency is the kernel's sum, exactly: in float32 the transforms round it by
        # ~1e-7, a gain that changes from kernel to kernel, and an L1 loss (which weighs a gain by
        # sum sign(r) m) then jumps by 1e-6 of itself between neighbouring kernels
        spec[(0,) * self.d] = kernel.sum(dtype=np.float64)
        return spec

    def axis_spectra(self, factors: list[np.ndarray]) -> list[np.ndarray]:
        """DFTs of 1-D kernels (offset 0 at the origin) along each axis, shaped to broadcast."""
        out = []
        for axis, (f, n) in enumerate(zip(factors, self.lengths)):
            r = (len(f) - 1) // 2
            line = np.zeros(n, dtype=self.dtype)
            line[np.arange(-r, r + 1) % n] = f
            last = axis == self.d - 1
            spec = np.fft.rfft(line) if last else np.fft.fft(line)
            shape = [1] * (self.d + 1)
            shape[axis + 1] = len(spec)
            out.append(spec.astype(self._complex.dtype).reshape(shape))
        return out

    def model(self, kernel: np.ndarray, factors: list[np.ndarray] | None = None, *,
              gain: float = 1.0, offset: float = 0.0) -> np.ndarray:
        """``gain * (A * kernel) + offset`` on the crop: a view of a reused buffer.

        ``factors``: 1-D kernels whose outer product is ``kernel`` (`GaussianKernel.factors`); its
        spectrum is then their spectra broadcast, one pass per axis instead of a transform of
        the grid. The gain scales the kernel and the offset enters the zero frequency, so
        neither costs a pass. The view is overwritten by the next call; copy it to keep it.
        """
        if factors is None and len(self._complex) == 1:  # built in the buffer: no grid-sized temporary
            spectrum = self.kernel_spectrum(kernel * gain, out=self._complex[0])
            np.multiply(spectrum, self.spectrum[0], out=self._complex[0])
        elif factors is None:
            np.multiply(self.spectrum, self.kernel_spectrum(kernel * gain), out=self._complex)
        else:
            first, *rest = self.axis_spectra(factors)[::-1]
            np.multiply(self.spectrum, first * gain, out=self._complex)
            for spec in rest:
                self._complex *= spec
        if offset:  # the inverse transform divides by the grid's size
            self._complex[(slice(None),) + (0,) * self.d] += offset * np.prod(self.lengths, dtype=np.float64)
        self._holds_reference = False
        full = ducc0.fft.c2r(self._complex, axes=self.axes, lastsize=self.lengths[-1], forward=False,
                             inorm=2, out=self._padded, nthreads=self.nthreads, allow_overwriting_input=True)
        return full[self.crop]

    def lag_correlation(self, image: np.ndarray, radius: tuple[int, ...], *,
                        transform=None) -> tuple[np.ndarray, float]:
        """``c[n] = sum_x f(x) A_pad(x + m - n)`` summed over frames, for lags ``|n_i| <= radius_i``.

        ``f`` is ``image``, or what ``transform(image, out)`` writes into ``out`` (an elementwise
        function of it, formed in the buffer: no image-sized temporary). Returns ``c`` and
        ``sum f`` (the transform's zero frequency). The image goes into the model buffer flipped
        (zero outside the crop): the correlation is then the convolution
        ``c2r(r2c(flipped) * A_hat)`` read at mirrored lags, with no pass to conjugate the
        spectrum. Overwrites the model buffer: a view returned by `model` is invalid afterwards
        (``image`` may be that view).
        """
        real, self._holds_reference = self._padded, False
        flipped = real[self.crop][(slice(None),) + (slice(None, None, -1),) * self.d]
        if transform is None:
            flipped[...] = image
        else:
            transform(image, flipped)
        for axis, (m, n) in enumerate(zip(self.margin, self.spatial), start=1):
            edge = [slice(None)] * real.ndim
            edge[axis] = slice(0, m)
            real[tuple(edge)] = 0.0
            edge[axis] = slice(m + n, None)
            real[tuple(edge)] = 0.0
        z = ducc0.fft.r2c(real, axes=self.axes, out=self._complex, nthreads=self.nthreads)
        total = float(z[(slice(None),) + (0,) * self.d].real.sum(dtype=np.float64))
        z *= self.spectrum
        spec = z.sum(axis=0) if len(z) > 1 else z[0]
        # into the model buffer (its first frame): a model view taken before is overwritten
        full = ducc0.fft.c2r(spec, axes=tuple(range(self.d)), lastsize=self.lengths[-1], forward=False,
                             inorm=2, out=self._padded[0], nthreads=self.nthreads,
                             allow_overwriting_input=True)
        # f(x) sits at y = m + N - 1 - x: the convolution at q holds the lag 2m + N - 1 - q
        lags = [(2 * m + n - 1 - np.arange(-r, r + 1)) % length
                for m, n, r, length in zip(self.margin, self.spatial, radius, self.lengths)]
        return full[np.ix_(*lags)].astype(np.float64), total


# the problem --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Options:
    """What is fitted, and how (frozen for one fit)."""

    d: int
    loss: str
    gain_offset: bool
    full_covariance: bool
    shift: bool
    truncate: float
    delta: float  # Huber threshold, or the L1 weight floor
    isotropic: bool = False  # one sigma for every axis (a round kernel, shifted)

    @property
    def tie(self) -> np.ndarray:
        """``theta = tie @ x``: the full vector ``[log-Cholesky (d(d+1)/2), shift (d)]`` of the free one.

        Columns pick entries (per-axis log sigmas, correlations, shift components); a round kernel
        has one column that moves every log sigma together. Fixed entries are zero.
        """
        nc, d = n_cholesky(self.d), self.d
        columns = []
        if self.isotropic:
            columns.append(np.r_[np.ones(d), np.zeros(nc - d + d)])
        else:
            columns += [np.eye(nc + d)[i] for i in range(nc if self.full_covariance else d)]
        if self.shift:
            columns += [np.eye(nc + d)[nc + i] for i in range(d)]
        return np.stack(columns, axis=1)

    def kernel(self, x: np.ndarray) -> GaussianKernel:
        """The kernel of a free-parameter vector."""
        nc = n_cholesky(self.d)
        full = self.tie @ x
        return GaussianKernel.from_cholesky(full[:nc], full[nc:])

    def start(self, kernel: GaussianKernel) -> np.ndarray:
        """The free vector closest to ``kernel`` (a round fit starts from the mean log sigma)."""
        return np.linalg.pinv(self.tie) @ np.concatenate([kernel.cholesky, kernel.shift])

    def derivatives(self, kernel: GaussianKernel) -> np.ndarray:
        """``dK/dx`` for the free parameters, shape ``(len(x), *kernel)``."""
        full = kernel.derivatives(self.truncate)
        return np.tensordot(self.tie.T, full, axes=1)

    def _replace_delta(self, delta: float) -> _Options:
        return replace(self, delta=float(delta))


class _Point(NamedTuple):
    """A candidate solution and what was computed at it."""

    x: np.ndarray  # free kernel parameters
    gain: float
    offset: float
    loss: float
    kernel: GaussianKernel
    sampled: np.ndarray  # the kernel array
    model: np.ndarray  # reference blurred by the kernel (crop, frames first)
    residual: np.ndarray  # gain * model + offset - target


class _Normal(NamedTuple):
    """Gauss-Newton normal equations over ``[free kernel parameters, gain, offset]``."""

    matrix: np.ndarray | None
    gradient: np.ndarray


class _Problem:
    """Reference spectrum, target and used pixels of one fit; evaluates points and normal equations.

    Points keep their own residual in the spectrum's dtype, and with ``keep_models`` their model
    when the gain is fitted (the exact matrix needs it); without, a fitted gain and offset are
    applied inside the transform.
    """

    def __init__(self, reference, target, used, options: _Options, radius, workers, *,
                 dtype=np.float64, space: _KernelSpace | None = None, keep_models: bool = True):
        self.space = space  # gives the unweighted matrix from statistics instead of Jacobian images
        # the exact matrix with gain/offset needs each point's model; chord steps (a fixed matrix)
        # and gradients do not: without a copy per point, two image-sized arrays fewer
        self.keep_models = keep_models
        self.options = options
        self.reference = reference
        self.target = target
        self.used = None if used is None else used.astype(np.float64)
        self.n_used = int(target.size if used is None else np.count_nonzero(used))
        self.workers = workers
        self.evaluations = 0
        self.spectrum = _ReferenceSpectrum(reference, tuple(radius), workers, dtype=dtype)
        self._residuals: list[tuple[np.ndarray, weakref.ref]] = []  # buffers and their handed-out views

    def _residual_buffer(self) -> np.ndarray:
        """An image-sized array for a new point's residual, in memory no live point uses.

        The solver holds at most a point and a trial at once, so two buffers take turns (a third
        stands by). A fresh array per evaluation is paged in and zeroed by the kernel each time:
        0.6 GB of a 3D fit's fresh memory, at about 2.8 ms per MB on the benchmark machine
        (docs/whole-gaussian.md). A buffer is handed out as a view and is free again once that
        view is gone.
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

    def page_in(self) -> _Problem:
        """Touch the memory the first evaluations write (the spectra's buffer, two residuals) now.

        Fresh memory costs about 2.3-2.8 ms per MB on first touch on the benchmark machine: 2 s
        of a 3D fit's full-volume steps. A problem built ahead on a thread of its own
        (`_prefetch`) pays that while the crops are solved (docs/whole-gaussian.md).
        """
        self.spectrum.page_in()
        for view in [self._residual_buffer(), self._residual_buffer()]:
            view.fill(0)
        return self

    def for_options(self, options: _Options) -> _Problem:
        """Take ``options`` of the same fit (a Huber threshold or L1 floor set since it was built).

        The spectrum and buffers stay: only the loss's settings change.
        """
        self.options = options
        return self

    def _ensure_radius(self, kernel: np.ndarray) -> None:
        radius = tuple((k - 1) // 2 for k in kernel.shape)
        if any(r > p for r, p in zip(radius, self.spectrum.radius)):
            _check_radius(radius, self.target.shape[1:])
            grown = tuple(max(r, p) * 3 // 2 + 2 for r, p in zip(radius, self.spectrum.radius))
            dtype, self.spectrum = self.spectrum.dtype, None  # the old buffers go first
            self.spectrum = _ReferenceSpectrum(self.reference, grown, self.workers, dtype=dtype)

    def _sum(self, values: np.ndarray) -> float:
        return float(values.sum(dtype=np.float64)) if self.used is None else float(_dot(self.used, values))

    def evaluate(self, x, gain: float, offset: float) -> _Point:
        """Model, residual and loss at ``x``; the L2 gain/offset are the closed-form best ones."""
        opts = self.options
        kernel = opts.kernel(x)
        sampled = kernel.sampled(opts.truncate)
        self._ensure_radius(sampled)
        factors = kernel.factors(opts.truncate)
        self.evaluations += 1
        fitted = opts.gain_offset and (opts.loss == "l2" or self.keep_models)  # the model itself is needed
        # a view of a reused buffer: the bare model, or gain * model + offset made in the transform
        model = self.spectrum.model(sampled, factors, gain=1.0 if fitted else gain,
                                    offset=0.0 if fitted else offset)
        if not fitted:
            residual = np.subtract(model, self.target, out=self._residual_buffer(), dtype=self.spectrum.dtype)
            return _Point(x, gain, offset, self.loss_of(residual), kernel, sampled, None, residual)
        if opts.loss == "l2":
            gain, offset = self._best_l2(model)
        residual = np.multiply(model, gain, out=self._residual_buffer(), dtype=self.spectrum.dtype)
        residual += offset
        residual -= self.target
        kept = np.ascontiguousarray(model) if self.keep_models else None
        return _Point(x, gain, offset, self.loss_of(residual), kernel, sampled, kept, residual)

    def model_of(self, point: _Point) -> np.ndarray:
        """The point's model: the kept copy, or made again (a view of the reused model buffer)."""
        return point.model if point.model is not None else self.spectrum.model(point.sampled)

    def _best_l2(self, model) -> tuple[float, float]:
        m = self.used
        sw = float(self.n_used)
        wf = model if m is None else model * m
        sf, sff = float(wf.sum(dtype=np.float64)), float(_dot(wf, model))
        sb, sfb = self._sum(self.target), float(_dot(wf, self.target))
        det = sw * sff - sf * sf
        if det <= 1e-12 * max(sw * sff, 1e-300):
            return 0.0, sb / sw
        gain = (sw * sfb - sf * sb) / det
        return gain, (sb - gain * sf) / sw

    def loss_of(self, residual: np.ndarray) -> float:
        if self.used is None and self.options.loss == "l2":
            return _dot(residual, residual)
        if self.used is None:
            return loss_sum(residual, self.options.loss, self.options.delta)
        return loss_sum(residual[self.used > 0], self.options.loss, self.options.delta, overwrite=True)

    def weights(self, point: _Point, loss: str | None = None) -> np.ndarray | None:
        """Per-pixel second derivative of the loss (times the mask): ``J^T W J`` is then its Hessian.

        1 for L2 (None without a mask); ``1[|r| < delta]`` for Huber; for L1, whose second
        derivative is ``2 delta(r)``, a kernel estimate of twice the residual density at zero,
        ``1[|r| < h] / h`` with ``h = L1_WINDOW`` mean ``|r|`` (as `loss_curvature`). The IRLS
        weights ``1/max(|r|, eps)`` majorise L1 instead and overstate its curvature several-fold:
        the chord steps then crept along flat valleys (docs/whole-gaussian.md). Where fewer than
        `MIN_INSIDE` of the pixels fall inside the window (a two-valued residual), the IRLS
        weights stand in.
        """
        loss = loss or self.options.loss
        if loss == "l2":
            return self.used
        delta = self.options.delta
        w = np.abs(point.residual)  # one image-sized array, transformed in place
        window = delta if loss == "huber" else max(L1_WINDOW * self._sum(w) / max(self.n_used, 1), delta)
        inside = w < window
        if np.count_nonzero(inside if self.used is None else inside & (self.used > 0)) \
                >= MIN_INSIDE * self.n_used:
            np.multiply(inside, 1.0 if loss == "huber" else 1.0 / window, out=w)
        else:
            np.maximum(w, delta, out=w)
            np.divide(delta if loss == "huber" else 1.0, w, out=w)  # min(1, delta/|r|), 1/max(|r|, eps)
        return w if self.used is None else np.multiply(w, self.used, out=w, casting="unsafe")

    def normal(self, point: _Point, *, matrix: bool, loss: str | None = None) -> _Normal:
        """Gradient ``J^T psi(r)`` (and with ``matrix`` the Hessian ``J^T W J``, `weights`).

        Over the kernel parameters, then gain and offset. ``psi``, the derivative of ``loss``
        (default the fit's) times the mask, is written straight into the FFT buffer.
        """
        opts = self.options
        loss = loss or opts.loss
        derivs = opts.derivatives(point.kernel)
        radius = tuple((k - 1) // 2 for k in point.sampled.shape)
        corr, total = self.spectrum.lag_correlation(
            point.residual, radius,
            transform=lambda r, out: _loss_derivative(r, out, loss, opts.delta, self.used))
        grad = list(point.gain * (derivs.reshape(len(derivs), -1) * corr.reshape(-1)).sum(axis=1))
        if opts.gain_offset:  # sum(psi m) = sum_n K[n] c[n]: the model is not needed
            grad += [float(np.vdot(point.sampled, corr)), total]
        if not matrix:
            return _Normal(None, np.array(grad))
        return _Normal(self._matrix(point, self.weights(point, loss), derivs, radius), np.array(grad))

    def _matrix(self, point: _Point, w, derivs, radius) -> np.ndarray:
        """``J^T W J``: one Jacobian image at a time, its row from a lag correlation."""
        if self.space is not None and w is None:
            return self.space.matrix_at(point.kernel, point.gain)
        k = len(derivs)
        p = k + (2 if self.options.gain_offset else 0)
        out = np.zeros((p, p))
        go = self.options.gain_offset
        model = None
        if go:  # the point's kept model, or made again as a copy (the Jacobians reuse its buffer)
            model = point.model if point.model is not None else self.spectrum.model(point.sampled).copy()
        wf = (model if w is None else w * model) if go else None
        for i, dk in enumerate(derivs):
            jac = self.spectrum.model(dk)
            wj = jac if w is None else w * jac
            if go:  # before the lag correlation, which overwrites the model buffer (jac)
                out[i, k] = out[k, i] = point.gain * float(_dot(wf, jac))
                out[i, k + 1] = out[k + 1, i] = point.gain * float(wj.sum(dtype=np.float64))
            corr, _ = self.spectrum.lag_correlation(wj, radius)
            out[i, :k] = point.gain**2 * (derivs.reshape(len(derivs), -1) * corr.reshape(-1)).sum(axis=1)
        if go:
            sw = float(self.n_used) if w is None else float(w.sum())
            out[k, k], out[k, k + 1] = float(_dot(wf, model)), float(wf.sum(dtype=np.float64))
            out[k + 1, k], out[k + 1, k + 1] = out[k, k + 1], sw
        return 0.5 * (out + out.T)


def _loss_derivative(residual: np.ndarray, out: np.ndarray, loss: str, delta: float, used) -> None:
    """``out = psi(r)`` (times the mask): the loss's derivative (half of it for L2).

    ``clip(r, -delta, delta)`` for Huber, ``clip(r / eps, -1, 1)`` for L1 (``sign(r)`` smoothed
    within ``eps = delta``), ``r`` for L2.
    """
    if loss == "huber":
        np.clip(residual, -delta, delta, out=out)
    elif loss == "l1":
        np.multiply(residual, 1.0 / delta, out=out, casting="unsafe")
        np.clip(out, -1.0, 1.0, out=out)
    else:
        out[...] = residual
    if used is not None:
        np.multiply(out, used, out=out, casting="unsafe")


class _KernelSpace:
    """The whole image's Gauss-Newton matrix (L2, no mask) from statistics of the reference alone.

    With ``m = A_pad * K``: ``sum m = K.s`` and ``sum m^2 = K^T G K``, where ``s`` holds the box
    sums of the padded reference and ``G[n, k] = sum_x A_pad(x - n) A_pad(x - k)``. ``G`` is
    replaced by the Toeplitz ``T(n - k)``, the reference's autocorrelation (symmetrised): they
    differ only on strips |n| wide along the edges, which matters little for a matrix that only
    preconditions steps along the exact gradient. Set-up: a few FFTs of the padded grid; no
    Jacobian images. (Searching on this quadratic form instead of the exact loss was tried and
    is biased by those strips: docs/whole-gaussian.md.)
    """

    def __init__(self, frames: Frames, options: _Options, radius, workers, dtype):
        self.options, self.frames = options, frames
        self.workers, self.dtype = workers, dtype
        self.n_used = frames.target.size
        self._build(tuple(radius))

    def _build(self, radius: tuple[int, ...]) -> None:
        """Statistics for kernels up to ``radius``.

        On a grid of its own, with a margin of ``2 radius`` for the lags of T, dropped once they
        are taken: a fit's models need only ``radius`` (in 3D the wider grid was a third larger).
        """
        lags = tuple(2 * r for r in radius)
        grid = _ReferenceSpectrum(self.frames.reference, radius, self.workers, dtype=self.dtype,
                                  margin=lags)
        # the box sums enter only the gain/offset rows (one pass over the grid: skip it otherwise)
        self.s = grid.box_sums(radius) if self.options.gain_offset else None
        t, _ = grid.lag_correlation(self.frames.reference, lags)
        self.t = 0.5 * (t + t[(slice(None, None, -1),) * len(radius)])
        self.radius = radius

    def matrix_at(self, kernel: GaussianKernel, gain: float) -> np.ndarray:
        """The Gauss-Newton matrix at a kernel (gain and offset given), without the target's statistics."""
        k = kernel.sampled(self.options.truncate)
        s, t = self._local(tuple((n - 1) // 2 for n in k.shape))
        x = self.options.start(kernel)
        point = _Point(x, gain, 0.0, 0.0, kernel, k, self._gram(t, k), None)
        return self._matrix(point, s, t)

    def _local(self, radius: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``s`` and ``T`` cut to a kernel of the given radius."""
        if any(r > p for r, p in zip(radius, self.radius)):
            _check_radius(radius, self.frames.target.shape[1:])
            self._build(tuple(max(r, p) * 3 // 2 + 2 for r, p in zip(radius, self.radius)))
        cut = tuple(slice(p - r, p + r + 1) for r, p in zip(radius, self.radius))
        lag = tuple(slice(2 * (p - r), 2 * (p + r) + 1) for r, p in zip(radius, self.radius))
        return (None if self.s is None else self.s[cut]), self.t[lag]

    def _gram(self, t: np.ndarray, kernels: np.ndarray) -> np.ndarray:
        """``G k`` on the kernel's support for one kernel, or a stack of them (first axis)."""
        extra = kernels.ndim - t.ndim
        axes = tuple(range(extra, kernels.ndim))
        return signal.fftconvolve(t.reshape((1,) * extra + t.shape), kernels, mode="valid", axes=axes)

    def _matrix(self, point: _Point, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """``J^T J`` over kernel params (and gain, offset) from ``T`` and the box sums."""
        opts, g, k, gk = self.options, point.gain, point.sampled, point.model
        derivs = opts.derivatives(point.kernel)
        flat = derivs.reshape(len(derivs), -1)
        q = len(flat)
        out = np.zeros((q + 2, q + 2) if opts.gain_offset else (q, q))
        out[:q, :q] = g * g * np.einsum("pi,qi->pq", flat, self._gram(t, derivs).reshape(q, -1))
        if opts.gain_offset:
            sff, sf = _dot(k, gk), _dot(k, s)
            out[:q, q] = out[q, :q] = g * np.einsum("pi,i->p", flat, gk.ravel())
            out[:q, q + 1] = out[q + 1, :q] = g * np.einsum("pi,i->p", flat, s.ravel())
            out[q, q], out[q, q + 1], out[q + 1, q], out[q + 1, q + 1] = sff, sf, sf, self.n_used
        return 0.5 * (out + out.T)


def _check_starts(starts: list[GaussianKernel], truncate: float, crop: Frames) -> None:
    """Raise unless every start kernel fits the crop it is solved on."""
    for kernel in starts:
        _check_radius(kernel.grid(truncate).radius, crop.target.shape[1:])


def _check_radius(radius, spatial) -> None:
    for r, n in zip(radius, spatial):
        if 2 * r + 1 > n:
            raise ValueError(f"the image (spatial shape {tuple(spatial)}) is too small for a kernel of "
                             f"radius {tuple(radius)} px: a blur and a shift cannot be told apart; use a "
                             "larger image or a smaller truncate")


# the solver ---------------------------------------------------------------------------------------
class _Solved(NamedTuple):
    point: _Point
    matrix: np.ndarray  # the last J^T W J used
    iterations: int


MAX_STEP = 1.0  # largest change of a log-Cholesky entry (or px of shift) in one step


def _levenberg_marquardt(problem, point: _Point, *, refresh: bool, max_iter: int,
                         matrix: np.ndarray | None = None, rtol: float = 1e-10,
                         callback=None, precision: float = 0.0) -> _Solved:
    """Minimise the loss from ``point``; ``refresh=False`` keeps the first matrix (chord method).

    Without ``refresh`` the matrix gets a BFGS update from each step and the change of the exact
    gradient it caused: the Gauss-Newton matrix misses the curvature of large residuals (a model
    that fits only roughly), a crop's matrix that of other content; the secant supplies it, so the
    chord steps converge in a few iterations instead of linearly. ``precision``: the loss's
    relative rounding (a float32 model's jitter), below which no decrease is chased.
    """
    normal = problem.normal(point, matrix=matrix is None or refresh)
    if normal.matrix is not None:
        matrix = normal.matrix
    lam, done = 1e-4, 0
    for done in range(1, max_iter + 1):
        if callback is not None:
            callback(f"whole Gaussian: step {done}")
        floor = precision * abs(point.loss)
        trial, lam = _damped_step(problem, point, matrix, normal.gradient, lam, floor)
        if trial is None:
            return _Solved(point, matrix, done - 1)
        step = _difference(trial, point, len(normal.gradient))
        decrease, point = point.loss - trial.loss, trial
        if decrease <= max(rtol * abs(point.loss), floor):
            break
        new = problem.normal(point, matrix=refresh)
        matrix = new.matrix if refresh else _secant_update(matrix, step, new.gradient - normal.gradient)
        normal = new
    return _Solved(point, matrix, done)


def _difference(a: _Point, b: _Point, size: int) -> np.ndarray:
    """``a - b`` over the solver's variables: kernel parameters, then gain and offset if stepped."""
    diff = a.x - b.x
    return diff if size == len(diff) else np.r_[diff, a.gain - b.gain, a.offset - b.offset]


def _secant_update(matrix: np.ndarray, step: np.ndarray, change: np.ndarray) -> np.ndarray:
    """BFGS update of a positive definite matrix (skipped where the curvature is not positive)."""
    ms = matrix @ step
    sy, sms = float(step @ change), float(step @ ms)
    if sy <= 1e-10 * np.linalg.norm(step) * np.linalg.norm(change) or sms <= 0:
        return matrix
    return matrix - np.outer(ms, ms) / sms + np.outer(change, change) / sy


MAX_TRIES = 12  # trials per step


def _damped_step(problem, point: _Point, matrix, gradient, lam: float, floor: float = 0.0):
    """One accepted Marquardt step, or None.

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
    slope_per_gradient = 2.0 if problem.options.loss == "l2" else 1.0  # L2: the loss is sum r^2
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
        if floor > 0 and _predicted_decrease(delta, matrix, gradient) <= floor:
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
                and _predicted_decrease(delta, matrix, gradient) <= 10 * floor:
            break  # a change the loss's rounding hides, for a small predicted one: resolved
        slope = slope_per_gradient * float(gradient @ delta)
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


def _predicted_decrease(delta: np.ndarray, matrix: np.ndarray, gradient: np.ndarray) -> float:
    """Loss decrease the quadratic model ``g.d + d.M.d / 2`` predicts for a step.

    For L2, whose gradient and matrix are half the loss's, it is half the decrease: a conservative
    test against the loss's rounding.
    """
    return -float(gradient @ delta + 0.5 * delta @ matrix @ delta)


# the fit ------------------------------------------------------------------------------------------
def _starts(start_sigma, shift: np.ndarray, full_covariance: bool) -> list[GaussianKernel]:
    """Start kernels: the per-axis sigma, and with a full covariance correlations of +-0.5 per pair."""
    s = np.maximum(np.asarray(start_sigma, dtype=np.float64), 0.3)
    starts = [GaussianKernel(np.diag(s**2), shift)]
    if full_covariance:
        d = len(s)
        for i, j in zip(*np.tril_indices(d, -1)):
            for rho in (0.5, -0.5):
                corr = np.eye(d)
                corr[i, j] = corr[j, i] = rho
                starts.append(GaussianKernel(corr * np.outer(s, s), shift))
    return starts


def _pad_radius(kernels: list[GaussianKernel], truncate: float) -> tuple[int, ...]:
    """Padding that leaves room for the kernels to grow by half during the search."""
    radius = np.max([k.grid(truncate).radius for k in kernels], axis=0)
    return tuple(int(r) * 3 // 2 + 2 for r in radius)


class _Scaled(NamedTuple):
    """A crop's solution and its pixel count (its matrix stands in for the full image's, scaled)."""

    solved: _Solved
    n_used: int
    problem: _Problem  # the crop's problem, to evaluate other kernels on it


def _best_start(problem, starts, callback, *, max_iter: int, rtol: float, scout: int) -> _Solved:
    """A few exact-matrix steps from each start decide the basin; the best one goes on to the end."""
    best = None
    for kernel in starts:
        point = problem.evaluate(problem.options.start(kernel), 1.0, 0.0)
        steps = max_iter if len(starts) == 1 else scout
        solved = _levenberg_marquardt(problem, point, refresh=True, max_iter=steps, rtol=rtol,
                                      callback=callback)
        if best is None or solved.point.loss < best.point.loss:
            best = solved
    if len(starts) > 1:
        best = _levenberg_marquardt(problem, best.point, refresh=True, max_iter=max_iter, rtol=rtol,
                                    callback=callback)
    return best


def _multistart(frames: Frames, options: _Options, starts, workers, callback, *, max_iter: int = 40,
                rtol: float = 1e-10, exact: bool = True) -> _Scaled:
    """Best L2 solution over the start kernels, each solved with a fresh matrix at every step.

    The matrix is exact, or without ``exact`` (a crop that only finds the start; no mask) the one
    `_KernelSpace` makes from statistics: kernel-sized convolutions instead of three image FFTs per
    parameter (in 3D, 27 FFTs of the crop per step).
    """
    l2 = replace(options, loss="l2")
    _check_starts(starts, options.truncate, frames)
    radius = _pad_radius(starts, options.truncate)
    if exact or frames.used is not None:
        problem = _Problem(*frames, l2, radius, workers)
    else:
        space = _KernelSpace(frames, l2, radius, workers, np.float64)
        problem = _Problem(*frames, l2, radius, workers, space=space)
    best = _best_start(problem, starts, callback, max_iter=max_iter, rtol=rtol,
                       scout=SCOUT_STEPS.get(options.d, 2))
    return _Scaled(best, problem.n_used, problem)


def _fit_l2(frames: Frames, options: _Options, starts, workers, callback, *, max_iter: int | None = None,
            rtol: float = 1e-9) -> tuple[_Problem, _Solved]:
    """L2 without a mask: multi-start on a central crop, then the exact loss of the whole image.

    Images of at most `EXACT_MATRIX_PIXELS` are solved directly with the exact matrix at each step.
    Larger ones start from the crop's solution and keep one matrix, the whole image's Gauss-Newton
    matrix from `_KernelSpace` (the chord method: each step follows the exact gradient and must lower
    the exact loss; that matrix is off by the crop's edge strips only), in float32 above
    `FLOAT32_PIXELS`. The returned matrix is the one for the standard errors.
    """
    size = frames.target.size
    if size <= EXACT_MATRIX_PIXELS:
        scout = _multistart(frames, options, starts, workers, callback, max_iter=max_iter or 40)
        problem = _Problem(*frames, options, _pad_radius([scout.solved.point.kernel], options.truncate),
                           workers)
        point = problem.evaluate(scout.solved.point.x, scout.solved.point.gain, scout.solved.point.offset)
        solved = _levenberg_marquardt(problem, point, refresh=True, max_iter=max_iter or 40, rtol=rtol,
                                      callback=callback)
        return problem, solved
    crop = central(frames, CROP_EDGE.get(options.d, 64), 4)
    start = _multistart(crop, options, starts, workers, callback, exact=False, rtol=START_RTOL).solved.point
    dtype = np.float32 if size > FLOAT32_PIXELS else np.float64
    radius = _pad_radius([start.kernel], options.truncate)
    space = _KernelSpace(frames, options, radius, workers, dtype)
    problem = _chord_problem(frames, options, radius, workers, dtype)
    matrix = space.matrix_at(start.kernel, start.gain)  # the crop's gain: the matrix only preconditions
    # float32 losses are exact to ~1e-8: stop at a relative decrease of 1e-7, and do not chase noise
    # (the start point is not held here: its arrays go as soon as the solver leaves it)
    solved = _levenberg_marquardt(problem, problem.evaluate(start.x, start.gain, start.offset),
                                  refresh=False, matrix=matrix, max_iter=max_iter or 12,
                                  rtol=max(rtol, 1e-7), callback=callback,
                                  precision=FLOAT32_LOSS_JITTER if dtype == np.float32 else 0.0)
    return problem, _Solved(solved.point, space.matrix_at(solved.point.kernel, solved.point.gain),
                            solved.iterations)


def _noise_delta(point: _Point, problem: _Problem, loss: str, delta: float | None) -> float:
    """Huber threshold (1.345 noise sigmas, noise from the L2 residual) or the L1 weight floor."""
    r = point.residual if problem.used is None else point.residual[problem.used > 0]
    noise = max(float(np.sqrt(np.pi / 2) * np.mean(np.abs(r))), 1e-12 * float(np.abs(problem.target).max()))
    if loss == "huber":
        return float(delta) if delta is not None else HUBER_K * noise
    return 1e-3 * noise


def _polish_gain_offset(problem: _Problem, point: _Point) -> _Point:
    """Exact L1 / converged Huber gain and offset at the final kernel (never worse)."""
    keep = slice(None) if problem.used is None else problem.used > 0
    model, target = problem.model_of(point)[keep], problem.target[keep]
    if problem.options.loss == "l1":  # warm: the window around the start holds, one band pass
        gain, offset, _ = l1_gain_offset(model, target, point.gain, offset=point.offset,
                                         n_eff=L1_WINDOW_PIXELS)
    else:  # damped Newton in chunked passes: no float64 copies of the images
        gain, offset, _ = huber_gain_offset(model, target, point.gain, point.offset,
                                            problem.options.delta)
    trial = problem.evaluate(point.x, gain, offset)
    return trial if trial.loss < point.loss else point


def fit_whole_gaussian(reference, target, used=None, *, loss: str = "l2", gain_offset: bool = False,
                       full_covariance: bool = False, shift: bool = True, isotropic: bool = False,
                       start_sigma, delta: float | None = None, truncate: float = 4.0,
                       workers: int | None = None, callback=None) -> FullFit:
    """Fit ``target ~ gain * K * reference + offset`` with a Gaussian ``K`` of full covariance and shift.

    Parameters
    ----------
    reference, target : array_like
        Same shape ``(frames..., *spatial)``; ``d = len(start_sigma)`` spatial axes last. One kernel,
        gain and offset for all frames.
    used : array_like of bool, optional
        True where a pixel counts (mask, border band); broadcast to the images. NaN/inf pixels are
        left out as well.
    loss : {"l2", "l1", "huber"}
        Pixel loss.
    gain_offset : bool
        Fit a gain and an offset too.
    full_covariance : bool
        Rotated ellipse (all covariance entries); else one sigma per axis.
    shift : bool
        Fit the kernel's centre; else it stays at 0.
    isotropic : bool
        One sigma for every axis (a round kernel; with ``shift``, a round kernel moved).
        Excludes ``full_covariance``.
    start_sigma : sequence of float
        Per-axis start (px), e.g. the spectral fit's sigma.
    delta : float, optional
        Huber threshold; default 1.345 noise sigmas, noise from the L2 fit's residual.
    truncate : float
        Kernel truncation in standard deviations (plus the shift).
    workers : int, optional
        FFT threads (default all cores). With more than one, the full image's problem is built on
        a thread of its own while the crops are solved (`_prefetch`).
    callback : callable, optional
        Called with a short text before each solver step; an exception in it stops the fit.

    Returns
    -------
    FullFit

    Raises
    ------
    ValueError
        Unknown loss, shapes differ, a spatial axis shorter than 8 px, a kernel too large for the
        image, or no pixel used.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}; got {loss!r}")
    d = len(start_sigma)
    frames = as_frames(reference, target, used, d)
    shift0 = (estimate_shift(frames.reference, frames.target, ndim=d, max_pixels=SHIFT_START_PIXELS)
              if shift else np.zeros(d))
    if isotropic and full_covariance:
        raise ValueError("isotropic and full_covariance exclude each other")
    options = _Options(d, loss, gain_offset, full_covariance, shift, float(truncate), 0.0, isotropic)
    starts = _starts(start_sigma, shift0, full_covariance)
    if loss == "l2" and frames.used is None:
        problem, solved = _fit_l2(frames, options, starts, workers, callback)
        return _result(problem, solved.point, solved.matrix, solved.iterations)
    return _fit_general(frames, options, starts, delta, workers, callback)


def _fit_general(frames: Frames, options: _Options, starts, delta, workers, callback) -> FullFit:
    """Masked L2, L1 and Huber: multi-start on a central crop, then the full image.

    The crop is solved with the loss's own matrix (`_Problem.weights`) at every step: to the end where
    it is the image, else for `CROP_NEWTON_STEPS` (a start, and the matrix at it). The full image then
    keeps the crop's matrix scaled to its pixel count (the chord method: every step follows the exact
    gradient of the true loss and must lower it), so a full-image step costs one model and one gradient,
    not a Jacobian image per parameter; in float32 above `FLOAT32_PIXELS`. On a large image a middle
    crop (`MIDDLE_EDGE`) takes those chord steps first: its solution starts the full image closer.
    Meanwhile the full image's problem is built on a thread of its own (`_prefetch`).
    """
    loss, truncate = options.loss, options.truncate
    crop = central(frames, CROP_EDGE.get(options.d, 64), 4)
    crop_is_image = crop.reference.shape == frames.reference.shape
    _check_starts(starts, truncate, crop)  # before anything is built for kernels too large for it
    # the full image's problem is built (and paged in) while the crops are solved
    full_problem = None if crop_is_image else _prefetch(
        lambda: _chord_problem(frames, options, _pad_radius(starts, truncate), workers).page_in(), workers)
    # L1/Huber take only a start from the L2 multi-start; masked L2 keeps its matrix (exact)
    scout = _multistart(crop, options, starts, workers, callback, exact=loss == "l2",
                        rtol=1e-10 if loss == "l2" else START_RTOL)
    solved = scout.solved
    local = scout.problem
    if loss != "l2":
        local = _Problem(*crop, options, _pad_radius([solved.point.kernel], truncate), workers)
        point = local.evaluate(solved.point.x, solved.point.gain, solved.point.offset)
        options = options._replace_delta(_noise_delta(point, local, loss, delta))
        local = _Problem(*crop, options, _pad_radius([solved.point.kernel], truncate), workers)
        point = local.evaluate(solved.point.x, solved.point.gain, solved.point.offset)
        # solved to the end if the crop is the image; else a start and the loss's Hessian for the
        # chord steps (`CROP_NEWTON_STEPS`)
        solved = _levenberg_marquardt(local, point, refresh=True, rtol=1e-6, callback=callback,
                                      max_iter=12 if crop_is_image else CROP_NEWTON_STEPS)
    if crop_is_image:  # solved
        problem, point, steps = local, solved.point, solved.iterations
    else:
        per_pixel = solved.matrix / max(local.n_used, 1)  # the crop's matrix, per pixel used
        start, per_pixel = _rehearse(frames, options, solved.point, per_pixel, workers, callback)
        problem, full = _chord(frames, options, start, per_pixel, workers, callback,
                               problem=full_problem().for_options(options))
        point, steps = full.point, full.iterations
    # the exact gain/offset at the final kernel, in float64. In float32 (large images) the chord's
    # joint steps already stop at the loss's rounding: on the benchmark rows the polish moved the
    # loss by 3e-9 to 1.7e-7 of itself there, for 0.8-3.9 s at 4096^2 (docs/whole-gaussian.md)
    if options.gain_offset and loss != "l2" and problem.spectrum.dtype == np.float64:
        point = _polish_gain_offset(problem, point)
    # standard errors need the least-squares matrix, not the loss's: the crop's, scaled
    matrix = local.normal(local.evaluate(point.x, point.gain, point.offset), matrix=True,
                          loss="l2").matrix * (problem.n_used / max(local.n_used, 1))
    return _result(problem, point, matrix, steps)


def _rehearse(frames: Frames, options: _Options, start: _Point, per_pixel: np.ndarray, workers,
              callback) -> tuple[_Point, np.ndarray]:
    """The chord steps on a middle crop (`MIDDLE_EDGE`) first, on images at least 4x larger.

    Returns a start and a matrix per pixel used for the full image. The middle crop's chord steps
    start the full image closer, at a sixteenth of a full step's cost. In 3D, where they took
    `REMATRIX_STEPS` or more, the loss's own matrix at their end (one Jacobian image of the middle
    crop per parameter, 0.4 s at 128^3) replaces the small crop's: within a kernel radius of its
    faces, where the crop's reflection stands in for the image, lie most of a 64^3 crop's voxels
    (a tenth of a 384^2 crop's pixels). On the 3D benchmark the full volume's evaluations went from
    13 to 6 (L1 full covariance), 9 to 6 (L1 per axis + shift), 8 to 4 (Huber full covariance)
    (docs/whole-gaussian.md). Only parameters are returned: no crop-sized arrays stay alive during
    the full image's steps.
    """
    middle = central(frames, MIDDLE_EDGE.get(options.d, 128), 4)
    if middle.target.size * 4 > frames.target.size:
        return start, per_pixel
    # in float32 whatever its size: a start needs no more than the loss's float32 resolution
    problem, solved = _chord(middle, options, start, per_pixel, workers, callback, dtype=np.float32)
    point = solved.point
    rematrix_from = REMATRIX_STEPS.get(options.d)
    if rematrix_from is None or solved.iterations < rematrix_from:  # the crop's matrix serves
        return point._replace(model=None, residual=None), per_pixel
    matrix = problem.normal(point, matrix=True).matrix
    return point._replace(model=None, residual=None), matrix / max(problem.n_used, 1)


def _chord_problem(frames: Frames, options: _Options, radius, workers, dtype=None) -> _Problem:
    """The problem chord steps run on: no models kept; FFTs in ``dtype``.

    By default float32 above `FLOAT32_PIXELS`, else float64.
    """
    if dtype is None:
        dtype = np.float32 if frames.target.size > FLOAT32_PIXELS else np.float64
    return _Problem(*frames, options, radius, workers, dtype=dtype, keep_models=False)


def _chord(frames: Frames, options: _Options, start: _Point, per_pixel: np.ndarray, workers,
           callback, dtype=None, problem: _Problem | None = None) -> tuple[_Problem, _Solved]:
    """Chord steps on ``frames`` from ``start``, with the crop's matrix scaled to the pixels used.

    ``problem``: one built for ``frames`` already (`_chord_problem`), else one is built with FFTs
    in ``dtype``.
    """
    if problem is None:
        problem = _chord_problem(frames, options, _pad_radius([start.kernel], options.truncate),
                                 workers, dtype)
    matrix = per_pixel * problem.n_used
    # float32 losses are exact to ~1e-7 of themselves: no decrease below that is chased.
    # (The start point is not held here: its arrays go as soon as the solver leaves it.)
    return problem, _levenberg_marquardt(problem, problem.evaluate(start.x, start.gain, start.offset),
                                         refresh=False, matrix=matrix, max_iter=12, rtol=1e-7,
                                         callback=callback,
                                         precision=FLOAT32_LOSS_JITTER if problem.spectrum.dtype == np.float32
                                         else 0.0)


def _prefetch(build: Callable[[], T], workers) -> Callable[[], T]:
    """``build()`` started now on a thread of its own; the returned function waits for its result.

    With one core allowed (``workers``) nothing runs ahead: the function calls ``build`` itself.
    The thread's work is mostly paging in fresh memory (`_Problem.page_in`), which the solver
    on the crops, largely single-threaded, leaves a core for. Should the fit stop first (an
    error, a cancel), the thread finishes its build alone and the result is dropped.
    """
    if threads(-1 if workers is None else workers) < 2:
        return build
    pool = ThreadPoolExecutor(1, thread_name_prefix="blurfit-prefetch")
    future = pool.submit(build)
    pool.shutdown(wait=False)  # the thread ends with its one task
    return future.result


def _result(problem: _Problem, point: _Point, matrix: np.ndarray, steps: int) -> FullFit:
    """Pack the solution with Gauss-Newton standard errors (delta method for the covariance)."""
    opts = problem.options
    rss = float(_dot(point.residual, point.residual if problem.used is None
                        else point.residual * problem.used))
    p = len(matrix)
    s2 = rss / max(problem.n_used - p, 1)
    with np.errstate(all="ignore"):
        try:
            cov = s2 * np.linalg.inv(matrix)
        except np.linalg.LinAlgError:
            cov = np.full((p, p), np.nan)
    k, d = len(point.x), opts.d
    nc = n_cholesky(d)
    full = opts.tie @ cov[:k, :k] @ opts.tie.T
    jac = point.kernel.covariance_jacobian()  # (nc, d, d)
    var_cov = np.einsum("pij,pq,qij->ij", jac, full[:nc, :nc], jac)
    var_shift = np.diag(full)[nc:] if opts.shift else np.full(d, np.nan)
    go = opts.gain_offset
    return FullFit(
        kernel=point.kernel, gain=float(point.gain), offset=float(point.offset),
        loss_sum=float(point.loss), loss_name=opts.loss, rss=rss, n_used=problem.n_used,
        evaluations=problem.evaluations, iterations=steps,
        covariance_stderr=np.sqrt(np.abs(var_cov)), shift_stderr=np.sqrt(np.abs(var_shift)),
        gain_stderr=float(np.sqrt(abs(cov[k, k]))) if go else float("nan"),
        offset_stderr=float(np.sqrt(abs(cov[k + 1, k + 1]))) if go else float("nan"),
        delta=opts.delta if opts.loss == "huber" else None, residual=point.residual,
    )


