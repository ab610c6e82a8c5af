"""How Gaussian is the blur? The measured transfer beside the fitted one (docs/design.md section 12).

Everything here is read off the spectral statistics the fit already holds (`SpectralStats`):
with ``M(k) = gain * H(k) * A_hat(k)`` the fitted model's DCT coefficients, a free real factor
``c_b`` on each frequency shell ``b`` (``c_b = 1`` is the Gaussian itself) is the best linear
filter of a class that contains the Gaussian and can express a disk, a box, an Airy pattern or a
widefield PSF's different lateral and axial response. Per shell it removes
``(sum_b M^2 - sum_b M B_hat)^2 / sum_b M^2`` of the Gaussian's residual, a closed form: no
refit, no pass over the pixels. Each shell's gain is counted net of what fitting pure noise
would gain (one noise variance per free factor), so a Gaussian pair with noise scores ~0.

Shells are radial in 2D and (lateral, axial) in 3D: a microscope's axial response is not a
radial function of the 3D frequency. The DC coefficient is left out (it is brightness, not
shape). On large images the coefficients are first summed in small blocks (a single pass over
each statistic), so the cost stays a small fraction of the fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._kernels import transfer
from ._spectral import SpectralStats

MAX_BLOCKS_PER_AXIS = 128  # frequency blocks per axis after summing (2D; 3D uses 32): a pass or two
NOT_GAUSSIAN_SHARE = 0.3  # a free kernel removing this share of the residual gets a note
ROUNDING = 1e-10  # a Gaussian residual below this share of the target's energy is rounding
RELIABLE_STDERR = 0.05  # transfer points more uncertain than this are not used for the wording


@dataclass(frozen=True)
class Transfer:
    """The pair's measured transfer function beside the fitted Gaussian's, per frequency shell.

    Attributes
    ----------
    frequency : ndarray
        Shell frequency in cycles per pixel (radial; increasing), weighted by reference energy.
    measured : ndarray
        The pair's own transfer ``sum A_hat B_hat / sum A_hat^2`` per shell, gain removed.
    model : ndarray
        The fitted Gaussian's transfer, averaged over the shell with the same weights.
    stderr : ndarray
        Standard error of ``measured`` from the residual noise level (large where the reference
        has little energy: read ``measured`` only where this is small).
    energy : ndarray
        Mean reference power per coefficient in the shell (``sum A_hat^2 / count``).
    """

    frequency: np.ndarray
    measured: np.ndarray
    model: np.ndarray
    stderr: np.ndarray
    energy: np.ndarray

    def to_dict(self) -> dict:
        """Plain lists (NaN as None) for JSON."""
        return {k: [None if not np.isfinite(v) else float(v) for v in getattr(self, k)]
                for k in ("frequency", "measured", "model", "stderr", "energy")}


@dataclass(frozen=True)
class Adequacy:
    """How well the fitted Gaussian explains the pair, against a free linear filter."""

    share: float  # of the Gaussian's L2 residual that the free filter removes (net of noise)
    transfer: Transfer
    suggestion: str  # what the measured transfer looks like, in words ("" when Gaussian)

    def r2_linear(self, r2: float) -> float:
        """r2 of the free filter, given the Gaussian's: it removes ``share`` of what is left."""
        return float(r2 + (1.0 - r2) * self.share) if np.isfinite(r2) else float("nan")

    def note(self, r2: float) -> str | None:
        """A finding for the user when a free kernel explains much more than the Gaussian."""
        if self.share < NOT_GAUSSIAN_SHARE:
            return None
        return (f"the blur is not Gaussian: a free kernel would remove {100 * self.share:.0f}% of "
                f"the Gaussian's residual (r2 {r2:.4f} -> {self.r2_linear(r2):.4f})"
                + (f"; {self.suggestion}" if self.suggestion else ""))


@dataclass(frozen=True)
class _Grid:
    """Frequency blocks: the statistics summed over blocks of DCT coefficients."""

    freqs: list[np.ndarray]  # per axis: block centre frequency (cycles/px)
    counts: np.ndarray  # coefficients per block (spatial grid of blocks)
    mm: np.ndarray  # sum H^2 P_AA  (times gain^2 later)
    hpaa: np.ndarray  # sum H P_AA
    paa: np.ndarray  # sum P_AA
    hpab: np.ndarray  # sum H P_AB
    pab: np.ndarray  # sum P_AB


def _block_starts(n: int, blocks: int) -> np.ndarray:
    size = -(-n // blocks)
    return np.arange(0, n, size)


def _reduce_axis(p: np.ndarray, axis: int, weights: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Block sums of ``p * weights[k, c]`` along ``axis``; a new last axis of length c is added.

    Written as one batched matrix product per block row (BLAS): on the leading axis of the full
    statistic this reads it once and makes no weighted copy.
    """
    moved = np.moveaxis(p, axis, 0)
    n, rest = moved.shape[0], moved.shape[1:]
    flat = moved.reshape(n, -1)  # a view for the leading axis; later axes are already reduced
    size = int(starts[1] - starts[0]) if len(starts) > 1 else n
    m, c = (n // size) * size, weights.shape[1]
    w = weights[:m].reshape(n // size, size, c).transpose(0, 2, 1)
    out = np.matmul(w, flat[:m].reshape(n // size, size, -1))  # (blocks, c, rest)
    if m < n:
        out = np.concatenate([out, (weights[m:].T @ flat[m:])[None]], axis=0)
    out = out.reshape(len(out), c, *rest)
    return np.moveaxis(np.moveaxis(out, 1, -1), 0, axis)


def _all_block_starts(shape: tuple[int, ...]) -> list[np.ndarray]:
    per_axis = MAX_BLOCKS_PER_AXIS if len(shape) == 2 else MAX_BLOCKS_PER_AXIS // 4
    return [_block_starts(n, per_axis) for n in shape]


def _grid(stats: SpectralStats, sigma, truncate: float) -> _Grid:
    """Sum the statistics (with the Gaussian's transfer) over blocks of frequencies."""
    d = len(stats.shape)
    starts = _all_block_starts(stats.shape)
    hs = [transfer([s], n, truncate)[:, 0] for s, n in zip(sigma, stats.shape)]
    aa, ab = stats.paa, stats.pab
    # weights per axis: [h^2, h, 1] for P_AA and [h, 1] for P_AB; combos picked on the diagonal
    for axis in range(d):  # the leading axis first: the full statistic is read as a view
        h = hs[axis]
        w_aa = np.stack([h * h, h, np.ones_like(h)], axis=1)
        w_ab = np.stack([h, np.ones_like(h)], axis=1)
        aa = _reduce_axis(aa, axis, w_aa, starts[axis])
        ab = _reduce_axis(ab, axis, w_ab, starts[axis])
    # aa has the block axes first, then one combo axis per spatial axis
    spatial = (slice(None),) * d
    origin = (0,) * d
    return _finish_grid(starts, stats.shape, [aa[spatial + (c,) * d] for c in range(3)],
                        [ab[spatial + (c,) * d] for c in range(2)],
                        float(stats.paa[origin]), float(stats.pab[origin]))


def _finish_grid(starts, shape, aa_sums, ab_sums, dc_aa: float, dc_ab: float) -> _Grid:
    """The grid from its block sums ``[H^2 P_AA, H P_AA, P_AA]`` and ``[H P_AB, P_AB]``."""
    d = len(shape)
    origin = (0,) * d  # remove the DC coefficient (H = 1 there): brightness, not shape
    for arr in aa_sums:
        arr[origin] -= dc_aa
    for arr in ab_sums:
        arr[origin] -= dc_ab
    sizes = [np.diff(np.append(s, n)) for s, n in zip(starts, shape)]
    counts = np.ones([len(s) for s in starts])
    for axis, size in enumerate(sizes):
        counts = counts * size.reshape([-1 if i == axis else 1 for i in range(d)])
    counts[origin] -= 1
    freqs = [(s + (z - 1) / 2.0) / (2.0 * n) for s, z, n in zip(starts, sizes, shape)]
    return _Grid(freqs, counts, *aa_sums, *ab_sums)


@dataclass(frozen=True)
class BinnedStats:
    """A pair's statistics already summed over `assess`'s frequency blocks (identity kernel).

    All that `assess_model` reads of a pair: made from the two transforms a block of rows at a
    time (`binned_stats`), with no full-size float64 statistic (`SpectralStats` holds two).
    """

    shape: tuple[int, ...]  # spatial shape of a frame
    paa: np.ndarray  # block sums of sum_f A_hat^2, DC included
    pab: np.ndarray  # block sums of sum_f A_hat B_hat
    dc_aa: float  # the DC coefficient's sum_f A_hat^2 and sum_f A_hat B_hat
    dc_ab: float
    cbb: float  # sum of all B_hat^2
    dc_b: np.ndarray  # each frame's DC coefficient of B

    @property
    def n_frames(self) -> int:
        return len(self.dc_b)

    @property
    def n_pixels(self) -> int:
        return int(np.prod(self.shape))


def binned_stats(ref_hat: np.ndarray, tgt_hat: np.ndarray, ndim: int) -> BinnedStats:
    """`BinnedStats` of two transformed frame stacks (`frame_dct`, frames on leading axes)."""
    return binned_pairs([ref_hat, tgt_hat], [(0, 1)], ndim)[0]


def binned_pairs(hats: list[np.ndarray], pairs: list[tuple[int, int]], ndim: int) -> list[BinnedStats]:
    """`binned_stats` of several pairs of transformed frame stacks, in one pass over them.

    ``pairs`` index ``hats``; each product (``A^2``, ``A B``) is formed in float64 and summed
    once however many pairs share it: the sums `binned_stats` makes pair by pair.
    """
    shape = hats[0].shape[hats[0].ndim - ndim :]
    flat = [h.reshape(-1, *shape) for h in hats]
    starts = _all_block_starts(shape)
    products = {(i, i) for i, _ in pairs} | set(pairs)
    sums = {key: np.empty([len(s) for s in starts]) for key in products}
    squares = dict.fromkeys({j for _, j in pairs}, 0.0)
    edges = np.append(starts[0], shape[0])
    letters = "cdefgh"[:ndim - 1]
    summed = f"ab{letters},ab{letters}->{letters}"  # over frames and the block's rows
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        rows = {i: f[:, lo:hi] for i, f in enumerate(flat)}
        for j in squares:
            squares[j] += float(np.einsum(f"ab{letters},ab{letters}->", rows[j], rows[j], dtype=np.float64))
        for (i, j), out in sums.items():
            # products in float64 (exact for float32 transforms), summed with no temporary
            block = np.einsum(summed, rows[i], rows[j], dtype=np.float64)
            for axis, first in enumerate(starts[1:]):
                block = np.add.reduceat(block, first, axis=axis)
            out[k] = block
    origin = (slice(None),) + (0,) * ndim
    dc = [f[origin].astype(np.float64) for f in flat]
    return [BinnedStats(tuple(shape), sums[(i, i)], sums[(i, j)], float(dc[i] @ dc[i]),
                        float(dc[i] @ dc[j]), squares[j], dc[j]) for i, j in pairs]


def _shells(values: np.ndarray, width: float) -> np.ndarray:
    return np.floor(values / width).astype(np.int64)


def _labels(grid: _Grid, shape) -> tuple[np.ndarray, np.ndarray, float]:
    """Shell index per block: free-filter shells and 1-D radial shells (and their width)."""
    mesh = np.meshgrid(*grid.freqs, indexing="ij")
    radial = np.sqrt(sum(f * f for f in mesh))
    steps = [(f[1] - f[0]) if len(f) > 1 else 0.5 / n for f, n in zip(grid.freqs, shape)]
    width = 2.0 * max(steps)
    curve = _shells(radial, width)
    if len(shape) == 3:  # (lateral, axial): the axial response is not radial
        lateral = np.sqrt(mesh[1] ** 2 + mesh[2] ** 2)
        axial = _shells(mesh[0], 2.0 * steps[0])
        free = _shells(lateral, 2.0 * max(steps[1:])) * (axial.max() + 1) + axial
    else:
        free = curve
    return free, curve, width


def _sum_by(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.bincount(labels.ravel(), weights=values.ravel())


def assess(stats: SpectralStats, sigma, gain: float, *, truncate: float) -> Adequacy:
    """Share of the Gaussian's residual a free shell-wise filter removes, and the transfer curve.

    Parameters
    ----------
    stats : SpectralStats
        The fit's statistics (all frames).
    sigma : sequence of float
        The fitted per-axis sigma (pixels).
    gain : float
        The fitted gain (1 without gain/offset).
    truncate : float
        Kernel truncation, as in the fit.
    """
    return _assess_grid(_grid(stats, sigma, truncate), stats, gain)


def _assess_grid(grid: _Grid, stats: SpectralStats | BinnedStats, gain: float) -> Adequacy:
    """`assess` from the block sums (``stats`` gives the target's energy and the counts)."""
    free, curve, width = _labels(grid, stats.shape)
    # Gaussian residual without the DC coefficients: sum (g H A - B)^2 over k != 0
    residual = (gain * gain * grid.mm.sum() - 2.0 * gain * grid.hpab.sum()
                + stats.cbb - float(stats.dc_b @ stats.dc_b))
    n = max(stats.n_frames * (stats.n_pixels - 1), 1)
    noise = max(residual, 0.0) / n  # per coefficient; an upper bound when the model is poor
    mm = gain * gain * _sum_by(free, grid.mm)
    mb = gain * _sum_by(free, grid.hpab)
    ok = mm > 1e-300
    removed = np.where(ok, (mm - mb) ** 2 / np.where(ok, mm, 1.0), 0.0)
    net = np.maximum(removed - noise, 0.0).sum()
    # a residual at rounding level (a noiseless pair) has no shape to speak of
    share = float(min(net / residual, 1.0)) if residual > ROUNDING * stats.cbb else 0.0
    curve_t = _transfer_curve(grid, curve, gain, noise)
    return Adequacy(share, curve_t, _suggest(curve_t))


Maker = Callable[[], "SpectralStats | BinnedStats"]


def assess_model(fit_stats: Maker, pair_stats: Maker, model_stats: Maker, gain: float) -> Adequacy:
    """`assess` for a fitted model image ``M`` that is not diagonal in the DCT (rotated, shifted).

    The free class is then ``c_b * M_hat``: the fitted model followed by a free shell filter,
    which contains the model (``c_b = 1``). ``fit_stats`` make the statistics of the pair
    (M, target), ``pair_stats`` of (reference, target) and ``model_stats`` of (reference, M):
    the model's curve is measured exactly like the pair's, so the two read alike (a shift lowers
    both). They are called one at a time, so at most one set of full-size statistics is in
    memory; `BinnedStats` hold none.
    """
    def as_is(stats: SpectralStats | BinnedStats, g: float) -> Adequacy:  # the identity kernel
        if isinstance(stats, BinnedStats):
            grid = _finish_grid(_all_block_starts(stats.shape), stats.shape,
                                [stats.paa.copy() for _ in range(3)], [stats.pab.copy() for _ in range(2)],
                                stats.dc_aa, stats.dc_ab)  # H = 1: every transfer-weighted sum alike
            return _assess_grid(grid, stats, g)
        return assess(stats, np.zeros(len(stats.shape)), g, truncate=4.0)

    share = as_is(fit_stats(), 1.0).share
    pair = as_is(pair_stats(), gain).transfer
    model = as_is(model_stats(), gain).transfer
    curve = Transfer(pair.frequency, pair.measured, model.measured, pair.stderr, pair.energy)
    return Adequacy(share, curve, _suggest(curve))


def _transfer_curve(grid: _Grid, labels: np.ndarray, gain: float, noise: float) -> Transfer:
    """Per radial shell: measured and model transfer, weighted by the reference's energy."""
    mesh = np.meshgrid(*grid.freqs, indexing="ij")
    radial = np.sqrt(sum(f * f for f in mesh))
    paa = _sum_by(labels, grid.paa)
    keep = paa > 1e-12 * max(float(paa.max()), 1e-300)
    paa = np.where(keep, paa, 1.0)
    g = gain if abs(gain) > 1e-300 else 1.0
    freq = _sum_by(labels, radial * grid.paa) / paa
    measured = _sum_by(labels, grid.pab) / paa / g
    model = _sum_by(labels, grid.hpaa) / paa
    stderr = np.sqrt(noise / paa) / abs(g)
    energy = paa / np.maximum(_sum_by(labels, grid.counts), 1.0)
    return Transfer(*(a[keep] for a in (freq, measured, model, stderr, energy)))


def _suggest(t: Transfer) -> str:
    """What the measured transfer looks like, in words, from its reliable points."""
    good = (t.stderr < RELIABLE_STDERR) & (t.frequency > 0)
    if good.sum() < 3:
        return ""
    m, model, se, f = t.measured[good], t.model[good], t.stderr[good], t.frequency[good]
    negative = (m < -3 * se) & (m < -0.02)
    if negative.any():
        return (f"the measured transfer changes sign (first near {f[negative][0]:.3g} cycles/px), "
                "which a Gaussian never does: zeros like those of a defocus disk, a box or motion "
                "blur")
    tail = model < 0.5  # where the Gaussian has cut most of the signal
    if tail.sum() >= 2:
        excess = float(np.mean(m[tail] - model[tail]))
        if excess > 0.02:
            return ("the measured transfer decays more slowly than a Gaussian's at high "
                    "frequencies: a sharp core with heavy tails")
        if excess < -0.02:
            return ("the measured transfer falls off faster than a Gaussian's: a flat-topped "
                    "kernel (disk, box or motion blur)")
    return ""
