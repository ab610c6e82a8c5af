"""The fit across pixel grids (docs/design.md section 18).

The model: the kernel K sampled on the source's grid, ``M = gain * (K * source) + offset`` with
reflect borders, each destination pixel the mean of M over its footprint (``"area"``) or M at
its centre (``"point"``), `_resample`'s weights. Three steps:

1. a start: the source resampled onto the destination's grid and fitted there by `fit_blur`
   (resampling nearly commutes with the blur), its kernel scaled back to source pixels; that
   fit also looks at the pair (a brightness difference, channels) and reads its noise;
2. the exact model by Levenberg-Marquardt on a central crop, cheap;
3. the same on every pixel from the crop's optimum: one or two Jacobians, which also give the
   standard errors. L1 and Huber go on from the crop's L2 optimum by Nelder-Mead on the crop,
   then Newton steps on every pixel. With the reference's
   noise known or read, the L2 fits are corrected for it (`_grid_noise`); a shift and an
   uncorrected noise level are then judged in source pixels (`_grid_checks`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import optimize

from ._finding import Finding
from ._findings import noise_findings
from ._gain_offset import best_gain_offset
from ._gaussian import GaussianKernel, GaussianModel
from ._grid_checks import misalignment, uncorrected_noise
from ._grid_model import (
    STEP,
    Evaluator,
    Fitted,
    brighten_minus,
    finite_differences,
    l2_fitted,
    levenberg_marquardt,
    normal_equations,
    residual_at,
)
from ._grid_noise import NoiseLevel, ResampledNoise, corrected_fit, joint_fitted, noise_level
from ._grid_pair import GridPair
from ._losses import HUBER_K
from ._options import FitOptions
from ._resample import resample
from ._result import BlurFit
from ._stages import IDENTIFIABLE_FROM, IDENTITY_BELOW

CROP_PIXELS = 2**16  # destination pixels per frame of the crop the exact model is first fitted on
CROP_FRAMES = 4  # frames of a stack the crop keeps
CROP_XTOL, FULL_XTOL = 1e-5, 2e-3  # largest parameter step that ends the crop's / the full fit
CROP_JACOBIANS, FULL_JACOBIANS = 30, 4
POLISH_STEPS = 2  # Newton steps of L1/Huber on every pixel from the crop's optimum
# findings of the start fit that hold for the pair as such; an ellipse or rotation on the
# destination's grid is one in source pixels only where the grids' pixel ratio is the same along
# every axis (said in the destination's pixels). A misalignment is judged again in source pixels
# (`_grid_checks`); others (how Gaussian, lacks detail, loosely pinned) judge the start's
# approximate model and are not carried.
CARRIED = ("brightness", "channels", "target_sharper")
CARRIED_IF_ROUND_RATIO = ("elliptical", "rotated")


def robust_fitted(evaluator: Evaluator, params: np.ndarray, options: FitOptions, loss,
                  start: Fitted) -> Fitted:
    """The model at ``params`` with the gain and offset best for ``loss`` (warm-started at ``start``'s)."""
    f = evaluator.values(evaluator.model.kernel(params))
    b = evaluator.target
    gain, offset = start.gain, start.offset
    if options.gain_offset:
        gain, offset, _ = best_gain_offset(loss, f, b, gain, offset, n_eff=b.size)
    return Fitted(brighten_minus(f, gain, offset, b), float(gain), float(offset))


def robust_fit(evaluator: Evaluator, params: np.ndarray, options: FitOptions, loss, start: Fitted,
               scale: np.ndarray, max_evaluations: int) -> tuple[np.ndarray, Fitted]:
    """Nelder-Mead on the L1/Huber loss from ``params``, gain and offset solved for each kernel."""
    last = {"fitted": start}

    def value(p) -> float:
        last["fitted"] = robust_fitted(evaluator, p, options, loss, last["fitted"])
        return loss.value(last["fitted"].residual) / evaluator.target.size

    simplex = np.vstack([params] + [params + scale * e for e in np.eye(len(params))])
    result = optimize.minimize(value, params, method="Nelder-Mead",
                               options={"initial_simplex": simplex, "xatol": 1e-5, "fatol": 0.0,
                                        "maxfev": max_evaluations})
    return result.x, robust_fitted(evaluator, result.x, options, loss, last["fitted"])


def central_block(shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The centred block of at most `CROP_PIXELS` pixels, a cube where the axes allow."""
    side = int(np.ceil(CROP_PIXELS ** (1 / len(shape))))
    out = []
    for n in shape:
        m = min(n, side)
        out.append(slice((n - m) // 2, (n - m) // 2 + m))
    return tuple(out)


def start_kernel(pair: GridPair, options: FitOptions, fit_blur,
                 variance_factor: float) -> tuple[GaussianKernel, BlurFit]:
    """The start: the source resampled onto the destination's grid, fitted there, scaled back.

    An L2 fit whatever the loss: the exact model's L2 fit follows it, and L1/Huber go on from that.

    ``variance_factor``: of white source noise through the resampling (a given noise level is
    passed on scaled by its square root).
    """
    d = pair.ndim
    resampled = resample(pair.source, [s.weights for s in pair.sampling], 1,
                         dtype=np.result_type(pair.source.dtype, np.float32))
    ratio = np.array(pair.grids[1].scale) / np.array(pair.grids[0].scale)
    isotropic_ratio = np.allclose(ratio, ratio[0], rtol=1e-6)
    used = pair.used
    if used is not None and used.shape[0] == 1:
        used = used[0]
    start = fit_blur(resampled, pair.destination, loss="l2",
                     per_axis=options.per_axis or not isotropic_ratio, gain_offset=options.gain_offset,
                     full_covariance=options.full_covariance, shift=options.shift, mask=used,
                     spatial_axes=tuple(range(1, d + 1)), truncate=options.truncate,
                     workers=options.workers, warn=False, callback=options.callback,
                     reference_noise=options.reference_noise if options.reference_noise == "auto"
                     else float(options.reference_noise) * np.sqrt(variance_factor))
    cov = np.asarray(start.covariance) * np.outer(ratio, ratio)
    cov = cov + np.eye(d) * IDENTIFIABLE_FROM**2 * (np.diag(cov) < IDENTIFIABLE_FROM**2)
    return GaussianKernel(cov, np.asarray(start.shift) * ratio), start


def fit_across_grids(pair: GridPair, options: FitOptions, lower: np.ndarray, upper: np.ndarray,
                     fit_blur) -> BlurFit:
    """Fit the kernel of ``pair`` under ``options`` within the sigma bounds (`fit_blur` across grids).

    ``fit_blur`` is passed in (it fits the start on the destination's grid).
    """
    tick = options.callback or (lambda stage: None)
    tick("fitting the start on the target's grid")
    noise = ResampledNoise(pair.sampling)
    start, start_fit = start_kernel(pair, options, fit_blur, noise.variance_factor)
    level = noise_level(options, start_fit, noise)
    model = GaussianModel(pair.ndim, options.truncate, options.full_covariance, options.shift,
                          isotropic=not options.per_axis and not options.full_covariance)
    low, high = _param_bounds(model, lower, upper)
    params = np.clip(model.params(start), low, high)
    everything = Evaluator(pair, slice(None), tuple(slice(None) for _ in pair.inside), model, tick)
    crop = _crop(pair, model, tick)
    go = options.gain_offset
    last = dict(max_jacobians=FULL_JACOBIANS, xtol=FULL_XTOL) if crop is not None else \
        dict(max_jacobians=CROP_JACOBIANS, xtol=CROP_XTOL)
    if crop is not None:
        params = levenberg_marquardt(lambda p: l2_fitted(crop, p, go).residual, params, low, high,
                                     max_jacobians=CROP_JACOBIANS, xtol=CROP_XTOL).params
    loss = options.objective
    if level.corrected:
        plain = params if crop is not None else levenberg_marquardt(
            lambda p: l2_fitted(everything, p, go).residual, params, low, high, **last).params
        if crop is not None:
            params = corrected_fit(crop, params, low, high, noise, level, go,
                                   max_jacobians=CROP_JACOBIANS, xtol=CROP_XTOL).params[:len(params)]
        solved = corrected_fit(everything, params if crop is not None else plain, low, high, noise,
                               level, go, **last)
        level = level._replace(plain_sigma=np.sqrt(np.diag(model.kernel(plain).covariance)))
        params, jac = solved.params[:model.n_params], solved.jacobian
        fitted = joint_fitted(everything, solved.params, go)
    elif loss.least_squares or crop is None:
        gain_offset = {}  # of every vector evaluated: the optimum's without evaluating it again

        def residual(p):
            fitted = l2_fitted(everything, p, go)
            gain_offset[p.tobytes()] = fitted.gain, fitted.offset
            return fitted.residual
        solved = levenberg_marquardt(residual, params, low, high, **last)
        params, jac = solved.params, solved.jacobian
        fitted = Fitted(solved.residual, *gain_offset[params.tobytes()])
    else:  # L1/Huber go on from the crop's L2 optimum: an L2 fit on every pixel would only start them
        fitted, jac = l2_fitted(crop, params, go), None
    if loss.has_threshold:  # by default HUBER_K noise sigmas of the L2 fit's residuals, as `fit_blur`
        scale = np.sqrt(np.pi / 2) * np.mean(np.abs(fitted.residual))
        loss = loss.with_delta(options.huber_delta or HUBER_K * scale)
    if not loss.least_squares:
        params, fitted, jac = _robust(everything, crop, params, fitted, options, loss, (low, high))
    _check_overlap_holds(pair, model, model.kernel(params))
    level = level._replace(corrected_sigma=np.sqrt(np.diag(model.kernel(params).covariance)))
    tick("checking the fit")
    probed = crop or everything
    checks = [misalignment(probed, params, options, low, high),
              uncorrected_noise(probed, params, options, level, noise, low, high)]
    return _result(pair, options, model, params, fitted, jac, loss, everything.target, start_fit,
                   (lower, upper), level, [c for c in checks if c is not None])


def _carried(findings, pair: GridPair) -> list[Finding]:
    """The start fit's findings that hold for the pair (`CARRIED`), pixel numbers labelled."""
    ratio = np.array(pair.grids[1].scale) / np.array(pair.grids[0].scale)
    in_pixels = CARRIED_IF_ROUND_RATIO if np.allclose(ratio, ratio[0]) else ()
    out = [f for f in findings if f.code in CARRIED]
    where = f"on the {pair.roles.destination}'s pixel grid (the {pair.roles.source} resampled onto it), "
    out += [replace(f, text=where + f.text) for f in findings if f.code in in_pixels]
    return out


def _check_overlap_holds(pair: GridPair, model: GaussianModel, kernel: GaussianKernel) -> None:
    """The kernel must fit inside the region the overlap covers in source pixels, along every axis."""
    for k, (sampling, radius) in enumerate(zip(pair.sampling, model.radius(kernel))):
        first, last = sampling.columns
        if 2 * radius + 1 > last - first:
            n = sampling.inside.stop - sampling.inside.start
            sigma = float(np.sqrt(kernel.covariance[k, k]))
            raise ValueError(
                f"the grids overlap by only {n} {pair.roles.destination} pixels along axis {k} "
                f"({last - first} {pair.roles.source} pixels): too small for the fitted kernel "
                f"(sigma {sigma:.3g} {pair.roles.source} px, {2 * radius + 1} px wide at truncate="
                f"{model.truncate:g}); fit images that overlap more")


def _crop(pair: GridPair, model: GaussianModel, tick) -> Evaluator | None:
    """The central crop's evaluator, or None when the crop would be (nearly) the whole pair."""
    shape, n_frames = pair.destination.shape[1:], pair.destination.shape[0]
    block = central_block(shape)
    kept = int(np.prod([b.stop - b.start for b in block]))
    if kept * min(n_frames, CROP_FRAMES) * 2 > int(np.prod(shape)) * n_frames:
        return None
    frames = slice(None, None, int(np.ceil(n_frames / CROP_FRAMES)))
    return Evaluator(pair, frames, block, model, tick)


def _param_bounds(model: GaussianModel, lower: np.ndarray, upper: np.ndarray):
    """Bounds of the free vector: log sigma within the sigma bounds, the rest free.

    A rotated kernel's log-Cholesky entries are not sigmas: its bounds are checked afterwards.
    """
    low, high = np.full(model.n_params, -np.inf), np.full(model.n_params, np.inf)
    if not model.full_covariance:  # one bound per free sigma (`fit._bounds` gives them so)
        low[:len(lower)], high[:len(upper)] = np.log(np.maximum(lower, 1e-3)), np.log(upper)
    return low, high


def _robust(everything: Evaluator, crop: Evaluator | None, params, fitted: Fitted,
            options: FitOptions, loss, bounds: tuple[np.ndarray, np.ndarray]):
    """L1/Huber from the L2 optimum: Nelder-Mead on the crop, then Newton steps on every pixel.

    Without a crop (a small image), Nelder-Mead on every pixel.
    """
    n = len(params)
    if crop is None:
        params, fitted = robust_fit(everything, params, options, loss, fitted, 20 * STEP, 60 * (n + 1))
    else:  # the crop's gain and offset start the polish
        params, fitted = robust_fit(crop, params, options, loss, fitted, 20 * STEP, 60 * (n + 1))
        fitted = robust_fitted(everything, params, options, loss, fitted)
    jac = finite_differences(lambda p: residual_at(everything, p, fitted.gain, fitted.offset), params,
                             fitted.residual)
    if crop is not None:
        params, fitted = _newton_polish(everything, params, fitted, jac, options, loss, bounds)
    return params, fitted, jac


def _newton_polish(evaluator: Evaluator, params, fitted: Fitted, jac: np.ndarray, options: FitOptions,
                   loss, bounds: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, Fitted]:
    """Up to `POLISH_STEPS` Newton steps on the robust loss, with the one Jacobian ``jac``.

    The Hessian is ``mean rho'' * J^T J`` (the scale `_param_covariance` also uses); a step
    is kept only where the loss falls. From the crop's optimum one step usually suffices: the
    crop and every pixel differ by the crop's statistical error.
    """
    value = loss.value(fitted.residual)
    for _ in range(POLISH_STEPS):
        jtj, gradient = normal_equations(jac, loss.derivative(fitted.residual))
        step = -np.linalg.lstsq(loss.mean_curvature(fitted.residual) * jtj, gradient, rcond=None)[0]
        moved = np.clip(params + step, *bounds)
        trial = robust_fitted(evaluator, moved, options, loss, fitted)
        trial_value = loss.value(trial.residual)
        if not trial_value < value:
            break
        params, fitted, value = moved, trial, trial_value
    return params, fitted


def _param_covariance(jac: np.ndarray, residual: np.ndarray, loss, n_kernel: int,
                      n_extra: int) -> np.ndarray:
    """Gauss-Newton (L2) or sandwich (L1/Huber) covariance of the kernel's ``n_kernel`` parameters.

    ``jac`` may have more columns (gain and offset fitted jointly): their block is marginalised.
    ``n_extra``: parameters projected out of ``jac`` (a gain and offset solved in closed form).
    """
    inverse = np.linalg.pinv(normal_equations(jac, residual)[0])[:n_kernel, :n_kernel]
    n = residual.size
    if loss.least_squares:
        return inverse * float(residual @ residual) / max(n - jac.shape[1] - n_extra, 1)
    psi = loss.derivative(residual)
    return inverse * float(np.mean(psi * psi)) / loss.mean_curvature(residual) ** 2


def _result(pair: GridPair, options: FitOptions, model: GaussianModel, params, fitted: Fitted,
            jac, loss, target: np.ndarray, start_fit: BlurFit, bounds, level: NoiseLevel,
            checks: list[Finding]) -> BlurFit:
    kernel = model.kernel(params)
    d, n = pair.ndim, target.size
    projected = 2 if options.gain_offset and jac.shape[1] == model.n_params else 0
    errors = model.standard_errors(kernel, _param_covariance(jac, fitted.residual, loss,
                                                             model.n_params, projected))
    sigma = np.sqrt(np.diag(kernel.covariance))
    principal = kernel.principal[0]
    lower, upper = (np.resize(b, d) for b in bounds)
    at_low = (principal.min() <= lower.max() * (1 + 1e-6)) and lower.max() > 0
    at_high = principal.max() >= upper.min() * (1 - 1e-6)
    identifiable = principal.min() >= IDENTIFIABLE_FROM
    findings = _carried(start_fit.findings, pair) + checks
    if not identifiable:
        findings.append(Finding("not_identifiable", {}, {"sigma": float(principal.min())},
                                f"sigma below {IDENTIFIABLE_FROM} px is not identifiable: the sampled "
                                "kernel is nearly the identity there, so any value this small fits "
                                "about as well"))
    if at_low or at_high:
        values = {"sigma": tuple(float(s) for s in principal),
                  "sigma_bounds": tuple((float(lo), float(hi)) for lo, hi in zip(lower, upper))}
        findings.append(Finding("at_bound", {}, values,
                                "the optimum lies on a sigma bound; the best blur may lie beyond it"))
    findings += noise_findings(level.correction, f"an {options.loss.upper()} fit")
    if pair.n_nonfinite:
        findings.append(Finding("nonfinite_excluded", {}, {"n_nonfinite": pair.n_nonfinite},
                                f"{pair.n_nonfinite} pixel(s) with NaN/inf were excluded from the loss"))
    rss = float(fitted.residual @ fitted.residual)
    sst = float(np.sum((target - target.mean()) ** 2))
    source_grid, destination_grid = pair.grids
    names = pair.roles
    grids = {names.source: source_grid, names.destination: destination_grid}
    shapes = {names.source: tuple(pair.source.shape[1:]), names.destination: pair.destination_shape}
    return BlurFit(
        sigma=tuple(float(s) if s >= IDENTITY_BELOW else 0.0 for s in sigma),
        sigma_stderr=tuple(float(v) for v in np.diag(errors["covariance"]) / (2 * sigma)),
        gain=fitted.gain, offset=fitted.offset, loss=float(loss.value(fitted.residual) / n),
        loss_name=options.loss, per_axis=options.per_axis, gain_offset=options.gain_offset,
        reverse=options.reverse, spatial_axes=pair.spatial_axes,
        sigma_bounds=tuple((float(lo), float(hi)) for lo, hi in zip(lower, upper)),
        n_pixels=n, n_excluded=pair.n_destination - n, n_nonfinite=pair.n_nonfinite,
        at_bound=bool(at_low or at_high), identifiable=bool(identifiable),
        target_sharper=start_fit.target_sharper,
        huber_delta=float(loss.delta) if loss.has_threshold else None, truncate=float(options.truncate),
        findings=tuple(findings), r2=1.0 - rss / sst if sst else float("nan"),
        covariance=np.array(kernel.covariance), shift=tuple(float(s) for s in kernel.shift),
        covariance_stderr=np.array(errors["covariance"]),
        shift_stderr=tuple(float(s) for s in errors["shift"]),
        full_covariance=options.full_covariance, shift_fitted=options.shift,
        reference_noise=level.sd, reference_noise_corrected=level.corrected,
        grids={"reference": grids["reference"], "target": grids["target"]},
        grid_shapes={"reference": shapes["reference"], "target": shapes["target"]},
    )
