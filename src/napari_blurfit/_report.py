"""Plain-words text for the dock widget: results, failures, the fitted slice (no Qt, no napari)."""

from __future__ import annotations

import numpy as np

from ._plots import unit_symbol


def failure_text(error: BaseException) -> str:
    """What went wrong, without Python class names."""
    if isinstance(error, MemoryError):
        return "not enough memory for these images; try 'current slice' or a smaller region"
    text = str(error).strip()
    return text or "an unexpected error (details in the terminal)"


def _sigma_line(fit, result) -> str:
    """``sigma = 2.5 px (0.268 µm) +/- 0.01`` for shared sigma; one item per axis otherwise."""
    axes = range(len(fit.sigma)) if fit.per_axis else range(1)
    parts = []
    for i in axes:
        s, e = fit.sigma[i], fit.sigma_stderr[i]
        unit = unit_symbol(result.units[i]) if i < len(result.units) else ""
        size = result.pixel_size[i] if i < len(result.pixel_size) else 1.0
        world = f" = {s * size:.3g} {unit}" if unit else ""
        name = f"axis {i}: " if fit.per_axis else ""
        parts.append(f"{name}{s:.3g} px{world} (± {e:.2g})")
    return ("Blur sigma per axis: " if fit.per_axis else "Blur sigma: ") + "; ".join(parts)


def _explained(fit) -> str:
    r2, r2_free = getattr(fit, "r2", None), getattr(fit, "r2_linear", None)
    if r2 is None or not np.isfinite(r2):
        return ""
    text = f"A Gaussian explains {100 * r2:.1f}% of the target's variance"
    if r2_free is not None and np.isfinite(r2_free):
        text += f"; a free kernel would explain {100 * r2_free:.1f}%"
    return text + "."


def _context(result) -> list[str]:
    lines = []
    if result.plane:
        where = ", ".join(f"axis {i} = {p}" for i, p in enumerate(result.plane))
        lines.append(f"Fitted the slice at {where} (the one shown).")
    if result.mask_pixels is not None:
        lines.append(f"The mask selected {result.mask_pixels:,} pixels.")
    if result.hint:
        lines.append(f"Note: {result.hint}")
    return lines


def describe(result) -> str:
    """The result panel's text for a `napari_blurfit.layers.LayerFit`."""
    if result.frames is not None:
        sig = np.array([f.sigma for f in result.frames], dtype=float)
        failed = int(np.isnan(sig[:, 0]).sum())
        lines = [f"{len(result.frames)} frames: sigma {np.nanmin(sig):.3g} to {np.nanmax(sig):.3g} px "
                 f"(median {np.nanmedian(sig):.3g})."]
        if failed:
            lines.append(f"{failed} frame(s) could not be fitted (blank or all NaN).")
        return "\n".join(lines + _context(result))
    if result.blur_map is not None:
        s = result.blur_map.sigma
        bad = int(np.isnan(s[..., 0]).sum())
        lines = [f"Blur map: {' x '.join(str(n) for n in s.shape[:-1])} tiles, sigma "
                 f"{np.nanmin(s):.3g} to {np.nanmax(s):.3g} px."]
        if bad:
            lines.append(f"{bad} tile(s) had too little detail to measure (shown empty).")
        return "\n".join(lines + _context(result))
    fit = result.fit
    lines = [_sigma_line(fit, result)]
    if fit.gain_offset:
        lines.append(f"Gain {fit.gain:.4g} and offset {fit.offset:.4g} (fitted).")
    lines.append(f"Mean {fit.loss_name} loss {fit.loss:.4g} over {fit.n_pixels:,} pixels.")
    explained = _explained(fit)
    if explained:
        lines.append(explained)
    if fit.reverse:
        lines.append("Direction: the reference is the blurred one (reverse).")
    if fit.target_sharper:
        lines.append("! The target looks sharper than the reference: tick 'reverse'.")
    if not fit.identifiable:
        lines.append("! A sigma below 0.3 px cannot be measured reliably.")
    if fit.at_bound:
        lines.append("! The fit sits on a sigma bound: widen the bounds.")
    lines += _context(result)
    lines += [f"Note: {n}" for n in fit.notes]
    return "\n".join(lines)
