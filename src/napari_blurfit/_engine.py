"""Evaluate the objectives over a `Pair`, in memory (numpy) or block by block (dask).

Two things are computed over the data: the spectral statistics (one pass; they add up over frames
and blocks) and, for L1/Huber/masked fits, the loss at a given sigma (one pass per evaluation).
For dask arrays each block is a group of whole frames, so nothing larger than one block is ever in
memory, and the same code runs on a `dask.distributed` cluster.
"""

from __future__ import annotations

import operator
import os
from concurrent.futures import ThreadPoolExecutor
from functools import reduce
from typing import NamedTuple

import numpy as np

from ._gain_offset import GainOffset, best_gain_offset, irls_sums, robust_gain_offset
from ._gaussian import IDENTITY_BELOW
from ._kernels import transfer
from ._losses import FLOAT32_LOSS_JITTER, L1, L2, Loss, chunks, sum64
from ._spectral import SpectralStats, block_stats, contract, normal_matrix
from ._transforms import frame_dct, frame_idct
from ._validate import Pair, fill_nonfinite

TREE_WIDTH = 8  # blocks summed per node of the dask reduction tree
SUBSAMPLE = 2**18  # pixels the robust gain/offset is solved on during the sigma search


def blur_coefficients(ref_hat: np.ndarray, sigma, ndim: int, truncate: float,
                      out: np.ndarray | None = None) -> np.ndarray:
    """``H(sigma) * ref_hat`` for frames with spatial axes last, into ``out`` if given."""
    for i, (s, n) in enumerate(zip(sigma, ref_hat.shape[ref_hat.ndim - ndim :])):
        h = transfer([s], n, truncate)[:, 0].astype(ref_hat.dtype)
        shape = [1] * ref_hat.ndim
        shape[ref_hat.ndim - ndim + i] = n
        out = np.multiply(ref_hat if i == 0 else out, h.reshape(shape), out=out)
    return out


def blurred(ref_hat, sigma, ndim, truncate, workers=None, out=None) -> np.ndarray:
    """``gaussian_filter(reference, sigma)`` over the spatial axes, from the reference's DCT.

    ``out`` (shaped like ``ref_hat``) is reused instead of a new array: with many evaluations
    fresh arrays cost page faults, badly so where the allocator returns memory eagerly (dask
    workers set ``MALLOC_TRIM_THRESHOLD_``).
    """
    coefs = blur_coefficients(ref_hat, sigma, ndim, truncate, out=out)
    return frame_idct(coefs, ndim, workers=workers, overwrite=True)


def _tree_sum(items):
    """Sum dask delayed objects in a shallow tree, so memory does not grow with their number."""
    from dask import delayed

    while len(items) > 1:
        items = [delayed(lambda *xs: reduce(lambda a, b: a + b, xs))(*items[i : i + TREE_WIDTH])
                 for i in range(0, len(items), TREE_WIDTH)]
    return items[0]


def _frame_blocks(pair: Pair):
    """Delayed (reference, target, used) blocks of whole frames of a dask pair."""
    import dask.array as da

    nd = pair.ndim
    whole = {ax: -1 for ax in range(pair.reference.ndim - nd, pair.reference.ndim)}
    ref = pair.reference.rechunk(whole)
    tgt = pair.target.rechunk(ref.chunks)
    refs, tgts = ref.to_delayed().ravel(), tgt.to_delayed().ravel()
    if pair.used is None:
        useds = [None] * len(refs)
    else:
        used = da.from_array(np.broadcast_to(pair.used, ref.shape), chunks=ref.chunks)
        useds = used.to_delayed().ravel()
    return list(zip(refs, tgts, useds))


def _block_stats(ref, tgt, used, ndim, swap, workers):
    ref, tgt, finite, count = fill_nonfinite(ref, tgt)
    keep = _keep(used, finite)
    n_used = ref.size if keep is None else int(np.count_nonzero(np.broadcast_to(keep, ref.shape)))
    if swap:
        ref, tgt = tgt, ref
    return _StatsCount(block_stats(ref, tgt, ndim, workers=workers), count, n_used)


def _keep(used, finite):
    """Pixels that count: the caller's mask and the finite ones (None: all)."""
    if used is None:
        return finite
    return used if finite is None else used & finite


class _StatsCount:
    """Statistics plus non-finite and used pixel counts, summable in the dask tree."""

    def __init__(self, stats, nonfinite, used):
        self.stats, self.nonfinite, self.used = stats, nonfinite, used

    def __add__(self, other):
        return _StatsCount(self.stats + other.stats, self.nonfinite + other.nonfinite,
                           self.used + other.used)


def compute_stats(pair: Pair, *, swap: bool = False, workers=None, dtype=np.float64):
    """Spectral statistics of the whole pair: ``(stats, ref_hat, n_nonfinite, n_used)``.

    ``ref_hat`` (the reference's DCT, kept for spatial evaluations) is returned for a single
    in-memory frame, where it comes for free; otherwise None. Stacks in memory are processed in
    chunks of frames on a thread pool (numpy and the FFTs release the GIL), dask pairs block by
    block on the active dask scheduler. ``swap`` gives the statistics of the reverse direction.
    ``dtype``: of a single frame's ``paa``/``pab``; float32 where they only give a start (a
    whole-Gaussian fit): half their memory, and no float64 arrays to page in and compact later.
    Sums over several frames stay in float64.
    """
    nd = pair.ndim
    if not pair.dask:
        ref, tgt = (pair.target, pair.reference) if swap else (pair.reference, pair.target)
        spatial = ref.shape[ref.ndim - nd :]
        ref, tgt = ref.reshape((-1, *spatial)), tgt.reshape((-1, *spatial))
        threads = min(len(ref), os.cpu_count() or 1)
        if threads == 1:
            ref_hat = frame_dct(ref, nd, workers=workers)
            tgt_hat = frame_dct(tgt, nd, workers=workers)
            stats = SpectralStats.zeros(spatial, dtype).accumulate(ref_hat, tgt_hat, workers=workers)
            return stats, ref_hat.reshape(pair.reference.shape), pair.n_nonfinite, pair.n_pixels
        edges = np.linspace(0, len(ref), min(len(ref), 4 * threads) + 1).astype(int)
        chunks = [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]  # views, not copies
        with ThreadPoolExecutor(threads) as pool:
            parts = pool.map(lambda idx: block_stats(ref[idx], tgt[idx], nd, workers=1), chunks)
            stats = reduce(operator.iadd, parts)  # each part is new: add in place
        return stats, None, pair.n_nonfinite, pair.n_pixels
    import dask
    from dask import delayed

    parts = [delayed(_block_stats)(r, t, u, nd, swap, workers) for r, t, u in _frame_blocks(pair)]
    (total,) = dask.compute(_tree_sum(parts))
    return total.stats, None, total.nonfinite, total.used


def _box_or_mask(used: np.ndarray):
    """Slices when the used pixels form a box, else the mask itself.

    A box (a border band excluded) is the common case; indexing with it is a view, not a copy.
    """
    box = []
    for axis in range(used.ndim):
        hits = np.flatnonzero(used.any(axis=tuple(a for a in range(used.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    box = tuple(box)
    return box if np.count_nonzero(used) == used[box].size else used


def target_spread(target: np.ndarray, used: np.ndarray | None) -> float:
    """Sum of squares of the target about its mean over the used pixels (for r2)."""
    t = target if used is None else target[np.broadcast_to(used, target.shape)]
    t = t.astype(np.float64)
    return float(np.square(t - t.mean()).sum())


class Evaluation(NamedTuple):
    """The loss at one sigma, with the gain/offset used and (optionally) its gradient."""

    value: float  # loss sum over the used pixels
    gain: float
    offset: float
    gradient: np.ndarray | None  # d value / d sigma_i, one per spatial axis
    curvature: float  # mean second derivative of the loss over the residuals (`loss_curvature`)
    # d value / d (gain, offset) over all pixels: not zero where they were solved on a sample
    gain_offset_gradient: np.ndarray | None = None


def _sample_index(shape: tuple[int, ...], size: int, seed: int = 0):
    """A fixed random sample of about ``size`` distinct positions in an array of ``shape``.

    Sorted (cache-friendly gathers); drawn with replacement and deduplicated, which is much
    faster than `Generator.choice` without replacement and as random.
    """
    n = int(np.prod(shape))
    flat = np.sort(np.random.default_rng(seed).integers(0, n, size))
    flat = flat[np.concatenate([[True], flat[1:] != flat[:-1]])]  # np.unique hashes: slower
    return np.unravel_index(flat, shape)


def sigma_gradient(spectrum: np.ndarray, sigma, truncate: float) -> np.ndarray:
    """``sum_k S(k) dH/dsigma_i(k)`` for each axis i, for a spatial-shape spectrum ``S``.

    ``dH/dsigma_i`` is separable (``dh_i`` on axis i, ``h_j`` on the others), so every component
    is one entry of a single outer-grid contraction with ``[h, dh]`` per axis. The heavy first
    product runs in the spectrum's dtype (float32 stays float32: no copy); the rest in float64.
    """
    d = spectrum.ndim
    vectors = []
    for axis, (s, n) in enumerate(zip(sigma, spectrum.shape)):
        h, dh = transfer([s], n, truncate, derivative=True)
        v = np.concatenate([h, dh], axis=1)
        vectors.append(v.astype(spectrum.dtype) if axis == d - 1 else v)
    table = contract(spectrum, vectors, joint=False)
    return np.array([float(table[tuple(int(j == i) for j in range(d))]) for i in range(d)])


class _GradientSums(NamedTuple):
    """Per-block parts of a dask gradient (they add up)."""

    spectrum: np.ndarray
    inside: float

    def __add__(self, other):
        return _GradientSums(self.spectrum + other.spectrum, self.inside + other.inside)


class SpatialObjective:
    """Loss sum of ``gain * G_sigma * A + offset`` against ``B`` over the used pixels.

    Each call is one filter pass (an inverse DCT of the cached reference transform in memory, or a
    pass over the blocks for dask). With ``gain_offset`` the best gain/offset for the loss are
    found for each sigma: in memory on a fixed random sample of `SUBSAMPLE` pixels (exactly for
    L1, by Newton for Huber, warm-started from the previous sigma; the loss itself is always summed
    over all used pixels) and exactly over all pixels by `finish`; for dask by IRLS. In memory,
    `point` also returns the gradient over the sigmas: one more DCT (docs/design.md section 11).
    Every evaluation is recorded in ``trace``.
    """

    def __init__(self, pair: Pair, ref_hat, *, loss: Loss, gain_offset, truncate, workers,
                 n_used, start=(1.0, 0.0), callback=None):
        self.pair, self.loss, self.gain_offset = pair, loss, gain_offset
        self.callback = callback
        self.truncate, self.workers = truncate, workers
        if ref_hat is None and not pair.dask:  # stacks: transform the reference once, here
            ref_hat = frame_dct(pair.reference, pair.ndim, workers=workers)
        self.ref_hat = ref_hat
        self.gain, self.offset = start
        self.trace: list[tuple[tuple[float, ...], float]] = []
        self._cache: dict = {}
        self.n_used = n_used
        if not pair.dask:
            self._init_memory(pair)
        else:
            self._blocks = _frame_blocks(pair)

    def _init_memory(self, pair: Pair) -> None:
        used = pair.used
        if used is not None:
            used = _box_or_mask(np.broadcast_to(used, pair.target.shape))
        self._used = used
        self._target = pair.target if used is None else pair.target[self._used]
        self._buffer = np.empty_like(self.ref_hat)  # one model array, reused by evaluations
        self._model_key: tuple | None = None  # the sigma whose model is in the buffer
        self._work: np.ndarray | None = None  # residual derivative / its spectrum (gradients)
        self._sample = None  # all pixels: no sample
        if self._target.size > SUBSAMPLE:
            self._sample = _sample_index(self._target.shape, SUBSAMPLE)
        self._target_sample = self._take(self._target)

    @property
    def precision(self) -> float:
        """Relative resolution of the loss values: a float32 model jitters them by ~1e-7."""
        dtype = self.ref_hat.dtype if self.ref_hat is not None else self.pair.reference.dtype
        return FLOAT32_LOSS_JITTER if dtype == np.float32 else 0.0

    @property
    def has_gradient(self) -> bool:
        """Gradients are available (in memory; for dask with a fixed gain/offset)."""
        return not self.pair.dask or not self.gain_offset

    def _take(self, pixels: np.ndarray) -> np.ndarray:
        """The sampled pixels of a used-pixel array, as float64."""
        if self._sample is None:
            return pixels.reshape(-1).astype(np.float64)
        return pixels[self._sample].astype(np.float64)

    def _model(self, sigma):
        """The blurred reference at the used pixels (in memory only; valid until the next call)."""
        key = tuple(float(s) for s in sigma)
        if key != self._model_key:
            blurred(self.ref_hat, sigma, self.pair.ndim, self.truncate, self.workers,
                    out=self._buffer)
            self._model_key = key
        model = self._buffer
        return model if self._used is None else model[self._used]

    def _sums_function(self, sigma, loss: Loss):
        nd, tr, w = self.pair.ndim, self.truncate, self.workers
        if not self.pair.dask:
            model = self._model(sigma)
            return lambda g, o: irls_sums(model, self._target, g, o, loss)
        import dask
        from dask import delayed

        def block(r, t, u, g, o):
            r, t, finite, _ = fill_nonfinite(r, t)
            keep = _keep(u, finite)
            model = blurred(frame_dct(r, nd, workers=w), sigma, nd, tr, w)
            if keep is not None:
                model, t = model[keep], t[keep]
            return irls_sums(model, t, g, o, loss)

        def sums(g, o):
            parts = [delayed(block)(r, t, u, g, o) for r, t, u in self._blocks]
            (total,) = dask.compute(_tree_sum(parts))
            return total

        return sums

    def evaluate(self, sigma, loss: Loss | None = None):
        """``(loss_sum, gain, offset)`` at ``sigma`` (per-axis pixels); repeated calls are cached.

        ``loss``: another loss than the fit's (for a noise scale or an RSS), gain/offset as given.
        """
        loss = loss or self.loss
        key = (tuple(float(s) for s in sigma), loss)
        if key in self._cache:
            return self._cache[key]
        if not self.pair.dask and loss == self.loss:
            point = self.point(sigma)
            return point.value, point.gain, point.offset
        if self.callback is not None:
            self.callback(f"filter pass {len(self.trace) + 1} ({loss.name})")
        if self.gain_offset:
            sums_at = self._sums_function(sigma, loss)
            g, o, value = robust_gain_offset(sums_at, self.gain, self.offset, loss,
                                             callback=self.callback)
        else:
            g, o, value = 1.0, 0.0, self._fixed_loss(sigma, loss)
        if loss == self.loss:
            self.gain, self.offset = g, o
            self.trace.append((key[0], value / self.n_used))
        self._cache[key] = (value, g, o)
        return value, g, o

    def point(self, sigma, *, gradient: bool = False) -> Evaluation:
        """Loss (and its gradient over the sigmas) at ``sigma``, in memory: one filter pass.

        The gain/offset are those of the pixel sample (exact where there is no sample); the
        gradient treats them as fixed, which is exact at their optimum (envelope theorem).
        """
        key = (tuple(float(s) for s in sigma), self.loss, gradient)
        if key in self._cache:
            return self._cache[key]
        if self.pair.dask:
            result = self._dask_point(sigma, gradient)
            self._cache[key] = result
            return result
        if self.callback is not None:
            self.callback(f"filter pass {len(self.trace) + 1} ({self.loss.name})")
        model = self._model(sigma)
        sample = self._take(model)
        go = self._solve_gain_offset(model, sample)
        psi = self._psi_buffer() if gradient else None
        value, theta = self._residual_loss(model, go.gain, go.offset, psi)
        grad = self._gradient(sigma, go.gain) if gradient else None
        curvature = self.loss.mean_curvature(sample * go.gain + go.offset - self._target_sample)
        self.gain, self.offset = go.gain, go.offset
        self.trace.append((key[0], value / self.n_used))
        sampled = gradient and self._samples_gain_offset
        result = Evaluation(value, go.gain, go.offset, grad, curvature, theta if sampled else None)
        self._cache[key] = result
        self._cache[(key[0], self.loss)] = (value, go.gain, go.offset)
        if gradient:
            self._cache[(*key[:2], False)] = result
        return result

    def _dask_point(self, sigma, gradient: bool) -> Evaluation:
        """`point` for dask pairs with gain 1 and offset 0: value, then one gradient pass.

        Each block returns its spectrum sum ``sum_frames DCT(psi) * A_hat`` and its inlier count;
        they add up over the blocks, so the search takes the same steps as in memory.
        """
        value, g, o = self.evaluate(sigma)
        if not gradient:
            return Evaluation(value, g, o, None, 2.0)
        import dask
        from dask import delayed

        nd, tr, w, loss = self.pair.ndim, self.truncate, self.workers, self.loss
        window = loss.curvature_window(value / max(self.n_used, 1))  # as `Loss.mean_curvature`

        def block(r, t, u):
            r, t, finite, _ = fill_nonfinite(r, t)
            keep = _keep(u, finite)
            ref_hat = frame_dct(r, nd, workers=w)
            resid = blurred(ref_hat.copy(), sigma, nd, tr, w) - t
            psi = loss.derivative(resid)
            inside = np.abs(resid) <= window
            if keep is not None:
                keep = np.broadcast_to(keep, psi.shape)
                psi, inside = np.where(keep, psi, 0), inside & keep
            spec = frame_dct(psi, nd, workers=w) * ref_hat
            spec = spec.reshape((-1, *spec.shape[spec.ndim - nd :])).sum(axis=0)
            return _GradientSums(spec, float(np.count_nonzero(inside)))

        parts = [delayed(block)(r, t, u) for r, t, u in self._blocks]
        (total,) = dask.compute(_tree_sum(parts))
        curvature = loss.curvature_from_count(total.inside, self.n_used, window)
        return Evaluation(value, g, o, sigma_gradient(total.spectrum, sigma, tr), curvature)

    @property
    def _samples_gain_offset(self) -> bool:
        """The gain/offset are solved on the pixel sample (a robust loss on a large image)."""
        return self.gain_offset and not self.loss.least_squares and self._sample is not None

    def _solve_gain_offset(self, model, sample) -> GainOffset:
        """Best gain/offset for the model: L2 in closed form over all pixels, else on the sample."""
        if not self.gain_offset:
            return GainOffset(1.0, 0.0, float("nan"))
        f, b = (model, self._target) if self.loss.least_squares else (sample, self._target_sample)
        return best_gain_offset(self.loss, f, b, self.gain, self.offset, n_eff=f.size)

    def finish(self, sigma, value: float) -> tuple[float, float, float]:
        """Exact ``(loss_sum, gain, offset)`` at ``sigma`` over all used pixels (in memory).

        Refines the sample's gain/offset on every pixel (warm-started, so a few passes); never
        returns a worse loss than ``value`` (the loss with the sample's gain/offset).
        """
        point = self.point(sigma)
        if not self._samples_gain_offset:
            return point.value, point.gain, point.offset
        g, o, exact = best_gain_offset(self.loss, self._model(sigma), self._target, point.gain,
                                       point.offset, n_eff=SUBSAMPLE)
        if exact < point.value:
            return float(exact), float(g), float(o)
        return point.value, point.gain, point.offset

    def _psi_buffer(self) -> np.ndarray:
        """Full-frame buffer for the residual derivative; zero outside the used pixels."""
        if self._work is None:
            self._work = np.zeros_like(self.ref_hat)
        elif self._used is not None:
            self._work[...] = 0
        return self._work

    def _residual_loss(self, model, gain, offset, psi) -> tuple[float, np.ndarray]:
        """Loss sum of ``gain * model + offset - target``; its derivative into ``psi`` if given.

        Also returns ``d loss / d (gain, offset)`` (``[sum psi * model, sum psi]``; zeros without
        ``psi``). One chunked pass (the slices' temporaries stay in cache) where possible.
        """
        t, loss = self._target, self.loss
        g, o = model.dtype.type(gain), model.dtype.type(offset)
        theta = np.zeros(2)
        if self._used is None or isinstance(self._used, tuple) and psi is None:
            total = 0.0
            parts = chunks(model, t) if psi is None else chunks(model, t, psi)
            for part in parts:
                r = np.multiply(part[0], g)
                r += o
                r -= part[1]
                if psi is not None:
                    p = loss.derivative(r, out=part[2])
                    theta += [sum64(p * part[0]), sum64(p)]
                total += loss.value(r, overwrite=True)
            return total, theta
        r = model * g
        r += o
        r -= t
        if psi is not None:
            p = loss.derivative(r)
            psi[self._used] = p
            theta[:] = [sum64(p * model), sum64(p)]
        return loss.value(r, overwrite=True), theta

    def _gradient(self, sigma, gain) -> np.ndarray:
        """``d loss / d sigma_i`` from the residual derivative in ``_work``: one DCT (Parseval)."""
        nd = self.pair.ndim
        spectrum = frame_dct(self._work, nd, workers=self.workers, out=self._work)
        spectrum *= self.ref_hat
        if spectrum.ndim > nd:  # frames of a stack: one sigma for all
            spectrum = spectrum.reshape((-1, *spectrum.shape[spectrum.ndim - nd :])).sum(axis=0)
        return gain * sigma_gradient(spectrum, sigma, self.truncate)

    def _fixed_loss(self, sigma, loss) -> float:
        """Loss sum with gain 1 and offset 0: one filter pass, no weights."""
        if not self.pair.dask:
            return self._loss_at(sigma, 1.0, 0.0, loss)
        return float(self._sums_function(sigma, loss)(1.0, 0.0)[5])

    def _loss_at(self, sigma, gain, offset, loss) -> float:
        """Loss sum at fixed parameters, in memory, without touching the cached model."""
        model = self._model(sigma)
        total = 0.0
        g, o = model.dtype.type(gain), model.dtype.type(offset)
        for m, t in chunks(model, self._target):
            r = np.multiply(m, g)
            r += o
            r -= t
            total += loss.value(r, overwrite=True)
        return total

    @property
    def _absolute(self) -> Loss:
        """L1 with this fit's weight floor (its IRLS passes over dask blocks need one)."""
        return L1(delta=self.loss.delta)

    def robust_scale(self, sigma, gain, offset) -> float:
        """Noise sigma estimated as sqrt(pi/2) * mean |residual| (exact for Gaussian noise).

        Less swayed by outliers than the RMS, and, unlike a median, it adds up over dask blocks,
        so numpy and dask inputs get the same value.
        """
        if self.pair.dask:
            total = float(self._sums_function(sigma, self._absolute)(gain, offset)[5])
        else:
            total = self._loss_at(sigma, gain, offset, self._absolute)
        return float(np.sqrt(np.pi / 2) * total / self.n_used)

    def target_spread(self) -> float:
        """The target's sum of squares about its mean over the used pixels (for r2)."""
        if not self.pair.dask:
            return target_spread(self._target, None)
        import dask
        from dask import delayed

        def block(t, u):
            t = np.asarray(t, dtype=np.float64)
            keep = _keep(u, np.isfinite(t))
            t = t[np.broadcast_to(keep, t.shape)] if keep is not None else t.ravel()
            return np.array([t.size, t.sum(), np.square(t).sum()])

        (n, s, ss), = dask.compute(_tree_sum([delayed(block)(t, u) for _, t, u in self._blocks]))
        return float(max(ss - s * s / max(n, 1.0), 0.0))

    def sum_squares(self, sigma, gain, offset) -> float:
        """Sum of squared residuals at fixed parameters (for the standard error)."""
        if self.pair.dask:
            return float(self._sums_function(sigma, L2())(gain, offset)[5])
        return self._loss_at(sigma, gain, offset, L2())


def _log_sigma_normal(stats: SpectralStats, sigma, gain: float, *, per_axis: bool,
                      gain_offset: bool, truncate: float, fraction: float) -> tuple[np.ndarray, int]:
    """`normal_matrix` times ``fraction`` (share of pixels used), in log-sigma; and its sigma rows.

    The first ``k`` rows and columns are in ``t = log sigma`` (``ds/dt = s``). Sigmas are floored
    where scipy's kernel is the identity (no curvature to read there).
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    jtj = normal_matrix(stats, np.maximum(sigma, IDENTITY_BELOW), gain, per_axis=per_axis,
                        gain_offset=gain_offset, truncate=truncate) * fraction
    k = len(sigma) if per_axis else 1
    scale = np.ones(len(jtj))
    scale[:k] = sigma if per_axis else sigma[:1]
    return jtj * np.outer(scale, scale), k


def l2_model_hessian(stats: SpectralStats, sigma, gain: float, *, per_axis: bool,
                     gain_offset: bool, truncate: float, fraction: float = 1.0) -> np.ndarray:
    """Gauss-Newton ``J^T J`` of the L2 objective over log-sigma, gain/offset profiled out.

    The sigma block of `normal_matrix` with the gain/offset eliminated (Schur complement), in
    ``t = log sigma`` and scaled by ``fraction`` (share of pixels used). Free from the
    statistics; times a loss's mean second derivative it models that loss's Hessian.
    """
    jtj, k = _log_sigma_normal(stats, sigma, gain, per_axis=per_axis, gain_offset=gain_offset,
                               truncate=truncate, fraction=fraction)
    h = jtj[:k, :k]
    if gain_offset:
        cross, rest = jtj[:k, k:], jtj[k:, k:]
        try:
            h = h - cross @ np.linalg.solve(rest, cross.T)
        except np.linalg.LinAlgError:
            pass
    return h


def l2_model_blocks(stats: SpectralStats, sigma, gain: float, *, per_axis: bool,
                    truncate: float, fraction: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The (log-sigma, gain/offset) and (gain/offset, gain/offset) blocks of `normal_matrix`.

    They turn a loss evaluated at a slightly wrong gain/offset (solved on a pixel sample) into
    the profile over sigma: value ``- 1/2 g_th^T H_thth^-1 g_th``, gradient
    ``- H_s,th H_thth^-1 g_th`` (one Newton step in gain/offset, to second order).
    """
    jtj, k = _log_sigma_normal(stats, sigma, gain, per_axis=per_axis, gain_offset=True,
                               truncate=truncate, fraction=fraction)
    return jtj[:k, k:], jtj[k:, k:]
