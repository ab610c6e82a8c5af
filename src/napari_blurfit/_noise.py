"""Noise in the reference: its estimate from the pair (errors in variables; docs/design.md section 16).

A noisy reference ``A = X + n_A`` is blurred by the model with its noise, and a wider kernel
averages more of that noise away: a plain L2 fit overstates sigma. Under L2 the noise's expected
share of the loss is ``gain**2 * s_A**2 * sum_n K[n]**2`` per pixel, which `SpectralStats.noise`
takes out of every contraction. This module finds ``s_A``: at the true kernel the residual's power
at DCT coefficient k is ``s_B**2 + gain**2 * H_k**2 * s_A**2``, a straight line in ``H**2`` whose
slope is the reference's noise variance (its intercept the target's). The line is fitted over
frequency bins of a regular subgrid of coefficients, alternating with the corrected fit.
"""

from __future__ import annotations

import math
from functools import reduce
from typing import NamedTuple

import numpy as np

from ._kernels import axis_transfers, half_kernels, kernel_radius, transfer
from ._spectral import SpectralStats, column_products, contract, product_vectors, strided
from ._stages import NoiseCorrection, Problem, Solution
from ._transforms import HalfSpectrum, dividing_stride
from ._whole.sandwich import kernel_spectrum

BINS = 40  # frequency bins of the regression, equally wide in the transfer H
REWEIGHT = 3  # weighted least squares with weights from the last line's level
SIGNIFICANT = 3.0  # a slope this many of its standard errors above 0 is corrected for
# the bins' residual power off the fitted line by this share on average: not noise but a blur the
# model lacks (a clean reference against a JPEG, TV-denoised or resampled target reads 1 to 40, a
# shift or an ellipse fitted round 0.13 to 0.26; a Gaussian blur with noise in both images 0.003
# to 0.15, the most at sigma 0.7 with SNR 20, read at the plain fit's biased kernel) ...
LINE_MISFIT = 0.5
# ... and once corrected for it, noise leaves a line (0.01 to 0.04 measured), a shift or an ellipse
# the model lacks does not
CORRECTED_MISFIT = 0.06
ROUNDS = 4  # estimate, correct, estimate again ... (the prototype settled in 4)
SETTLED = 0.01  # relative change of the variance at which the rounds stop
MAX_STEP = 4.0  # a round changes the variance by at most this factor (overshoot safeguard)
NUDGE = 0.02  # log-sigma step that measures how the estimate follows sigma (`loop_gain`)
MAX_LOOP_GAIN = 0.9  # errors amplified tenfold at most (a gain near 1: the estimate is unsure)
SANDWICH_COEFFICIENTS = 2**17  # coefficients a standard error reads at most
NEGLIGIBLE = 1e-3  # a transfer (or its derivative) this far below its peak carries no information
# the coefficients an image-space fit's estimate reads at most: all of a 512x512 half spectrum.
# A quarter of them (the spectral estimate's 2**16 there) scattered s_A by 1.4-1.8% per draw
# (rotated + shifted camera, s_A 0.05), all of them by 0.7%; read on 1024x1024, each estimate
# takes 7 ms (2**20 of them: 25 ms)
WHOLE_SAMPLE = 2**18
MIN_INTERIOR = 0.25  # the share of pixels off the edge band an image-space fit's estimate reads at least
DIRECT_TERMS = 2**13  # a sampled transfer is summed directly up to this many cosines (`_sampled_transfer`)


class Coefficients(NamedTuple):
    """Per-frequency quantities at a kernel on the estimate's subgrid (DC left out), per frame."""

    transfer: np.ndarray  # H_k
    residual: np.ndarray  # |B_hat - gain H A_hat|**2
    reference: np.ndarray  # |A_hat|**2


class NoiseEstimate(NamedTuple):
    """The regression's answer: variances per pixel (intensity units squared)."""

    reference: float  # s_A**2, clamped to [0, cap]
    target: float  # s_B**2 (the intercept)
    stderr: float  # of the slope
    cap: float  # the reference's own power where the blur leaves least: s_A**2 cannot exceed it
    misfit: float  # mean |observed / line - 1| over the coefficients: how well a line explains them

    @property
    def significant(self) -> bool:
        """Noise is what the residual shows: a line explains it, its slope clear of zero."""
        return self.misfit < LINE_MISFIT and self.reference > SIGNIFICANT * self.stderr

    @property
    def reading(self) -> float:
        """The variance the pair shows: 0 where a line does not explain the residual.

        Such a residual is a blur the model lacks, not noise.
        """
        return self.reference if self.misfit < LINE_MISFIT else 0.0


def transfer_grid(sigma, shape, truncate: float, picked: tuple[slice, ...]) -> np.ndarray:
    """The kernel's transfer ``H`` on a subgrid of coefficients (``picked``: a slice per axis)."""
    return outer(sampled_transfers(sigma, shape, truncate, picked))


def sampled_transfers(sigma, shape, truncate: float, picked: tuple[slice, ...]) -> list[np.ndarray]:
    """The kernel's transfer along each axis at the subgrid's coefficients (``picked``: every m-th).

    ``H`` is their outer product. Axes of one length and sigma share one array (for reading).
    """
    out: dict[tuple[float, int, int], np.ndarray] = {}
    for s, n, sl in zip(sigma, shape, picked):
        key = (float(s), n, sl.step or 1)
        if key not in out:
            out[key] = _sampled_transfer(*key, truncate)
    return [out[(float(s), n, sl.step or 1)] for s, n, sl in zip(sigma, shape, picked)]


def _sampled_transfer(sigma: float, size: int, step: int, truncate: float) -> np.ndarray:
    """`transfer` at every ``step``-th coefficient of an axis of ``size``.

    A short kernel's is summed directly there, ``g[0] + 2 sum_n g[n] cos(pi k n / size)`` (the
    transform of the whole axis costs more than the sum at the few coefficients read; the two
    agree to 1e-16); a long one's is read off the whole axis's.
    """
    radius = kernel_radius(sigma, truncate)
    k = np.arange(0, size, step, dtype=np.float64)
    if len(k) * radius > DIRECT_TERMS:
        return transfer([sigma], size, truncate)[::step, 0]
    if not radius:
        return np.ones(len(k))
    g = half_kernels([sigma], truncate)[0]
    n = np.arange(1, radius + 1, dtype=np.float64)
    return g[0] + np.cos(np.multiply.outer(k, n * (np.pi / size))) @ (2.0 * g[1:])


def outer(vectors: list[np.ndarray]) -> np.ndarray:
    """The outer product of 1-D ``vectors``.

    Of two, einsum's takes half the time of ``np.multiply.outer``'s; of three, more.
    """
    if len(vectors) == 2:
        return np.einsum("i,j->ij", *vectors)
    return reduce(np.multiply.outer, vectors)


def sample(stats: SpectralStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``P_AA``, ``2 P_AB``, ``P_BB`` per frame on the statistics' sample (flat, float64, DC left out).

    Read once and kept on the statistics (``stats.sample``; their `with_noise` copies share it):
    every round of the estimate reads the same coefficients (``P_BB`` is kept there only).
    """
    if stats.sample is None:
        picked, f = stats.sample_slices, stats.n_frames
        # divided straight from the strided views: one pass each
        stats.sample = tuple(np.divide(p, d, dtype=np.float64).reshape(-1)[1:]
                             for p, d in ((stats.paa[picked], f), (stats.pab[picked], f / 2), (stats.pbb, f)))
    return stats.sample


def coefficients(stats: SpectralStats, sigma, gain: float, truncate: float) -> Coefficients:
    """Residual and reference power per frame at each coefficient of the subgrid (`Coefficients`)."""
    h = transfer_grid(sigma, stats.shape, truncate, stats.sample_slices).reshape(-1)[1:]
    paa, pab2, pbb = sample(stats)
    return Coefficients(h, _residual(h, paa, pab2, pbb, gain), paa)


def _residual(h: np.ndarray, paa: np.ndarray, pab2: np.ndarray, pbb: np.ndarray, gain: float) -> np.ndarray:
    """``|B_hat - gain H A_hat|**2`` per frame from the sample's ``P_AA``, ``2 P_AB``, ``P_BB`` at ``h``."""
    gh = h if gain == 1.0 else gain * h
    # P_BB - 2 gain H P_AB + (gain H)**2 P_AA as P_BB + gain H (gain H P_AA - 2 P_AB), in one array
    residual = gh * paa
    residual -= pab2
    residual *= gh
    residual += pbb
    return residual


def estimate_noise(stats: SpectralStats, sigma, gain: float, truncate: float) -> NoiseEstimate:
    """The reference's (and target's) white-noise variance from the residual at a kernel (`line`)."""
    parts = sampled_transfers(sigma, stats.shape, truncate, stats.sample_slices)
    h = outer(parts).reshape(-1)[1:]
    paa, pab2, pbb = sample(stats)
    residual = _residual(h, paa, pab2, pbb, gain)
    if any(p.min() < 0.0 for p in parts):  # a wide kernel's truncated tails ripple below 0 (1e-5)
        np.abs(h, out=h)
    return line(h, residual, paa, gain)


def estimate_whole_noise(reference: HalfSpectrum, residual: HalfSpectrum, sampled: np.ndarray,
                         gain: float, *, kept: float = 1.0) -> NoiseEstimate | None:
    """`line` for an image-space fit: its residual's Fourier power against the kernel's ``|K_hat|``.

    ``reference`` and ``residual``: the transforms of frames-first arrays over the kernel's axes;
    ``|K_hat|`` does not depend on where the kernel is centred, so a shift needs no care. The
    residual read off its edge band (`edge_band`) holds ``kept`` of the pixels, and that share of
    the power.
    """
    d = sampled.ndim
    spatial = reference.spatial
    if any(k > n for k, n in zip(sampled.shape, spatial)):  # a kernel wider than the image
        return None
    picked = half_sample(spatial, WHOLE_SAMPLE)
    n = float(np.prod(spatial))
    frames = tuple(range(len(reference.shape) - d))
    power = [np.mean(np.abs(x.picked(picked)) ** 2 / (n * share), axis=frames).reshape(-1)[1:]
             for x, share in ((residual, kept), (reference, 1.0))]
    transfer_ = np.abs(kernel_spectrum(sampled, spatial, picked)).reshape(-1)[1:]
    return line(transfer_, power[0], power[1], gain)


def half_sample(spatial: tuple[int, ...], limit: int) -> tuple[slice, ...]:
    """Every m-th frequency of a real transform's half spectrum, m the least that keeps ``limit``.

    The last axis up to its half: each independent coefficient once, not as ``X[k]`` and again
    as ``conj(X[-k])`` (which counts it twice in the line's standard error). Where a stride down
    to half of m divides every axis, that one: the sample is then read from a `folded` transform.
    """
    half = (*spatial[:-1], spatial[-1] // 2 + 1)
    step = dividing_stride(spatial, strided(half, limit)[0].step)
    return (*[slice(None, None, step)] * (len(spatial) - 1), slice(0, half[-1], step))


def edge_band(spatial: tuple[int, ...], kernel_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Per axis, the width of the edge band where a kernel of ``kernel_shape`` reaches past the edge.

    With reflect borders a pixel there sees some of the reference's noise twice (mirrored): the
    band's residual holds more of it than ``|K_hat|**2 s_A**2``, and read with it the estimate
    came out high, the more the wider the kernel (s_A +0.65%, +0.94%, +1.17% for sigma 2, 3, 4
    on 512x512, 60 draws of the noise alone; without the band 0.0%, -0.1%, -0.2%, +-0.1-0.2%).
    None where the rest would keep under `MIN_INTERIOR` of the pixels: the whole residual is read.
    """
    band = tuple((k - 1) // 2 for k in kernel_shape)
    kept = np.prod([max(n - 2 * b, 0) / n for n, b in zip(spatial, band)])
    return band if kept >= MIN_INTERIOR else None


def off_band(residual: np.ndarray, band: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """A copy of ``residual`` with its edge band set to 0, and the share of the pixels kept.

    ``band``: the band's width per spatial axis (`edge_band`), the last axes of ``residual``.
    """
    spatial = residual.shape[residual.ndim - len(band):]
    inner = (Ellipsis, *(slice(b, n - b) for b, n in zip(band, spatial)))
    out = np.zeros_like(residual)
    out[inner] = residual[inner]
    return out, float(np.prod([(n - 2 * b) / n for n, b in zip(spatial, band)]))


def line(transfer_: np.ndarray, residual: np.ndarray, reference: np.ndarray, gain: float) -> NoiseEstimate:
    """The straight line of residual power in ``(gain * H)**2`` over `BINS` frequency bins (`fitted_line`).

    ``transfer_``: ``|H|`` per coefficient, binned by ``floor(BINS |H|)`` (the last bin takes a
    transfer of 1); each bin's sums are taken over its runs (`_bin_sums`).
    """
    x = transfer_ * transfer_
    if gain != 1.0:
        x *= gain * gain
    index = transfer_ * BINS
    np.floor(index, out=index)  # the bin, as a float: an integer cast costs twice as much
    return fitted_line(*_bin_sums(index, x, residual, residual * residual, reference))


def fitted_line(n: np.ndarray, sum_x: np.ndarray, sum_r: np.ndarray, sum_r2: np.ndarray,
                sum_ref: np.ndarray) -> NoiseEstimate:
    """The line through the bins' mean residual power against their mean ``(gain H)**2``.

    Per bin: its coefficients ``n`` and their sums of ``(gain H)**2``, of the residual power, of
    its square and of the reference's power. Weighted least squares of the bins' mean residual
    power on their mean ``gain**2 H**2``, each bin weighted by the inverse variance of its mean:
    its own relative scatter (a bin of texture the kernel does not fit scatters more and counts
    little) times the line's level there, reweighted from the last line `REWEIGHT` times. The
    slope is clamped to [0, ``cap``], the reference's own mean power in the highest-frequency bin
    (noise cannot exceed it). In Python's floats: on 40 bins numpy's calls cost more, the more so
    with the caches cold after the estimate's passes (92 us against 139 a line).
    """
    binned = (n, sum_x, sum_r, sum_r2, sum_ref)
    counts, sx, sr, sr2, sref = (np.asarray(v, dtype=np.float64).tolist() for v in binned)
    kept = [k for k, c in enumerate(counts) if c >= 8]
    if len(kept) < 3:  # too few coefficients (a tiny image): no line to read
        return NoiseEstimate(0.0, 0.0, float("inf"), 0.0, float("inf"))
    n = [counts[k] for k in kept]
    x, y, y2 = ([v[k] / counts[k] for k in kept] for v in (sx, sr, sr2))
    # each bin's relative scatter (a bin of texture the kernel does not fit scatters more) times
    # the line's level there: weights from the bins' own means would favour the low ones
    relative = [max(m2 / max(m * m, 1e-300) - 1.0, 1e-12) / c for m, m2, c in zip(y, y2, n)]
    cap = sref[kept[0]] / counts[kept[0]]
    fitted = _weighted_line(x, y, relative)
    if fitted is None:
        return NoiseEstimate(0.0, sum(sr) / sum(counts), float("inf"), cap, float("inf"))
    intercept, slope, variance = fitted
    slope, intercept = min(max(slope, 0.0), cap), max(intercept, 0.0)
    misfit = sum(c * abs(m / max(intercept + slope * xi, 1e-300) - 1.0) for c, m, xi in zip(n, y, x)) / sum(n)
    return NoiseEstimate(slope, intercept, math.sqrt(max(variance, 0.0)), cap, misfit)


def _weighted_line(x: list[float], y: list[float],
                   relative: list[float]) -> tuple[float, float, float] | None:
    """``(intercept, slope, variance of the slope)`` of the line through ``(x, y)``.

    Weighted least squares, each point weighted by ``1 / (relative * level**2)``: its relative
    variance times the line's level there, reweighted from the last line `REWEIGHT` times (a
    line below zero gets no weight from it: the level is floored at a tenth of ``y``). The 2x2
    normal equations in closed form; None where they are singular.
    """
    level = y
    for _ in range(REWEIGHT):
        s0 = s1 = s2 = sy = sxy = 0.0
        for xi, yi, ri, li in zip(x, y, relative, level):
            spread = ri * li * li
            if not spread > 0.0:  # a level of 0 (no residual at all): numpy's weight was inf
                return None
            w = 1.0 / spread
            s0, s1, s2, sy, sxy = s0 + w, s1 + w * xi, s2 + w * xi * xi, sy + w * yi, sxy + w * xi * yi
        det = s0 * s2 - s1 * s1
        if not det > 0.0:
            return None
        intercept, slope = (s2 * sy - s1 * sxy) / det, (s0 * sxy - s1 * sy) / det
        level = [max(intercept + slope * xi, 0.1 * yi) for xi, yi in zip(x, y)]
    return intercept, slope, s0 / det


def _bin_sums(index: np.ndarray, *weights: np.ndarray) -> list[np.ndarray]:
    """Per bin of ``index`` (whole numbers, of any dtype), the count and the sum of each of ``weights``.

    `BINS` bins: an index of ``BINS`` (a transfer of 1, give or take its rounding) counts in the last.
    Neighbouring coefficients mostly share a bin: each run of one bin is summed first
    (``np.add.reduceat``, vectorised), and only the runs' sums are binned (``np.bincount`` over
    every coefficient waits on each addition to the same bin: three times slower).
    """
    if not len(index):
        return [np.zeros(BINS) for _ in range(len(weights) + 1)]
    change = np.empty(len(index), dtype=bool)
    change[0] = True
    np.not_equal(index[1:], index[:-1], out=change[1:])
    starts = np.flatnonzero(change)
    bins = np.minimum(index[starts], BINS - 1).astype(np.intp)
    counts = np.bincount(bins, np.diff(starts, append=len(index)), BINS)
    return [counts] + [np.bincount(bins, np.add.reduceat(w, starts), BINS) for w in weights]


class Reading(NamedTuple):
    """What `estimate_reference_noise` found: the noise and the fit corrected for it."""

    variance: float  # s_A**2 read (applied when ``solution`` is not the plain fit)
    stderr: float  # of ``variance``, from its last regression
    solution: Solution
    amplification: float = 1.0  # of the errors, by the loop of estimate and fit (`loop_gain`)
    sensitivity: np.ndarray | None = None  # d sigma / d variance at the answer (px per variance)


def estimate_reference_noise(stats: SpectralStats, plain: Solution, problem: Problem, *,
                             refit, first: NoiseEstimate | None = None) -> Reading:
    """The reference's noise read from the pair, and the fit corrected for it (`Reading`).

    From the plain fit (``plain``), the noise is estimated at the current kernel and the fit
    corrected for it (``refit(stats, problem, near=sigma)``: a local spectral search), for up to
    `ROUNDS` rounds or until the estimate settles. Without a `NoiseEstimate.significant` reading
    no correction is made: ``plain`` comes back unchanged, with the variance the pair shows
    (`NoiseEstimate.reading`). Safeguards against overshoot: the estimate is clamped to what the
    reference's own power allows (`estimate_noise`), and each round after the first moves the
    variance by at most a factor `MAX_STEP`. ``first``: the estimate at ``plain``, where made already.
    """
    truncate, start_only = problem.options.truncate, problem.options.whole_gaussian

    def read(at: Solution) -> NoiseEstimate:
        given = at is plain and first is not None
        return first if given else estimate_noise(stats, at.sigma, at.gain, truncate)

    sol, variance, at_sol = plain, 0.0, None
    for _ in range(ROUNDS):
        found = read(sol)
        at_sol = found  # read at the current kernel (until a refit moves it)
        new = found.reference if found.significant else 0.0
        if variance:  # damped
            new = float(np.clip(new, variance / MAX_STEP, variance * MAX_STEP))
        if abs(new - variance) <= max(SETTLED * max(new, variance), found.stderr):
            break  # settled, or moving by less than the estimate can tell
        variance = new
        sol, at_sol = refit(stats.with_noise(variance), problem, start_only=start_only,
                            near=sol.sigma), None
    if not variance:
        return Reading(found.reading, found.stderr, plain)
    # read again at the corrected kernel: noise explains the residual once corrected, and reads
    # the same there. An estimate that does neither was not noise: a bead slide moved by 1.4 px
    # read s_A 14.6 (of 1,000) and swung sigma between 4.9 and 3.3 over the rounds, for a true 6.
    # Rounds that settled read it there last already
    final = at_sol if at_sol is not None else read(sol)
    if (found.misfit > CORRECTED_MISFIT or not final.significant or final.misfit > CORRECTED_MISFIT
            or not variance / MAX_STEP <= final.reference <= variance * MAX_STEP):
        return Reading(0.0, float("inf"), plain)
    # how sigma follows the variance there: the corrected fit for a nudged variance
    nudged = refit(stats.with_noise(variance * np.exp(NUDGE)), problem, start_only=start_only,
                   near=sol.sigma)
    sensitivity = (np.asarray(nudged.sigma) - np.asarray(sol.sigma)) / (variance * np.expm1(NUDGE))
    gain = loop_gain(stats, sol, found, sensitivity, truncate)
    return Reading(variance, found.stderr, sol, 1.0 / (1.0 - min(gain, MAX_LOOP_GAIN)), sensitivity)


def loop_gain(stats: SpectralStats, sol: Solution, found: NoiseEstimate, sensitivity: np.ndarray,
              truncate: float) -> float:
    """How much an error of sigma feeds back through the estimate into sigma again.

    The estimate and the corrected fit depend on each other: a sigma off by ``d`` reads the
    variance off by ``e * d``, which moves sigma by ``c * e * d``. With the loop's gain ``c * e``
    the errors of each step are amplified by ``1 / (1 - c * e)``. ``e`` is measured by one more
    estimate at a nudged sigma, ``c`` is ``sensitivity`` (sigma per variance).
    """
    sigma = np.asarray(sol.sigma)
    nudged = estimate_noise(stats, sigma * np.exp(NUDGE), sol.gain, truncate)
    reading = (nudged.reference - found.reference) / NUDGE  # variance per log-sigma
    return float(reading * np.mean(sensitivity / np.maximum(sigma, 1e-300)))


def with_estimate_error(stderr: np.ndarray, noise: NoiseCorrection) -> np.ndarray:
    """Standard errors that also carry the uncertainty of an estimated noise level.

    The correction moved sigma from ``plain_sigma`` to ``corrected_sigma`` for the variance
    ``sd**2``; sigma moves about linearly with the variance, so the estimate's own standard error
    adds ``(moved * stderr(sd**2) / sd**2)**2`` to each sigma's variance (the relative error
    capped at 1: a correction is never less sure than its whole size); the loop of estimate and
    fit amplifies both (``noise.amplification``, `loop_gain`).
    """
    if not (noise.estimated and noise.corrected and noise.sd > 0) or noise.sensitivity is None:
        return stderr
    moved = np.abs(np.asarray(noise.corrected_sigma) - np.asarray(noise.plain_sigma))
    spread = noise.variance_stderr * np.abs(noise.sensitivity)
    spread = np.minimum(spread, moved) if noise.variance_stderr >= noise.sd**2 else spread
    return noise.amplification * np.sqrt(stderr**2 + spread**2)


def sandwich_stderr(stats: SpectralStats, sigma, gain: float, *, per_axis: bool, gain_offset: bool,
                    truncate: float) -> np.ndarray:
    """Standard error of each sigma of a spectral L2 fit, robust to both noises and to misfit.

    The sandwich ``A^-1 B A^-1`` over DCT coefficients (each an independent observation for
    stationary noise): ``A`` the objective's Gauss-Newton matrix, with the reference's noise taken
    out of ``P_AA`` (noise in the reference looks like information in a plain ``J^T J``), ``B``
    the sum of each coefficient's squared score, which carries whatever residual it has (target
    and reference noise, a blur that is not quite this Gaussian) at its own frequency. Read on
    `informative` coefficients; the DC coefficient (the offset's) is left out. The Jacobian's
    columns are separable, so each side is one outer-grid contraction (as `normal_matrix`).
    """
    parts = axis_transfers([[s] for s in sigma], stats.shape, truncate, derivative=True)
    picked, weight = informative(parts)
    h, dh = ([p[k][sl] for p, sl in zip(parts, picked)] for k in (0, 1))
    info = np.subtract(stats.paa[picked], stats.n_frames * stats.noise, dtype=np.float64)
    score = _score(info, stats.pab[picked], h, gain)
    info.flat[0] = score.flat[0] = 0.0  # the DC coefficient: the offset's
    vecs = [product_vectors(*axis) for axis in zip(h, dh)]
    bread, meat = (column_products(contract(x, vecs, joint=False), gain, per_axis=per_axis,
                                   gain_column=gain_offset) for x in (info, score))
    with np.errstate(all="ignore"):
        try:
            inverse = np.linalg.inv(bread)
        except np.linalg.LinAlgError:
            return np.full(len(sigma), np.nan)
        var = np.diag(inverse @ meat @ inverse)[: len(bread) - (1 if gain_offset else 0)] / weight
    se = np.where(var >= 0, np.sqrt(np.abs(var)), np.nan)
    return se if per_axis else np.full(len(sigma), se[0])


def _score(info: np.ndarray, pab: np.ndarray, h: list[np.ndarray], gain: float) -> np.ndarray:
    """Each coefficient's squared score ``(P_AB - gain H P_AA)**2`` (``P_AA`` deflated: ``info``).

    ``h``: the transfer's columns per axis on the same coefficients.
    """
    score = outer([v[:, 0] for v in h])
    score *= info
    score *= -gain
    score += pab
    score *= score
    return score


def informative(parts: list, limit: int = SANDWICH_COEFFICIENTS):
    """``(slices, weight)``: the coefficients a sigma's standard error is read from.

    Along each axis, those up to where the kernel's transfer and its derivative (``parts``, each
    axis's `axis_transfers` at the sigma) fall below `NEGLIGIBLE` of their peak (beyond, a
    coefficient adds nothing to either side of the sandwich); every one of them where they are
    few (a wide kernel's information sits in a few low frequencies, too few to thin out), else
    every m-th (``weight = m**d`` coefficients each).
    """
    ends = []
    for h, dh in ((v[:, 0] for v in part) for part in parts):
        level = np.maximum(np.abs(h) / max(np.abs(h).max(), 1e-300),
                           np.abs(dh) / max(np.abs(dh).max(), 1e-300))
        ends.append(int(np.flatnonzero(level > NEGLIGIBLE).max(initial=0)) + 1)
    step = strided(tuple(ends), limit)[0].step
    return tuple(slice(0, end, step) for end in ends), float(step ** len(ends))
