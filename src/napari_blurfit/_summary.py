"""The numbers that describe a fitted kernel, and the plain-text summary of a fit.

Principal sigmas, their directions and the 2D angle come from `GaussianKernel` (one
implementation for `BlurFit`, the CLI, the widget's text and plots); `summary_lines` is the one
plain-text summary (`BlurFit.summary` in the core's words, the ``blurfit`` command in flags).
"""

from __future__ import annotations

import math

import numpy as np

from ._finding import API_WORDS, Vocabulary
from ._gaussian import GaussianKernel
from ._stages import IDENTIFIABLE_FROM


def principal(covariance) -> tuple[np.ndarray, np.ndarray]:
    """Principal sigmas, largest first, and their unit directions (columns, array-axis order).

    The `GaussianKernel`'s for a positive definite covariance. A diagonal one with a zero (a
    sigma reported as 0) has its axis sigmas, sorted; anything else that is not positive
    definite (a failed fit's NaN) gives NaN.
    """
    cov = np.asarray(covariance, dtype=np.float64)
    d = cov.shape[-1]
    try:
        return GaussianKernel(cov, None).principal
    except ValueError:  # not positive definite
        pass
    variance = np.diag(cov)
    if not (np.all(np.isfinite(cov)) and np.all(variance >= 0) and np.all(cov == np.diag(variance))):
        return np.full(d, np.nan), np.full((d, d), np.nan)
    order = np.argsort(variance)[::-1]  # as `GaussianKernel.principal` orders equal ones
    return np.sqrt(variance[order]), np.eye(d)[:, order]


def principal_sigmas_of(covariance) -> np.ndarray:
    """`principal` sigmas of a stack of covariances ``(..., d, d)``, shape ``(..., d)``."""
    cov = np.asarray(covariance, dtype=np.float64)
    flat = cov.reshape(-1, *cov.shape[-2:])
    return np.array([principal(c)[0] for c in flat]).reshape(cov.shape[:-1])


def angle_of(covariance) -> float | None:
    """2D: the major axis' angle from +x (columns) towards +y (rows), degrees in (-90, 90].

    None for 3D; NaN where `principal` is NaN.
    """
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.shape != (2, 2):
        return None
    try:
        return float(np.degrees(GaussianKernel(cov, None).angle))
    except ValueError:  # not positive definite: along an axis (or NaN)
        major = principal(cov)[1][:, 0]
        return float("nan") if np.isnan(major).any() else (90.0 if major[0] else 0.0)


def principal_stderr(fit) -> tuple[float, ...]:
    """First-order standard errors of ``fit.principal_sigmas`` from ``fit.covariance_stderr``.

    ``d lambda_i = v_i^T dC v_i`` for each eigenpair, with the covariance entries taken as
    independent (their correlations are not reported), and ``d sigma = d lambda / (2 sigma)``.
    """
    se = np.asarray(fit.covariance_stderr, dtype=float)
    d = se.shape[0]
    twice_off_diagonal = np.triu(np.full((d, d), 4.0), 1) + np.eye(d)  # C_jk = C_kj: one entry
    out = []
    for v, sigma in zip(fit.principal_axes.T, fit.principal_sigmas):
        var = float(np.sum(np.outer(v, v) ** 2 * twice_off_diagonal * se**2))
        out.append(np.sqrt(var) / (2 * sigma) if sigma > 0 else float("nan"))
    return tuple(out)


def angle_stderr(fit) -> float:
    """First-order standard error (degrees) of the 2D ``fit.angle``; NaN for a round kernel.

    ``angle = atan2(2 C_xy, C_xx - C_yy) / 2``, entries taken as independent.
    """
    (a, b), (_, c) = np.asarray(fit.covariance, dtype=float)  # a = C_yy, b = C_xy, c = C_xx
    (sa, sb), (_, sc) = np.asarray(fit.covariance_stderr, dtype=float)
    denom = (c - a) ** 2 + 4 * b**2
    if denom <= 0:
        return float("nan")
    var = ((c - a) ** 2 * sb**2 + b**2 * (sa**2 + sc**2)) / denom**2
    return float(np.degrees(np.sqrt(var)))


def stderr_values(fit) -> list[float | None]:
    """Standard errors worth printing: None where sigma is 0, not identifiable, or stderr absurd.

    The Gauss-Newton error of an unidentifiable sigma (below 0.3 px) is meaningless (it can be
    thousands of px); one larger than sigma itself says only that sigma is unknown.
    """
    out = []
    for s, se in zip(fit.sigma, fit.sigma_stderr):
        ok = math.isfinite(s) and math.isfinite(se) and s >= IDENTIFIABLE_FROM and se <= s
        out.append(float(se) if ok else None)
    return out


def axis_names(d: int) -> list[str]:
    """``z, y, x`` for the last ``d`` (up to 3) axes."""
    return list("zyx"[-d:]) if d <= 3 else [f"axis{i}" for i in range(d)]


def sigma_parts(fit) -> list[tuple[str, str]]:
    """(label, value) per printed sigma: one for a round fit, one per named axis otherwise."""
    names = axis_names(len(fit.sigma))
    errors = ["n/a" if se is None else f"{se:.2g}" for se in stderr_values(fit)]
    if not fit.per_axis and len(set(fit.sigma)) == 1:
        return [("sigma", f"{fit.sigma[0]:.4g} px +/- {errors[0]} (all axes: {', '.join(names)})")]
    return [(f"sigma_{n}", f"{s:.4g} px +/- {e}") for n, s, e in zip(names, fit.sigma, errors)]


def _number(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else "n/a"


def _kernel_lines(fit) -> list[str]:
    """Principal sigmas, angle (2D) and shift, for fits that have them."""
    lines = []
    if fit.full_covariance:
        line = f"principal    = {', '.join(f'{s:.4g}' for s in fit.principal_sigmas)} px"
        if fit.basicsr is not None:
            sx, sy, theta = fit.basicsr
            line += (f"; major axis at {fit.angle:.1f} deg from +x towards +y "
                     f"(BasicSR sigma_x, sigma_y, theta = {sx:.4g}, {sy:.4g}, {theta:.4g} rad)")
        lines.append(line)
    if fit.shift_fitted:
        names = axis_names(len(fit.shift))
        parts = [f"{n} {s:+.3f}" + ("" if not math.isfinite(e) else f" +/- {e:.2g}")
                 for n, s, e in zip(names, fit.shift, fit.shift_stderr)]
        lines.append(f"shift        = {', '.join(parts)} px (target = reference moved by this)")
    return lines


def _noise_text(fit) -> str:
    """The reference's noise and what the fit did about it, for the summary."""
    noise = getattr(fit, "reference_noise", 0.0)
    if not noise:
        return "0 (a noise-free reference)"
    return f"{noise:.4g} ({'corrected for' if fit.reference_noise_corrected else 'too small to matter'})"


def summary_lines(fit, words: Vocabulary = API_WORDS) -> list[str]:
    """Readable lines for one `BlurFit`, its options and findings named in ``words``."""
    lines = [f"{label:<12} = {value}" for label, value in sigma_parts(fit)]
    fixed = "" if fit.gain_offset else " (fixed)"
    excluded = f" ({fit.n_excluded} excluded)" if fit.n_excluded else ""
    lines += _kernel_lines(fit)
    lines += [f"gain, offset = {fit.gain:.6g}, {fit.offset:.6g}{fixed}",
              f"loss ({fit.loss_name}) = {fit.loss:.6g} over {fit.n_pixels} pixels{excluded}"]
    lines.append(f"r2           = {_number(fit.r2)} (r2_linear, a free linear filter: "
                 f"{_number(fit.r2_linear)})")
    lines.append(f"ref. noise   = {_noise_text(fit)}")
    lines.append("direction    = " + (f"reference ~ G * target ({words.option('reverse')})"
                                      if fit.reverse else "target ~ G * reference"))
    if fit.grids is not None:
        lines += _grid_lines(fit)
    return lines + [f"note: {words.finding(f)}" for f in fit.findings]


def _grid_lines(fit) -> list[str]:
    """The grids of a fit across grids, and sigma in world units and in each image's pixels."""
    def sizes(values):
        return " x ".join(f"{v:.6g}" for v in values)

    lines = []
    for name in ("reference", "target"):
        grid = fit.grids[name]
        sampled = f", {grid.sampling} sampling" if name == ("reference" if fit.reverse else "target") else ""
        label = "ref. grid" if name == "reference" else "target grid"
        lines.append(f"{label:<12} = pixel {sizes(grid.scale)}, origin {sizes(grid.translate)}"
                     f"{sampled}")
    world = fit.in_world_units()["sigma"]
    on = {name: sizes(fit.sigma_on(fit.grids[name])) for name in ("reference", "target")}
    lines.append(f"sigma world  = {sizes(world)} (world units) = {on['reference']} reference px = "
                 f"{on['target']} target px")
    return lines

