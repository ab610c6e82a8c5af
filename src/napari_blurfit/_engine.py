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

import numpy as np

from ._kernels import transfer
from ._losses import irls_sums, l1_gain_offset, loss_sum, robust_gain_offset
from ._spectral import SpectralStats, block_stats, frame_dct, frame_idct
from ._validate import Pair, fill_nonfinite

TREE_WIDTH = 8  # blocks summed per node of the dask reduction tree


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


def compute_stats(pair: Pair, *, swap: bool = False, workers=None):
    """Spectral statistics of the whole pair: ``(stats, ref_hat, n_nonfinite, n_used)``.

    ``ref_hat`` (the reference's DCT, kept for spatial evaluations) is returned for a single
    in-memory frame, where it comes for free; otherwise None. Stacks in memory are processed in
    chunks of frames on a thread pool (numpy and the FFTs release the GIL), dask pairs block by
    block on the active dask scheduler. ``swap`` gives the statistics of the reverse direction.
    """
    nd = pair.ndim
    if not pair.dask:
        ref, tgt = (pair.target, pair.reference) if swap else (pair.reference, pair.target)
        spatial = ref.shape[ref.ndim - nd :]
        ref, tgt = ref.reshape((-1, *spatial)), tgt.reshape((-1, *spatial))
        threads = min(len(ref), os.cpu_count() or 1)
        if threads == 1:
            ref_hat = frame_dct(ref, nd, workers=workers)
            stats = SpectralStats.zeros(spatial).accumulate(ref_hat, frame_dct(tgt, nd, workers=workers))
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


class SpatialObjective:
    """Loss sum of ``gain * G_sigma * A + offset`` against ``B`` over the used pixels.

    Each call is one filter pass (an inverse DCT of the cached reference transform in memory, or a
    pass over the blocks for dask). With ``gain_offset`` the best gain/offset for the loss are
    found for each sigma: exactly for L1 in memory (a median per gain step), by IRLS otherwise,
    warm-started from the previous call. Every evaluation is recorded in ``trace``.
    """

    def __init__(self, pair: Pair, ref_hat, *, loss, gain_offset, delta, truncate, workers,
                 n_used, start=(1.0, 0.0), callback=None):
        self.pair, self.loss, self.gain_offset = pair, loss, gain_offset
        self.callback = callback
        self.delta, self.truncate, self.workers = delta, truncate, workers
        if ref_hat is None and not pair.dask:  # stacks: transform the reference once, here
            ref_hat = frame_dct(pair.reference, pair.ndim, workers=workers)
        self.ref_hat = ref_hat
        self.gain, self.offset = start
        self.trace: list[tuple[tuple[float, ...], float]] = []
        self._cache: dict = {}
        self.n_used = n_used
        if not pair.dask:
            used = pair.used
            if used is not None:
                used = _box_or_mask(np.broadcast_to(used, pair.target.shape))
            self._used = used
            self._target = pair.target if used is None else pair.target[self._used]
            self._buffer = np.empty_like(self.ref_hat)  # one model array, reused by evaluations
        else:
            self._blocks = _frame_blocks(pair)

    def _model(self, sigma):
        """The blurred reference at the used pixels (in memory only; valid until the next call)."""
        model = blurred(self.ref_hat, sigma, self.pair.ndim, self.truncate, self.workers,
                        out=self._buffer)
        return model if self._used is None else model[self._used]

    def _sums_function(self, sigma, loss):
        nd, tr, w = self.pair.ndim, self.truncate, self.workers
        if not self.pair.dask:
            model = self._model(sigma)
            return lambda g, o: irls_sums(model, self._target, g, o, loss, self.delta)
        import dask
        from dask import delayed

        def block(r, t, u, g, o):
            r, t, finite, _ = fill_nonfinite(r, t)
            keep = _keep(u, finite)
            model = blurred(frame_dct(r, nd, workers=w), sigma, nd, tr, w)
            if keep is not None:
                model, t = model[keep], t[keep]
            return irls_sums(model, t, g, o, loss, self.delta)

        def sums(g, o):
            parts = [delayed(block)(r, t, u, g, o) for r, t, u in self._blocks]
            (total,) = dask.compute(_tree_sum(parts))
            return total

        return sums

    def evaluate(self, sigma, loss=None):
        """``(loss_sum, gain, offset)`` at ``sigma`` (per-axis pixels); repeated calls are cached."""
        loss = loss or self.loss
        key = (tuple(float(s) for s in sigma), loss)
        if key in self._cache:
            return self._cache[key]
        if self.callback is not None:
            self.callback(f"filter pass {len(self.trace) + 1} ({loss})")
        if self.gain_offset and loss == "l1" and not self.pair.dask:
            g, o, value = l1_gain_offset(self._model(sigma), self._target, self.gain,
                                         self.callback)
        elif self.gain_offset:
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

    def _fixed_loss(self, sigma, loss) -> float:
        """Loss sum with gain 1 and offset 0: one filter pass, no weights."""
        if not self.pair.dask:
            residual = self._model(sigma)
            np.subtract(residual, self._target, out=residual)
            return loss_sum(residual, loss, self.delta, overwrite=True)
        return float(self._sums_function(sigma, loss)(1.0, 0.0)[5])

    def robust_scale(self, sigma, gain, offset) -> float:
        """Noise sigma estimated as sqrt(pi/2) * mean |residual| (exact for Gaussian noise).

        Less swayed by outliers than the RMS, and, unlike a median, it adds up over dask blocks,
        so numpy and dask inputs get the same value.
        """
        total = float(self._sums_function(sigma, "l1")(gain, offset)[5])
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
            return float(self._sums_function(sigma, "l2")(gain, offset)[5])
        r = self._model(sigma)
        if gain != 1.0:
            r *= r.dtype.type(gain)
        np.subtract(r, self._target - r.dtype.type(offset) if offset else self._target, out=r)
        return loss_sum(r, "l2", None, overwrite=True)
