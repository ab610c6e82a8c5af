"""What the user should know about a fitted solution: flags, standard errors, adequacy, findings.

`findings_for` runs the checks after a fit (`napari_blurfit.fit.fit_blur`'s last stage before
the result): brightness, direction, bounds, identifiability, channels, detail, frames that
disagree, how Gaussian the blur is, and what a centred, axis-aligned kernel leaves out (a shift,
an ellipse, a rotation). Each check gives a `Finding`: a code, the options to refit with, the
numbers behind it and the sentence (docs/design.md section 14).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ._adequacy import Adequacy, Transfer, assess, assess_model, binned_pairs
from ._engine import blurred, compute_stats
from ._finding import Finding, advise
from ._kernels import transfer
from ._noise import sandwich_stderr, with_estimate_error
from ._probe import ProbeResult, probe_model
from ._shift import MIN_SIZE as PROBE_MIN_SIZE
from ._spectral import SpectralStats, Tabulated, contract, l2_at, l2_grid, normal_matrix, tabulate
from ._spread import JointSpread, joint_spread
from ._stages import (
    IDENTIFIABLE_FROM,
    IDENTITY_BELOW,
    SEARCH_FLOOR,
    Data,
    Problem,
    Solution,
    each_axis,
    spread,
)
from ._transforms import frame_dct

ELLIPSE_RATIO = 1.15  # per-axis sigmas this far apart, ...
ELLIPSE_GAIN = 0.05  # ... lowering the L2 loss by this share, make a finding: use per_axis
BRIGHTNESS_FACTORS = np.geomspace(1 / 8, 1, 7)  # sigmas (times the fitted) a gain/offset is tried at
# a free kernel must explain at least this share of the target's variance beyond the Gaussian for
# "not Gaussian" to be a finding: a share of a residual already at the noise floor is none
NOT_GAUSSIAN_R2_GAIN = 1e-4
CHANNEL_PLANES = 4  # a first axis of at most this many planes ...
CHANNEL_RATIO = 8  # ... when the others are this many times longer may hold channels
SPREAD_FRAMES = 32  # frames whose own sigma is compared with a joint fit's, at most
LOOSE_SIGMA = 0.05  # a whole-Gaussian fit's relative sigma error bar above this, ...
LOOSE_SHIFT_PX = 0.1  # ... or a shift error bar above this many px: a finding
DETAIL_QUANTA = 1.0  # a blur changing the reference by less than this many grey levels (rms) ...
UNDETERMINED = 0.25  # ... or a standard error over this share of sigma: not determined by the pair
NOISE_BIAS = 0.01  # a plain fit this far (relative) from the noise-corrected one makes a finding
QUANTUM_SAMPLE = 2**16  # pixels sampled to find the grey-level step
QUANTUM_LEVELS = 4096  # more distinct levels than this: not a lattice
# causes, the most actionable first: a finding the user acts on (a switch to flip) before one
# that describes the answer; `ordered` sorts the findings of one fit
ORDER = ("target_sharper", "channels", "brightness", "misaligned", "rotated", "elliptical",
         "at_bound", "not_identifiable", "lacks_detail", "loosely_pinned", "reference_noise",
         "not_gaussian", "joint_spread", "nonfinite_excluded")

#: The spectral L2 fit of statistics under a problem (`fit`'s): the reverse direction's check
Refit = Callable[[SpectralStats, Problem], Solution]


@dataclass(frozen=True)
class Findings:
    """What the user should know about a solution."""

    sigma: tuple[float, ...]  # as reported: below IDENTITY_BELOW snapped to 0
    stderr: tuple[float, ...]
    at_bound: bool
    identifiable: bool
    target_sharper: bool
    r2: float
    r2_linear: float
    transfer: Transfer | None
    items: tuple[Finding, ...]

    @property
    def notes(self) -> tuple[str, ...]:
        """The findings' sentences."""
        return tuple(f.text for f in self.items)


def findings_for(problem: Problem, data: Data, sol: Solution, *, refit: Refit) -> Findings:
    """Flags, standard errors, adequacy and findings: what the user should know about ``sol``.

    ``refit`` is the spectral L2 fit, run on the swapped pair when the sigma collapsed.
    """
    opt = problem.options
    found: list[Finding] = _channels(problem)
    used_stats = _used_stats(problem, data, sol)
    if not opt.gain_offset:  # a border band or NaNs leave real pixels: the whole image is the guide
        found += _brightness(sol, used_stats if opt.mask is not None else data.stats, opt.truncate)
    target_sharper = False
    if max(sol.sigma) < IDENTIFIABLE_FROM and problem.lower.max() < IDENTIFIABLE_FROM:
        problem.tick("checking the reverse direction")
        sharper = _looks_sharper(problem, data, sol, refit)
        if sharper:
            found.append(sharper)
            target_sharper = True
    at_low, at_high = _bound_hits(sol, problem)
    at_bound = bool(np.any(at_low | at_high))
    sigma = tuple(0.0 if s < IDENTITY_BELOW and lower_i < IDENTITY_BELOW else float(s)
                  for s, lower_i in zip(sol.sigma, each_axis(problem.lower, problem.d)))
    smallest = min(sigma) if sol.whole is None else float(sol.whole.kernel.principal[0][-1])
    identifiable = smallest >= IDENTIFIABLE_FROM
    stderr = _stderr(problem, data, sol)
    spread_ = _frames_spread(problem, data, sol, stderr, refit)
    if spread_.finding is not None:
        found.append(spread_.finding)
        stderr = spread_.stderr
    problem.tick("checking how Gaussian the blur is")
    adequacy = _adequacy(problem, data, sol, used_stats)
    r2 = 1.0 - sol.rss / sol.sst if sol.sst else float("nan")
    if not identifiable and not target_sharper:
        found.append(Finding("not_identifiable", {}, {"sigma": smallest},
                             f"sigma below {IDENTIFIABLE_FROM} px is not identifiable: the sampled "
                             "kernel is nearly the identity there, so any value this small fits "
                             "about as well"))
    if at_bound:
        found.append(_at_bound(problem, sol, at_low, at_high))
    if data.n_nonfinite:
        found.append(Finding("nonfinite_excluded", {}, {"n_nonfinite": int(data.n_nonfinite)},
                             f"{data.n_nonfinite} pixel(s) with NaN/inf were excluded from the loss"))
    # at a bound or below identifiability the sigma is not the Gaussian's best: say that instead
    if identifiable and not (at_bound or target_sharper):
        # "not Gaussian" is judged on the best Gaussian of the kind recommended: a round kernel
        # fitted to an axially elongated blur is the wrong Gaussian, not the wrong model
        ellipse = _axis_ellipse(problem, sol, used_stats)
        judged = (adequacy, r2) if ellipse is None else _recommended(problem, used_stats, sol, ellipse)
        not_gaussian = _not_gaussian(*judged)
        # channels read as z look like an ellipse with no blur along z: the same cause
        channels = any(f.code == "channels" for f in found)
        found += [ellipse] if ellipse is not None and not (not_gaussian or channels) else []
        # a shifted fit's shape is the probe's to judge: it fits the shift and the shape together
        found += _unfitted(problem, data, sol, shape=problem.options.shift or not not_gaussian)
        # a missing gain/offset, shift or shape, or channels read as z, explain a residual a free
        # kernel would take up
        explained = any(f.code in ("brightness", "misaligned", "channels", "elliptical", "rotated")
                        for f in found)
        found += [not_gaussian] if not_gaussian and not explained else []
    if identifiable and not target_sharper:
        found += _lacks_detail(problem, data, sol, stderr)
        # error bars widened by a misfit the user can remove are that finding's to explain, and
        # a sigma not determined at all is the stronger finding of the same cause
        explain = any(f.suggestion or f.code == "lacks_detail" for f in found)
        found += [] if explain else _loosely_pinned(sol, stderr)
    found += _reference_noise(problem, sol)
    return Findings(sigma, tuple(float(s) for s in stderr), at_bound,
                    bool(identifiable), target_sharper, float(r2), adequacy.r2_linear(r2),
                    adequacy.transfer, ordered(found))


def quantum(image) -> float:
    """The step between an image's grey levels when they lie on a lattice (integers, k/255), else 0.

    Read from a sample of up to `QUANTUM_SAMPLE` pixels: at most `QUANTUM_LEVELS` distinct values,
    all a whole number of the smallest step from the lowest.
    """
    image = np.asarray(image)
    # `flat` picks the sample from a strided view (frames with moved axes) without copying it all
    sample = image.flat[:: max(1, image.size // QUANTUM_SAMPLE)].astype(np.float64)
    levels = np.unique(sample[np.isfinite(sample)])
    if len(levels) < 2 or len(levels) > QUANTUM_LEVELS:
        return 0.0
    step = float(np.min(np.diff(levels)))
    multiples = (levels - levels[0]) / step
    return step if np.all(np.abs(multiples - np.round(multiples)) < 1e-3) else 0.0


def _loosely_pinned(sol: Solution, stderr) -> list[Finding]:
    """A finding when a whole-Gaussian fit's error bars are wide (`LOOSE_SIGMA`, `LOOSE_SHIFT_PX`).

    Dim, sparse or noisy content pins a shift and a covariance only loosely; the values are then
    an estimate to read with their error bars, which say how loose.
    """
    if sol.whole is None:
        return []
    relative = np.asarray(stderr) / np.maximum(sol.sigma, 1e-300)
    shift_se = np.asarray(sol.whole.shift_stderr)
    loose_shift = bool(np.nanmax(shift_se, initial=0.0) > LOOSE_SHIFT_PX)
    if not (loose_shift or np.nanmax(relative, initial=0.0) > LOOSE_SIGMA):
        return []
    sigma = ", ".join(f"{s:.3g} +/- {e:.2g}" for s, e in zip(sol.sigma, stderr))
    shift = ", ".join(f"{s:.2g} +/- {e:.2g}" for s, e in zip(sol.whole.kernel.shift, shift_se))
    where = f"sigma ({sigma}) px" + (f", shift ({shift}) px" if loose_shift else "")
    return [Finding("loosely_pinned", {}, {"sigma_stderr": tuple(float(e) for e in stderr),
                                            "shift_stderr": tuple(float(e) for e in shift_se)},
                    f"the data pin the kernel only loosely: {where}; dim, sparse or noisy content "
                    "leaves that much room (read the values with their error bars)")]


def _lacks_detail(problem: Problem, data: Data, sol: Solution, stderr) -> list[Finding]:
    """A finding when the pair cannot determine sigma: the reference lacks detail at its scale.

    Two ways. Rounding the target to grey levels is not random noise that averages out over
    many pixels: where the blur's whole effect on the reference, ``gain * (G_s * A - A)`` (rms,
    from the statistics), is below one of the target's grey levels (`DETAIL_QUANTA`), the rounding
    decides the fit, and sigma is not determined by the pair however small its error bar. Against
    random noise (the target's, the reference's), the standard error says it: over
    `UNDETERMINED` of sigma.
    """
    stats, pair = data.stats, data.pair
    relative = float(np.max(np.asarray(stderr) / np.maximum(sol.sigma, 1e-300)))
    if relative > UNDETERMINED:
        return [Finding("lacks_detail", {}, {"relative_stderr": relative},
                        f"sigma is not determined by this pair: its standard error is "
                        f"{100 * relative:.0f}% of sigma (the reference lacks detail at the blur's "
                        "scale, relative to the noise of the images)")]
    if stats.paa is None or pair.dask:
        return []
    step = quantum(pair.target)  # the target's rounding: the reference's is its noise
    if step == 0:
        return []
    columns = [np.stack([np.ones(n), h, h * h], axis=1) for n, h in
               zip(stats.shape, (transfer([s], n, problem.options.truncate)[:, 0]
                                 for s, n in zip(sol.sigma, stats.shape)))]
    total, blurred_, blurred2 = contract(stats.paa, columns, joint=True)
    change = float(abs(sol.gain) * np.sqrt(max(total - 2 * blurred_ + blurred2, 0.0) /
                                           (stats.n_frames * stats.n_pixels)))
    if change >= DETAIL_QUANTA * step:
        return []
    return [Finding("lacks_detail", {}, {"change": change, "quantum": step},
                    f"sigma is not determined by this pair: the blur changes the reference by "
                    f"{change:.2g} (rms), less than one grey level ({step:.2g}) of the target, so "
                    "its rounding decides the fit (the reference lacks detail at this scale)")]


def _reference_noise(problem: Problem, sol: Solution) -> list[Finding]:
    """A finding when the reference's noise would bias a plain fit by more than `NOISE_BIAS`.

    The bias is the spectral L2 fit's: without the correction against with it. When the fit
    itself was not corrected (L1, Huber, a mask, NaNs), the note gives the bias it keeps.
    """
    what = ("an L2 fit over a mask, a border band or NaNs with a gain/offset"
            if problem.options.objective.least_squares else f"an {problem.options.loss.upper()} fit")
    return noise_findings(sol.noise, what)


def noise_findings(noise, uncorrected: str) -> list[Finding]:
    """The ``reference_noise`` finding of a `NoiseCorrection` (or None), if its bias matters.

    ``uncorrected`` names the fit that was not corrected, for its text.
    """
    if noise is None or not noise.sd:
        return []
    plain, corrected = np.asarray(noise.plain_sigma), np.asarray(noise.corrected_sigma)
    bias = float(np.max((plain - corrected) / np.maximum(corrected, 1e-300)))
    if not bias > NOISE_BIAS:
        return []
    how = "estimated from the pair" if noise.estimated else "as given"
    head = f"the reference is noisy (sd {noise.sd:.3g}, {how}): "
    values = {"reference_noise": float(noise.sd), "bias": bias,
              "plain_sigma": tuple(float(s) for s in plain), "corrected": bool(noise.corrected)}
    if noise.corrected:
        text = (f"{head}a fit that ignores it would overstate sigma by {100 * bias:.2g}% "
                f"(sigma {_sigmas(plain)} px); this fit is corrected for it")
    else:
        text = (f"{head}{uncorrected} is not corrected for it and overstates sigma by about "
                f"{100 * bias:.2g}% here (an L2 fit on all pixels is corrected)")
    return [Finding("reference_noise", {}, values, text)]


def _sigmas(sigma) -> str:
    return ", ".join(f"{s:.3g}" for s in sigma) if len(set(np.round(sigma, 6))) > 1 else f"{sigma[0]:.3g}"


def _channels(problem: Problem) -> list[Finding]:
    """A finding when a 3D image's first axis is so short it may hold channels, not z.

    Taken as spatial (no ``spatial_axes`` given), channels are read as a blur along z.
    """
    shape = problem.pair.input_shape
    if problem.options.spatial_axes is not None or len(shape) != 3:
        return []
    planes = shape[0]
    if planes > CHANNEL_PLANES or min(shape[1:]) < CHANNEL_RATIO * planes:
        return []
    suggestion = {"spatial_axes": (-2, -1)}
    return [Finding("channels", suggestion, {"planes": int(planes)},
                    f"the first axis has only {planes} planes and was fitted as z: if it holds "
                    f"channels, {advise(suggestion)} to fit each as a frame of one 2D blur")]


def _frames_spread(problem: Problem, data: Data, sol: Solution, stderr: np.ndarray,
                   refit: Refit) -> JointSpread:
    """The `joint_spread` finding for the frames of a joint fit: do they share its sigma.

    Each frame's own sigma is its spectral L2 fit (up to `SPREAD_FRAMES` evenly spaced frames);
    in memory, without a mask or NaNs (their frames' statistics would need the excluded pixels).
    """
    pair = data.pair
    n = int(np.prod(pair.reference.shape[: pair.reference.ndim - pair.ndim])) if not pair.dask else 0
    if n < 2 or pair.used is not None or sol.whole is not None:
        return JointSpread(None, stderr)
    spatial = pair.reference.shape[pair.reference.ndim - pair.ndim :]
    ref, tgt = pair.reference.reshape(-1, *spatial), pair.target.reshape(-1, *spatial)
    picked = np.unique(np.linspace(0, n - 1, min(n, SPREAD_FRAMES)).round().astype(int))
    quiet = replace(problem, options=problem.options.replace(callback=None))  # one tick a frame
    sigmas, errors = [], []
    for i in picked:
        problem.tick(f"comparing the frames ({i + 1} of {n})")
        frame = replace(pair, reference=ref[i], target=tgt[i], input_shape=tuple(spatial),
                        spatial_axes=tuple(range(len(spatial))))
        stats = compute_stats(frame, workers=problem.workers)[0]
        own = refit(stats, quiet)
        sigmas.append(own.sigma)
        errors.append(_spectral_stderr(quiet, stats, own))
    return joint_spread(sigmas, errors, sol.sigma, stderr, [f"frame {i}" for i in picked], items="frames")


def ordered(found) -> tuple[Finding, ...]:
    """Findings in `ORDER` (the most actionable first), one per code."""
    rank = {code: i for i, code in enumerate(ORDER)}
    unique = {f.code: f for f in reversed(list(found))}  # the first of a code stays
    return tuple(sorted(unique.values(), key=lambda f: rank.get(f.code, len(ORDER))))


def brightness_rss(stats: SpectralStats, sigma, truncate: float,
                   plain_rss: float | None = None, table: Tabulated | None = None) -> tuple[float, float]:
    """L2 loss at ``sigma`` without a gain/offset, and the least with one at ``sigma`` or below.

    A fit without a gain/offset stretches sigma to make up for a brightness difference (or runs
    away to a flat model), so comparing both at the fitted sigma alone can miss it: the gain/offset
    side is the best over `BRIGHTNESS_FACTORS` of it, in one contraction of the statistics.
    ``plain_rss``: the first, where known already (a fit's own RSS at ``sigma``); ``table``: that
    contraction, where made already (at `brightness_sigmas`).
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    if table is None:
        table = tabulate(stats, brightness_sigmas(sigma), joint=True, truncate=truncate)
    with_go = table.project(stats, gain_offset=True)[0]
    plain = l2_at(stats, sigma, truncate=truncate)[False][0] if plain_rss is None else plain_rss
    return float(plain), float(np.min(with_go))


def brightness_sigmas(sigma) -> list[np.ndarray]:
    """The joint grid `brightness_rss` reads: per axis, ``sigma`` times `BRIGHTNESS_FACTORS`."""
    return [np.maximum(s * BRIGHTNESS_FACTORS, SEARCH_FLOOR) for s in np.asarray(sigma, dtype=np.float64)]


def _brightness(sol: Solution, stats: SpectralStats, truncate: float) -> list[Finding]:
    """A finding when a gain/offset would more than halve the L2 loss (`brightness_rss`)."""
    plain, with_go = sol.brightness or brightness_rss(stats, sol.sigma, truncate)
    return _halving(plain, with_go, sol.sst if sol.brightness else spread(stats))


def _halving(plain: float, rss_go: float, spread: float) -> list[Finding]:
    """The finding, when the L2 loss with a gain/offset (``rss_go``) is under half the plain one."""
    if rss_go < 0.5 * plain and plain - rss_go > 1e-3 * spread:
        suggestion = {"gain_offset": True}
        return [Finding("brightness", suggestion, {"loss_ratio": float(rss_go / plain)},
                        "a gain/offset would more than halve the L2 loss: the images differ in "
                        f"brightness or background; {advise(suggestion)}")]
    return []


def _at_bound(problem: Problem, sol: Solution, at_low: np.ndarray, at_high: np.ndarray) -> Finding:
    """The finding that the optimum sits on a bound; its suggestion widens the bounds it sits on."""
    sigma = sol.sigma if sol.whole is None else sol.whole.kernel.principal[0]
    lower, upper = problem.lower.astype(float), problem.upper.astype(float)
    if lower.size == 1:  # one shared sigma: one pair of bounds
        at_low, at_high = at_low.any(), at_high.any()
    reach = upper if sol.whole is None else np.maximum(upper, sigma.max())  # a rotated fit passes them

    def pairs(low, high):  # one pair when the axes share it, else one per axis
        out = tuple((float(lo), float(hi)) for lo, hi in zip(low, high))
        return out[0] if len(set(out)) == 1 else out

    # the bound reached goes: a lower one to 0, an upper one to twice what it was (or was passed by)
    suggestion = {"sigma_bounds": pairs(np.where(at_low, 0.0, lower), np.where(at_high, 2.0 * reach, upper))}
    values = {"sigma": tuple(float(s) for s in sigma), "sigma_bounds": pairs(lower, upper)}
    text = ("the optimum lies on a sigma bound; the best blur may lie beyond it" if sol.whole is None
            else "the fitted principal sigmas lie outside sigma_bounds, which a rotated or shifted fit "
            "does not constrain")
    return Finding("at_bound", suggestion, values, f"{text} ({advise(suggestion)})")


def _not_gaussian(adequacy: Adequacy, r2: float) -> Finding | None:
    """The finding that a free kernel explains much more than the Gaussian (`Adequacy.note`)."""
    text = adequacy.note(r2)
    if text is None or adequacy.r2_linear(r2) - r2 < NOT_GAUSSIAN_R2_GAIN:
        return None
    return Finding("not_gaussian", {}, {"share": float(adequacy.share), "r2": float(r2),
                                        "r2_linear": adequacy.r2_linear(r2)}, text)


def _unfitted(problem: Problem, data: Data, sol: Solution, *, shape: bool) -> list[Finding]:
    """What the probe sees the fit left out: a shift, a rotated ellipse (an ellipse, fitted shifted).

    Without ``shape`` (the blur is not Gaussian at all) only a shift is reported: the shape of
    a Gaussian fitted to a non-Gaussian blur says little. The probe honours the mask, the
    border band and NaN pixels (``used``).
    """
    opt = problem.options
    found = []
    too_small = min(problem.pair.spatial_shape) < PROBE_MIN_SIZE
    # nothing left to see: the 3D probe fits a shift and per-axis sigmas, the 2D one a rotation too
    fitted_all = opt.shift and (opt.full_covariance or (problem.d == 3 and opt.sigma_per_axis))
    if fitted_all or data.pair.dask or too_small:
        return found
    problem.tick("checking for a shift and a rotated blur")
    try:
        probe = probe_model(data.pair.reference, data.pair.target, ndim=problem.d,
                            start_sigma=np.maximum(sol.sigma, IDENTIFIABLE_FROM),
                            truncate=opt.truncate, workers=problem.workers, used=data.pair.used,
                            start_shift=sol.whole.kernel.shift if opt.shift else None)
    except ValueError:  # a kernel as wide as the image: no crop can show a shift; the fit stands
        return found
    if probe.misaligned and not opt.shift:
        found.append(_misaligned(probe))
    # a centred fit's ellipse along the axes is left to the exact check on the whole image
    # (`_axis_ellipse`); a shifted one's is the probe's, which fits the shift too
    if shape and opt.shift and probe.elliptical and not (probe.rotated or opt.sigma_per_axis):
        found.append(Finding("elliptical", {"per_axis": True},
                             {"sigma": tuple(float(s) for s in probe.kernel.sigma)}, probe.shape_note))
    if shape and probe.rotated and not opt.full_covariance:
        found.append(Finding("rotated", {"full_covariance": True},
                             {"principal_sigmas": tuple(float(s) for s in probe.principal_sigmas),
                              "angle": probe.angle}, probe.shape_note))
    return found


def _misaligned(probe: ProbeResult) -> Finding:
    """The probe's shift as a finding: ``values["shift"]`` per axis (px), ``"distance"`` its length."""
    return Finding("misaligned", {"shift": True},
                   {"shift": tuple(float(s) for s in probe.shift),
                    "distance": float(np.linalg.norm(probe.shift))}, probe.shift_note)


def _axis_ellipse(problem: Problem, sol: Solution, stats: SpectralStats) -> Finding | None:
    """A finding when one sigma per axis would fit a centred round fit clearly better.

    Exact, from the statistics: one contraction over a grid of per-axis sigmas around the round
    answer (a factor of 2 each way; moved where its best lies on an edge), then, when that is a
    finding, refined on a finer grid: cheap, and on the whole image, not a crop.
    ``values["rss"]`` is the per-axis kernel's L2 loss.
    Not for a shifted fit (the statistics are of the centred pair: a shift reads as an ellipse).
    """
    opt = problem.options
    if opt.sigma_per_axis or opt.shift:
        return None
    rss = l2_at(stats, sol.sigma, truncate=opt.truncate)[opt.gain_offset][0]

    def clear(per_axis, best_rss):
        return per_axis.max() > ELLIPSE_RATIO * per_axis.min() and (rss - best_rss) > ELLIPSE_GAIN * rss

    per_axis, best_rss, edge = _best_per_axis(problem, stats, np.asarray(sol.sigma), 0.7)
    if clear(per_axis, best_rss):  # refined only when it is a finding: a round pair pays one grid
        for _ in range(3):  # a best on the grid's edge: the grid moves there (a (3, 1, 1) blur)
            if not edge:
                break
            per_axis, best_rss, edge = _best_per_axis(problem, stats, per_axis, 0.7)
        per_axis, best_rss, _ = _best_per_axis(problem, stats, per_axis, 0.14)
    gain = (rss - best_rss) / max(rss, 1e-300)
    if clear(per_axis, best_rss):
        suggestion = {"per_axis": True}
        return Finding("elliptical", suggestion,
                       {"sigma": tuple(float(s) for s in per_axis), "loss_reduction": float(gain),
                        "rss": float(best_rss)},
                       f"the blur looks elliptical along the array axes (about "
                       f"{', '.join(f'{s:.2g}' for s in per_axis)} px per axis; one sigma per axis "
                       f"lowers the L2 loss by {100 * gain:.0f}%): {advise(suggestion)}")
    return None


def _best_per_axis(problem: Problem, stats: SpectralStats, centre: np.ndarray,
                   span: float) -> tuple[np.ndarray, float, bool]:
    """Best per-axis sigma on a log grid of ``exp(+-span)`` around ``centre``.

    Also its L2 loss, and whether it lies on the grid's edge along some axis.
    """
    opt = problem.options
    factors = np.exp(np.linspace(-span, span, 11))
    candidates = [centre[i] * factors for i in range(problem.d)]
    grid = l2_grid(stats, candidates, joint=False, gain_offset=opt.gain_offset,
                   truncate=opt.truncate)[0]
    best = np.unravel_index(int(np.argmin(grid)), grid.shape)
    edge = any(i in (0, len(factors) - 1) for i in best)
    return np.array([c[i] for c, i in zip(candidates, best)]), float(grid[best]), edge


def _recommended(problem: Problem, stats: SpectralStats, sol: Solution,
                 ellipse: Finding) -> tuple[Adequacy, float]:
    """Adequacy and r2 of the per-axis kernel an ``ellipse`` finding recommends."""
    sigma = ellipse.values["sigma"]
    r2 = 1.0 - ellipse.values["rss"] / sol.sst if sol.sst else float("nan")
    return assess(stats, sigma, sol.gain, truncate=problem.options.truncate), r2


def _adequacy(problem: Problem, data: Data, sol: Solution, used_stats: SpectralStats) -> Adequacy:
    """The free-filter comparison, against the diagonal model or the fitted rotated/shifted one."""
    opt = problem.options
    if sol.whole is None:
        return assess(used_stats, sol.sigma, sol.gain, truncate=opt.truncate)
    pair = data.pair
    # the fitted image is the target plus the fit's residual (no second convolution), formed in
    # the residual's memory: the fit is done with it
    fitted = np.add(sol.whole.residual.reshape(pair.target.shape), pair.target,
                    out=sol.whole.residual.reshape(pair.target.shape))
    target = pair.target if pair.used is None else np.where(pair.used, pair.target, fitted)
    return assess_model(*_model_stats(problem, data, fitted, target), sol.gain)


def _model_stats(problem: Problem, data: Data, fitted: np.ndarray, target: np.ndarray):
    """Makers of the statistics of (fitted, target), (reference, target) and (reference, fitted).

    A single frame transforms each image once (the reference's transform is kept from the first
    pass; the fitted image is transformed in place) and sums the products straight into the
    check's frequency blocks (`binned_pairs`, the three in one pass); stacks go through
    `compute_stats`, which chunks the frames.
    """
    pair, workers = data.pair, problem.workers
    if data.ref_hat is None:
        def of(a, b):
            return lambda: compute_stats(replace(pair, reference=a, target=b, used=None),
                                         workers=workers)[0]

        return of(fitted, target), of(pair.reference, target), of(pair.reference, fitted)
    nd = pair.ndim
    target_hat = frame_dct(target, nd, workers=workers,
                           out=None if target is pair.target else target)
    fitted_hat = frame_dct(fitted, nd, workers=workers, out=fitted)
    # the three pairs in one pass: each transform read once, each product summed once
    fit, pair_, model = binned_pairs([data.ref_hat, target_hat, fitted_hat],
                                     [(2, 1), (0, 1), (0, 2)], nd)
    return (lambda: fit), (lambda: pair_), (lambda: model)


def _used_stats(problem: Problem, data: Data, sol: Solution) -> SpectralStats:
    """Statistics of the pixels that count: excluded target pixels replaced by the fitted model.

    Excluded pixels (a mask, a border band, NaNs) may hold anything; set to the model they add
    no residual, so the adequacy check sees only the pixels the fit used. Dask pairs keep the
    whole-image statistics (an approximation where pixels were excluded).
    """
    pair = data.pair
    if data.all_pixels or pair.dask:
        return data.stats
    nd, opt = pair.ndim, problem.options
    ref_hat = data.ref_hat if data.ref_hat is not None else frame_dct(pair.reference, nd)
    model = blurred(ref_hat, sol.sigma, nd, opt.truncate, problem.workers)
    model = (sol.gain * model + sol.offset).astype(pair.target.dtype, copy=False)
    filled = np.where(np.broadcast_to(pair.used, model.shape), pair.target, model)
    return compute_stats(replace(pair, target=filled, used=None), workers=problem.workers)[0]


def _spectral_stderr(problem: Problem, stats: SpectralStats, sol: Solution) -> np.ndarray:
    """Gauss-Newton standard error per axis of a spectral L2 fit on all pixels of ``stats``."""
    n = stats.n_frames * stats.n_pixels
    data = Data(None, stats, None, 0, n, n)
    return _stderr(problem, data, replace(sol, whole=None))


def _stderr(problem: Problem, data: Data, sol: Solution) -> np.ndarray:
    """Gauss-Newton standard error per spatial axis (NaN where the sigma has no leverage)."""
    opt, d = problem.options, problem.d
    if sol.whole is not None:  # sigma_i = sqrt(C_ii): se(sigma_i) = se(C_ii) / (2 sigma_i)
        return np.diag(sol.whole.covariance_stderr) / (2.0 * np.maximum(sol.sigma, 1e-300))
    # the statistics hold every pixel: a mask's excluded ones (garbage, maybe) say nothing of the
    # residual of the pixels used, so a masked fit keeps Gauss-Newton
    if sol.noise is not None and data.all_pixels and opt.objective.least_squares:
        se = sandwich_stderr(data.stats, np.maximum(sol.sigma, IDENTITY_BELOW), sol.gain,
                             per_axis=opt.per_axis, gain_offset=opt.gain_offset,
                             truncate=opt.truncate)
        return with_estimate_error(se, sol.noise)
    p = (d if opt.per_axis else 1) + (2 if opt.gain_offset else 0)
    if data.n_used <= p:
        return np.full(d, np.nan)
    jtj = normal_matrix(data.stats, np.maximum(sol.sigma, IDENTITY_BELOW), sol.gain,
                        per_axis=opt.per_axis, gain_offset=opt.gain_offset,
                        truncate=opt.truncate) * (data.n_used / data.n_total)
    s2 = sol.rss / (data.n_used - p)
    k = d if opt.per_axis else 1
    with np.errstate(all="ignore"):
        try:
            var = np.diag(s2 * np.linalg.inv(jtj))[:k]
        except np.linalg.LinAlgError:
            var = np.full(k, np.nan)
    se = np.where(var >= 0, np.sqrt(np.abs(var)), np.nan)
    return se if opt.per_axis else np.full(d, se[0])


def _bound_hits(sol: Solution, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """Where the sigmas (principal sigmas of a rotated fit) touch or pass the lower / upper bound."""
    if sol.whole is not None:
        sigma = sol.whole.kernel.principal[0]
        at_high = sigma.max() >= problem.upper.min() * (1 - 1e-3)
        at_low = problem.lower.max() > 0 and sigma.min() <= problem.lower.max() * (1 + 1e-3)
        return np.array([bool(at_low)]), np.array([bool(at_high)])
    sigma, d = sol.sigma, len(sol.sigma)
    lo, hi = each_axis(problem.lower, d), each_axis(problem.upper, d)
    at_high = sigma >= hi * (1 - 1e-3)
    at_low = (lo > 0) & (sigma <= np.maximum(lo, SEARCH_FLOOR) * (1 + 1e-3))
    return at_low, at_high


def _looks_sharper(problem: Problem, data: Data, sol: Solution, refit: Refit) -> Finding | None:
    """A finding when the other direction finds a real blur that fits better (sigma collapsed)."""
    opt = problem.options
    back = compute_stats(data.pair, swap=True, workers=problem.workers)[0]
    sol_b = refit(back, problem)
    rss_b = sol_b.rss

    def relative(stats, rss):  # goodness relative to each direction's own target energy
        energy = stats.cbb - (stats.dc_b @ stats.dc_b if opt.gain_offset else 0.0)
        return rss / max(energy, 1e-300)

    if max(sol_b.sigma) >= 0.5 and relative(back, rss_b) < relative(data.stats, sol.rss):
        which = "reference" if opt.reverse else "target"
        suggestion = {"reverse": not opt.reverse}
        return Finding("target_sharper", suggestion, {"reverse_sigma": float(max(sol_b.sigma))},
                       f"the {which} looks sharper than the image it should be a blur of: the other "
                       f"direction fits sigma ~ {max(sol_b.sigma):.3g} px; {advise(suggestion)}")
    return None
