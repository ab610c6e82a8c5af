"""The reference's noise through the resampling (docs/design.md section 18).

White noise of standard deviation s in the source, blurred by K and resampled by W, adds
``gain^2 s^2 sum_i (W K)_ji^2`` to the expected squared residual of destination pixel j. Summed
over the used pixels that is ``n_used gain^2 s^2 Q(K)`` with
``Q(K) = sum_l A(l) R_K(l)``: ``R_K`` the kernel's autocorrelation and ``A`` the mean over the
destination's rows of the autocorrelation of their resampling weights (one per axis, multiplied:
the weights are separable). On one grid ``A`` is a unit impulse and ``Q = sum K^2``, the
one-grid correction (section 16). Subtracting the term from the loss makes it unbiased.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._gaussian import GaussianKernel
from ._grid_model import (
    STEP,
    Evaluator,
    Fitted,
    Solved,
    empty_jacobian,
    l2_fitted,
    levenberg_marquardt,
    residual_at,
)
from ._stages import NoiseCorrection
from ._transforms import convolve_valid


def row_autocorrelation(weights) -> np.ndarray:
    """Mean over the rows of ``weights`` (CSR) of each row's autocorrelation, lags ``-L..L``."""
    indptr, indices, data = weights.indptr, weights.indices, weights.data
    width = int(np.max(np.diff(indptr)))
    total = np.zeros(2 * width - 1)
    for row in range(weights.shape[0]):
        cols, vals = indices[indptr[row]:indptr[row + 1]], data[indptr[row]:indptr[row + 1]]
        dense = np.zeros(width)
        dense[cols - cols.min()] = vals
        total += np.correlate(dense, dense, mode="full")
    return total / weights.shape[0]


class ResampledNoise:
    """``Q(K)`` for a grid pair's resampling: the noise share of one destination pixel per s^2."""

    def __init__(self, sampling):
        self.lags = [row_autocorrelation(s.weights) for s in sampling]

    @property
    def variance_factor(self) -> float:
        """Variance of a resampled white-noise pixel over the source's: ``prod_k A_k(0)``."""
        return float(np.prod([a[len(a) // 2] for a in self.lags]))

    def share(self, kernel: GaussianKernel, truncate: float) -> float:
        """``Q(K) = sum_l A(l) R_K(l) = sum_n K[n] (K * A)[n]`` for the sampled ``kernel``.

        ``A`` is symmetric, so correlating with it is convolving; K is zero beyond its support.
        """
        sampled = kernel.sampled(truncate)
        smeared = sampled
        for k, lags in enumerate(self.lags):
            pad = [(0, 0)] * sampled.ndim
            pad[k] = (len(lags) // 2, len(lags) // 2)
            shape = [1] * sampled.ndim
            shape[k] = len(lags)
            smeared = convolve_valid(np.pad(smeared, pad), lags.reshape(shape), axes=(k,))
        return float(np.sum(sampled * smeared))


class NoiseLevel(NamedTuple):
    """The source's noise and what the fit across grids does about it."""

    sd: float
    estimated: bool
    corrected: bool
    plain_sigma: np.ndarray | None = None  # the uncorrected L2 fit's sigma (the bias it has)
    corrected_sigma: np.ndarray | None = None

    @property
    def correction(self) -> NoiseCorrection | None:
        """As `NoiseCorrection`, for the ``reference_noise`` finding (None: nothing to say)."""
        if not self.sd or self.plain_sigma is None or self.corrected_sigma is None:
            return None
        return NoiseCorrection(self.sd, self.corrected, self.plain_sigma, self.corrected_sigma,
                               self.estimated)


def noise_level(options, start_fit, noise: ResampledNoise) -> NoiseLevel:
    """The source's noise: given, or ``"auto"``: the start fit's estimate on the resampled source.

    That estimate is of the resampled noise: the source's is larger by ``1 / sqrt(prod A_k(0))``.
    Only an L2 fit is corrected; ``"auto"`` corrects where the start fit found it worth it.
    """
    if options.reference_noise == "auto":
        sd = float(start_fit.reference_noise) / np.sqrt(noise.variance_factor)
        corrected = bool(start_fit.reference_noise_corrected)
        estimated = True
    else:
        sd, estimated = float(options.reference_noise), False
        corrected = sd > 0
    return NoiseLevel(sd, estimated, corrected and options.objective.least_squares)


def joint_fitted(evaluator: Evaluator, joint: np.ndarray, gain_offset: bool) -> Fitted:
    """The residual at a joint vector ``[kernel params, (gain, offset)]``."""
    n = evaluator.model.n_params
    gain, offset = (joint[n], joint[n + 1]) if gain_offset else (1.0, 0.0)
    return Fitted(residual_at(evaluator, joint[:n], gain, offset), float(gain), float(offset))


def corrected_fit(evaluator: Evaluator, params: np.ndarray, lower, upper, noise: ResampledNoise,
                  level: NoiseLevel, gain_offset: bool, *, max_jacobians: int, xtol: float) -> Solved:
    """The L2 fit less the noise's expected share ``n gain^2 s^2 Q(K)``, from ``params``.

    With a gain and offset they join the parameters (the share depends on the gain, so they
    cannot be projected out as the plain fit does). Returns the joint vector's solution.
    """
    model, n = evaluator.model, evaluator.model.n_params
    scale = evaluator.target.size * level.sd**2
    cache: dict = {}

    def values(theta):  # the last two kernels' (a step in gain/offset alone re-reads them)
        key = theta.tobytes()
        if key not in cache:
            if len(cache) >= 2:
                del cache[next(iter(cache))]
            cache[key] = evaluator.values(model.kernel(theta))
        return cache[key]

    def split(q):
        return (q[:n], q[n], q[n + 1]) if gain_offset else (q, 1.0, 0.0)

    def residual(q):
        theta, gain, offset = split(q)
        return gain * values(theta) + offset - evaluator.target

    def jacobian(q, r):
        theta, gain, _ = split(q)
        f = values(theta)
        jac = empty_jacobian(f.size, len(q))
        for i, e in enumerate(np.eye(n)):
            column = evaluator.values(model.kernel(theta + STEP * e))
            column -= f
            column *= gain / STEP
            jac[:, i] = column
        if gain_offset:
            jac[:, n], jac[:, n + 1] = f, 1.0
        return jac

    def penalty(q):
        theta, gain, _ = split(q)
        share = noise.share(model.kernel(theta), model.truncate)
        slopes = [(noise.share(model.kernel(theta + STEP * e), model.truncate)
                   - noise.share(model.kernel(theta - STEP * e), model.truncate)) / (2 * STEP)
                  for e in np.eye(n)]
        gradient = -gain**2 * scale * np.array(slopes)
        if gain_offset:
            gradient = np.r_[gradient, -2 * gain * scale * share, 0.0]
        return -gain**2 * scale * share, gradient

    start = params
    if gain_offset:
        plain = l2_fitted(evaluator, params, True)
        start = np.r_[params, plain.gain, plain.offset]
        lower, upper = np.r_[lower, -np.inf, -np.inf], np.r_[upper, np.inf, np.inf]
    return levenberg_marquardt(residual, start, lower, upper, max_jacobians=max_jacobians,
                               xtol=xtol, jacobian=jacobian, penalty=penalty)
