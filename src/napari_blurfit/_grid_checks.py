"""What a fit across grids checks besides its answer, in the source's pixels (docs/design.md 18).

The start fit looks at the pair on the destination's grid, where a shift or a blur is smaller
in pixels by the ratio of the grids: a 0.7 px shift of a 2x-binned pair is 0.35 target px,
below what that fit calls misaligned, yet it inflates sigma by a quarter. These checks ask the
exact model on the crop instead.
"""

from __future__ import annotations

import numpy as np

from ._finding import Finding
from ._findings import NOISE_BIAS
from ._gaussian import GaussianModel
from ._grid_model import Evaluator, l2_fitted, levenberg_marquardt
from ._grid_noise import NoiseLevel, ResampledNoise, corrected_fit
from ._probe import MISALIGNED_PX, SIGNIFICANT_LOSS

PROBE_JACOBIANS = 6  # a warning needs the basin, not the last digit
# a noise level the pair did not call significant is said only where the bias it would cause is
# this large (a clean reference against a gain/offset target read 0.021 from the start's misfit,
# a 2.6% "bias"; a real s 0.05 one of 21%) ...
UNSURE_NOISE_BIAS = 3 * NOISE_BIAS
# ... and where its share of the residual is possible: at most the residual's whole variance
# (with some room for the estimate's scatter)
NOISE_SHARE_ROOM = 1.1


def misalignment(region: Evaluator, params: np.ndarray, options, low, high) -> Finding | None:
    """The ``misaligned`` finding when a shift (source px) fits the region clearly better.

    As on one grid (`napari_blurfit._probe`): a shift above `MISALIGNED_PX` whose removal raises
    the region's L2 loss by `SIGNIFICANT_LOSS` or more.
    """
    model = region.model
    if model.shift:
        return None
    moved = GaussianModel(model.ndim, model.truncate, model.full_covariance, shift=True,
                          isotropic=model.isotropic)
    probe = Evaluator(region.pair, region.frames, region.block, moved, region.tick)
    start = moved.params(model.kernel(params))
    centred = l2_fitted(probe, start, options.gain_offset).residual
    d = model.ndim
    solved = levenberg_marquardt(lambda p: l2_fitted(probe, p, options.gain_offset).residual, start,
                                 np.r_[low, np.full(d, -np.inf)], np.r_[high, np.full(d, np.inf)],
                                 max_jacobians=PROBE_JACOBIANS, xtol=1e-3)
    shift = moved.kernel(solved.params).shift
    rise = float(centred @ centred) / max(float(solved.residual @ solved.residual), 1e-300) - 1.0
    if not (np.linalg.norm(shift) > MISALIGNED_PX and rise >= SIGNIFICANT_LOSS):
        return None
    where = region.pair.roles.source
    text = ", ".join(f"{s:.2f}" for s in shift)
    return Finding("misaligned", {"shift": True},
                   {"shift": tuple(float(s) for s in shift), "distance": float(np.linalg.norm(shift))},
                   f"the target looks misaligned by {np.linalg.norm(shift):.2f} px (shift {text} px, "
                   f"in the {where}'s pixels); a centred kernel reads a shift as extra blur: fit "
                   "with shift=True")


def uncorrected_noise(region: Evaluator, params: np.ndarray, options, level: NoiseLevel,
                      noise: ResampledNoise, low, high) -> Finding | None:
    """A finding when noise read from the pair, but not corrected for, would bias sigma.

    On the destination's grid a small blur leaves the noise line too short to call significant,
    while in the source's pixels the same noise moves sigma by several percent: say how much.
    """
    if (level.corrected or not level.sd or options.reference_noise != "auto"
            or not options.objective.least_squares):
        return None
    model = region.model
    plain_fit = l2_fitted(region, params, options.gain_offset)
    share = plain_fit.gain**2 * level.sd**2 * noise.share(model.kernel(params), model.truncate)
    if share > NOISE_SHARE_ROOM * float(np.mean(plain_fit.residual**2)):
        return None  # more noise than the residual holds: the reading is the start's misfit
    solved = corrected_fit(region, params, low, high, noise, level, options.gain_offset,
                           max_jacobians=PROBE_JACOBIANS, xtol=1e-4)
    plain = np.sqrt(np.diag(model.kernel(params).covariance))
    corrected = np.sqrt(np.diag(model.kernel(solved.params[:model.n_params]).covariance))
    bias = float(np.max((plain - corrected) / np.maximum(corrected, 1e-300)))
    if not bias > UNSURE_NOISE_BIAS:
        return None
    sigma = ", ".join(f"{s:.3g}" for s in corrected)
    return Finding("reference_noise", {"reference_noise": round(level.sd, 4)},
                   {"reference_noise": level.sd, "bias": bias,
                    "plain_sigma": tuple(float(s) for s in plain), "corrected": False},
                   f"the reference may be noisy (sd {level.sd:.3g} read from the pair, too uncertain "
                   f"to correct for on its own): if it is, this fit overstates sigma by "
                   f"{100 * bias:.2g}% (corrected: sigma {sigma} px); pass "
                   f"reference_noise={level.sd:.3g}, or the level you know, to correct for it")
