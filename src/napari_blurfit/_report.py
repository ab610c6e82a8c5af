"""Plain-words text for the dock widget: results, failures, the fitted slice (no Qt, no napari).

A number and its error are joined by no-break spaces (`NBSP`), so a narrow dock wraps the text
between items, never between a value and its "(± error)": ``2.51 px = 0.268 µm (± 0.0087)`` is
one unbreakable run; a list such as ``2.51, 1.22 px = 0.502, 0.243 µm (± 0.0094, 0.018)`` may
break only before "=" and after the comma of the values in world units.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._finding import Vocabulary
from ._plots import unit_symbol
from ._spread import joint_spread
from ._summary import angle_of, angle_stderr, axis_names, principal_sigmas_of, principal_stderr

NBSP = "\u00a0"  # a space that never breaks a line
#: findings that change what the numbers mean: shown first, marked "!", not as a closing note
PROMINENT = ("joint_spread", "channels")

#: `napari_blurfit.fit_blur`'s options by the dock's labels, and its findings' advice in them
WORDS = Vocabulary(
    names={"gain_offset": '"fit gain and offset"', "shift": '"fit shift"',
           "per_axis": 'kernel "per axis"', "full_covariance": 'kernel "rotated"',
           "reverse": '"reverse"', "sigma_bounds": '"sigma min/max"',
           "exclude_border": '"skip border"', "truncate": '"kernel reach"'},
    advice={("gain_offset", True): 'tick "fit gain and offset"',
            ("shift", True): 'tick "fit shift"',
            ("per_axis", True): 'choose kernel "per axis"',
            ("full_covariance", True): 'choose kernel "rotated"',
            ("reverse", True): 'tick "reverse"',
            ("reverse", False): 'untick "reverse"',
            ("sigma_bounds", None): 'widen "sigma min/max"',
            ("spatial_axes", None): 'choose mode "per frame" or "frames jointly", or split the '
                                    'channels (right-click the layer > Split Stack)'},
)


def failure_text(error: BaseException) -> str:
    """What went wrong, without Python class names, in the widget's words."""
    if isinstance(error, MemoryError):
        return "not enough memory for these images; try 'current slice' or a smaller region"
    text = WORDS.text(str(error).strip())
    return text or "an unexpected error (details in the terminal)"


def _world_unit(result) -> str:
    """The unit symbol shared by every spatial axis, or ``""`` (then pixels only)."""
    units = set(result.units)
    return unit_symbol(units.pop()) if len(units) == 1 and "" not in units else ""


def _numbers(values, digits: str = ".3g", comma: str = ", ") -> str:
    return comma.join(f"{v:{digits}}" for v in values)


def _errors(values) -> str:
    """`` (± 0.01, 0.02)`` for the finite standard errors; ``""`` when none is finite.

    Unbreakable, and joined to the number before it.
    """
    values = [float(v) for v in values]
    if not any(np.isfinite(values)):
        return ""
    return f"{NBSP}(±{NBSP}" + f",{NBSP}".join(f"{v:.2g}" if np.isfinite(v) else "?" for v in values) + ")"


def _amount(px, world, unit: str, pixels: str = "px") -> str:
    """``0.4, -0.6 px = 0.08, -0.12 µm`` (the world part only with a unit).

    A line may break before "=" and after the world part's comma, nowhere else. ``pixels`` names
    the pixels (``"px (reference)"`` across grids).
    """
    text = f"{_numbers(px, comma=f',{NBSP}')}{NBSP}{pixels.replace(' ', NBSP)}"
    return text + (f" ={NBSP}{_numbers(world)}{NBSP}{unit}" if unit else "")


def _sigma_line(fit, result) -> str:
    """``Blur sigma: 2.5 px = 0.268 µm (± 0.01)``; per axis one unbreakable item per axis (z, y, x)."""
    names = axis_names(len(fit.sigma))
    sizes = np.asarray(result.pixel_size[: len(fit.sigma)], dtype=float)
    unit = _world_unit(result)
    if not fit.per_axis and unit and len(sizes) == len(fit.sigma) and np.ptp(sizes) > 1e-9 * sizes.max():
        # a round sigma in px is not round in world units on anisotropic voxels: one value per axis
        world = ",".join(f"{NBSP}{n}{NBSP}{fit.sigma[0] * z:.3g}" for n, z in zip(names, sizes))
        return (f"Blur sigma: {fit.sigma[0]:.3g}{NBSP}px (round in pixels){NBSP}={world}{NBSP}{unit}"
                f"{NBSP}(±{NBSP}{fit.sigma_stderr[0]:.2g}{NBSP}px)")
    axes = range(len(fit.sigma)) if fit.per_axis else range(1)
    parts = []
    for i in axes:
        s, e = fit.sigma[i], fit.sigma_stderr[i]
        unit = unit_symbol(result.units[i]) if i < len(result.units) else ""
        size = result.pixel_size[i] if i < len(result.pixel_size) else 1.0
        world = f"{NBSP}={NBSP}{s * size:.3g}{NBSP}{unit}" if unit else ""
        name = f"{names[i]}:{NBSP}" if fit.per_axis else ""
        parts.append(f"{name}{s:.3g}{NBSP}px{world}{NBSP}(±{NBSP}{e:.2g})")
    return ("Blur sigma per axis: " if fit.per_axis else "Blur sigma: ") + "; ".join(parts)


def _kernel_px(result) -> str:
    """The kernel's pixels: ``"px"``, or across grids whose they are (``"px (reference)"``)."""
    return f"px ({result.kernel_pixels})" if result.grids else "px"


def _world_name(result) -> str:
    """The world unit's symbol; across grids ``"(world)"`` when the layers have none."""
    return _world_unit(result) or ("(world)" if result.grids else "")


def _principal_lines(fit, result, world: dict) -> list[str]:
    """The rotated kernel: principal sigmas and (2D) the major axis' angle."""
    line = _grid_principal_line(fit, result, world) if result.grids else ""
    lines = [line or "Principal sigmas: " + _amount(fit.principal_sigmas, world["principal_sigmas"],
                                                    _world_name(result), _kernel_px(result))
             + _errors(principal_stderr(fit))]
    if fit.angle is not None:
        error = angle_stderr(fit)
        spread = f"{NBSP}(±{NBSP}{error:.2g}°)" if np.isfinite(error) else ""
        lines.append(f"Major axis at {fit.angle:.1f}°{spread} from +x towards +y"
                     + _world_angle(fit, result, world) + ".")
    return lines


def _world_angle(fit, result, world: dict) -> str:
    """The angle in world space when the pixels are not square (``""`` when it is the same)."""
    sizes = result.pixel_size
    if len(sizes) != 2 or np.isclose(sizes[0], sizes[1]):
        return ""
    return f"; {angle_of(world['covariance']):.1f}° in world space (the pixels are not square)"


def _shift_line(fit, result, world: dict) -> str:
    """The shift per array axis: the target is the reference moved by it."""
    return ("Shift of the target: "
            + _amount(fit.shift, world["shift"], _world_name(result), _kernel_px(result))
            + _errors(fit.shift_stderr) + ".")


def _across(world, pixels: dict, errors, result, each: bool) -> str:
    """``0.15 µm = 2.31 px (reference) = 1.39 px (target) (± 0.0012 µm)``.

    ``pixels`` maps a role to the values in its pixels; ``each``: one value per axis, else the
    first (they agree). Breaks only before "=".
    """
    unit = _world_unit(result)

    def listed(values, digits=".3g"):
        return f",{NBSP}".join(f"{float(v):{digits}}" for v in (values if each else values[:1]))

    parts = [f"{listed(world)}{NBSP}{unit or '(world)'}"]
    parts += [f"{listed(values)}{NBSP}px{NBSP}({role})" for role, values in pixels.items()]
    error = ""
    if np.isfinite(errors).all():
        error = f"{NBSP}(±{NBSP}{listed(errors, '.2g')}{NBSP + unit if unit else ''})"
    return f" ={NBSP}".join(parts) + error


def _differ(*vectors) -> bool:
    """Whether any of ``vectors`` reads differently along its axes (3 significant digits)."""
    return any(len({f"{float(v):.3g}" for v in vector}) > 1 for vector in vectors)


def _grid_sigma_line(fit, result) -> str:
    """Across grids: ``Blur sigma: 0.15 µm = 2.31 px (reference) = 1.39 px (target) (± 0.0012 µm)``.

    The world value, then the same sigma in each layer's pixels; one number each when the axes
    agree, else one per axis, named after "Blur sigma".
    """
    world = fit.in_world_units()["sigma"]
    pixels = {role: fit.sigma_on(result.grids[role]) for role in ("reference", "target")}
    errors = np.asarray(fit.sigma_stderr, float) * np.asarray(result.pixel_size, float)
    each = fit.per_axis or _differ(world, *pixels.values())
    names = f" ({', '.join(axis_names(len(fit.sigma)))})" if each else ""
    return f"Blur sigma{names}: " + _across(world, pixels, errors, result, each)


def _grid_principal_line(fit, result, world: dict) -> str:
    """Across grids of square pixels: principal sigmas in world units and each layer's pixels.

    ``""`` when a grid's pixels are not square (a principal sigma is not a length in its pixels).
    """
    grids = result.grids
    if any(len(set(grids[role].scale)) > 1 for role in grids):
        return ""
    sigmas = np.asarray(world["principal_sigmas"], float)
    pixels = {role: sigmas / grids[role].scale[0] for role in ("reference", "target")}
    errors = np.asarray(principal_stderr(fit), float) * result.pixel_size[0]
    return "Principal sigmas: " + _across(sigmas, pixels, errors, result, each=True)


def grid_sizes(grids, units) -> str:
    """``reference 0.5 µm/px, target 1 µm/px`` (``0.3 × 0.1 µm/px`` on anisotropic pixels).

    ``both 0.5 µm/px`` when the pixel sizes agree (the grids differ in place or extent);
    without a unit: ``reference 0.5, target 1 world units per px``.
    """
    unit = {unit_symbol(u) for u in units}
    unit = unit.pop() if len(unit) == 1 and "" not in unit else ""
    named = [(role, grids[role]) for role in ("reference", "target")]
    if grids["reference"].scale == grids["target"].scale:
        named = [("both", grids["target"])]
    sizes = [f"{name} " + f"{NBSP}×{NBSP}".join(f"{s:.4g}" for s in _uniform(grid.scale))
             + (f"{NBSP}{unit}/px" if unit else "") for name, grid in named]
    return ", ".join(sizes) + ("" if unit else " world units per px")


def _uniform(scale) -> tuple:
    """One pixel size when every axis has it, else one per axis."""
    return tuple(scale[:1]) if len(set(scale)) == 1 else tuple(scale)


def _grids_line(result) -> str:
    """How the two layers' grids were matched; ``""`` when they share one."""
    if not result.grids:
        return ""
    goal = "reference" if result.kernel_pixels == "target" else "target"
    how = "areas" if result.grids[goal].sampling == "area" else "points at their centres"
    # a single fit names the pixels of each number; frames and tiles give theirs in px only
    whose = f"; px values are the {result.kernel_pixels}'s" if result.fit is None else ""
    return (f"Across grids: {grid_sizes(result.grids, result.units)}; the {goal}'s pixels taken as "
            f"{how}{whose}.")


def _kernel_lines(fit, result) -> list[str]:
    """Sigma (or the rotated kernel's principal sigmas and angle) and the shift, px and world."""
    if result.grids:
        world = fit.in_world_units()  # in the scale of the grid the kernel is sampled on
    elif len(result.pixel_size) == len(fit.sigma):
        world = fit.in_world_units(result.pixel_size)
    else:
        world = fit.in_world_units(np.ones(len(fit.sigma)))
    if fit.full_covariance:
        lines = _principal_lines(fit, result, world)
    else:
        lines = [_grid_sigma_line(fit, result) if result.grids else _sigma_line(fit, result)]
    if fit.shift_fitted:
        lines.append(_shift_line(fit, result, world))
    return lines


def _explained(fit) -> str:
    r2, r2_free = getattr(fit, "r2", None), getattr(fit, "r2_linear", None)
    if r2 is None or not np.isfinite(r2):
        return ""
    text = f"A Gaussian explains {100 * r2:.1f}% of the target's variance"
    if r2_free is not None and np.isfinite(r2_free):
        text += f"; a free kernel would explain {100 * r2_free:.1f}%"
    return text + "."


def _context(result, findings=()) -> list[str]:
    """The grids, the slice, the mask, and the mode's hint (unless a "channels" finding gives it)."""
    lines = [_grids_line(result)] if result.grids else []
    if result.plane:  # indices along the leading, non-spatial axes
        where = ", ".join(f"axis {i} = {p}" for i, p in enumerate(result.plane))
        lines.append(f"Fitted the slice at {where} (the one shown).")
    if result.mask_pixels is not None:
        lines.append(f"The mask selected {result.mask_pixels:,} pixels.")
    if result.hint and not any(f.code == "channels" for f in findings):
        lines.append(f"Note: {result.hint}")
    return lines


def _finding_lines(findings) -> tuple[list[str], list[str]]:
    """``(prominent, notes)``: the findings in the widget's words.

    Those that change what the numbers mean ("!") are shown right after them; the rest close the
    text as notes.
    """
    first = [f"! {WORDS.finding(f)}" for f in findings if f.code in PROMINENT]
    notes = [f"Note: {WORDS.finding(f)}" for f in findings if f.code not in PROMINENT]
    return first, notes


def _range(values, what: str, unit: str = "", size: float = 1.0) -> str:
    """``what a to b px (= c to d µm)``; ``""`` when no value is finite."""
    values = np.asarray(values, dtype=float)
    if not np.isfinite(values).any():
        return ""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    world = f" = {lo * size:.3g} to {hi * size:.3g} {unit}" if unit else ""
    return f"{what} {lo:.3g} to {hi:.3g} px{world}"


def _field_lines(shift, covariance, result, where: str) -> list[str]:
    """Ranges of the principal sigmas (when rotated) and of the shift per axis, per frame or tile."""
    unit = _world_unit(result)
    sizes = tuple(result.pixel_size) if unit else ()
    lines = []
    cov = np.asarray(covariance, dtype=float)
    d = cov.shape[-1]
    if np.any(np.nan_to_num(cov * (1 - np.eye(d))) != 0):
        sig = principal_sigmas_of(cov)
        square = len(set(sizes)) == 1  # principal directions mix the axes: one pixel size only
        size, shown = (sizes[0], unit) if square else (1.0, "")
        lines.append(f"Principal sigmas per {where}: " + _range(sig[..., 0], "major", shown, size)
                     + "; " + _range(sig[..., -1], "minor", shown, size) + ".")
    shift = np.asarray(shift, dtype=float)
    if np.any(np.nan_to_num(shift) != 0):
        names = axis_names(d)
        parts = [_range(shift[..., i], names[i], unit if len(sizes) == d else "",
                        sizes[i] if len(sizes) == d else 1.0) for i in range(d)]
        lines.append(f"Shift per {where}: " + "; ".join(parts) + ".")
    return lines


def frames_spread(frames) -> str:
    """``"! Frames disagree: ..."`` when one sigma does not describe the frames, else ``""``.

    The frames' own sigmas against their median (`napari_blurfit._spread.joint_spread`).
    """
    sig = np.array([f.sigma for f in frames], dtype=float)
    err = np.array([f.sigma_stderr for f in frames], dtype=float)
    if np.isfinite(sig).all(axis=1).sum() < 2:
        return ""
    median = np.nanmedian(sig, axis=0)
    with warnings.catch_warnings():  # frames without a finite error bar (the median of none)
        warnings.simplefilter("ignore", RuntimeWarning)
        found = joint_spread(sig, err, median, np.zeros_like(median),
                             [f"frame {i}" for i in range(len(frames))], items="frames").finding
    if found is None:
        return ""
    v = found.values
    axis, (lo, hi) = v["axis"], v["sigma_range"]
    spread = v["spread"][axis]
    per_axis = any(f.per_axis or f.full_covariance for f in frames)
    name = f" along {axis_names(sig.shape[1])[axis]}" if per_axis else ""
    share = f"{100 * spread / median[axis]:.0f}% of " if median[axis] > 0 else ""
    text = (f"! Frames disagree{name}: their sigmas run from {lo:.3g} to {hi:.3g} px (spread "
            f"{spread:.2g}{NBSP}px, {share}the median {median[axis]:.3g}{NBSP}px), so one sigma "
            "would not describe them")
    if v["outliers"]:
        text += f"; furthest from the rest: {', '.join(v['outliers'])}"
    return text + "."


def _frames_text(result) -> str:
    frames = result.frames
    sig = np.array([f.sigma for f in frames], dtype=float)
    failed = int(np.isnan(sig[:, 0]).sum())
    if failed == len(frames):
        lines = [f"{len(frames)} frames: none could be fitted (blank or all NaN)."]
    else:
        lines = [f"{len(frames)} frames: sigma {np.nanmin(sig):.3g} to {np.nanmax(sig):.3g} px "
                 f"(median {np.nanmedian(sig):.3g})."]
    spread = frames_spread(frames)
    if spread:
        lines.append(spread)
    lines += _field_lines([f.shift for f in frames], [f.covariance for f in frames], result, "frame")
    if failed and failed < len(frames):
        lines.append(f"{failed} frame(s) could not be fitted (blank or all NaN).")
    return "\n".join(lines + _context(result))


def left_out(finding) -> str:
    """The map's ``unmeasured_tiles`` finding in the dock's words (most common reason first)."""
    counts = finding.values["reasons"]
    why = ", ".join(f"{n} {r}" for r, n in sorted(counts.items(), key=lambda item: -item[1]))
    return f"{sum(counts.values())} of {finding.values['tiles']} tiles left out (shown empty): {why}."


def _blur_map_text(result) -> str:
    bm = result.blur_map
    s = bm.sigma
    grid = " x ".join(str(n) for n in s.shape[:-1])
    if np.isfinite(s).any():
        lines = [f"Blur map: {grid} tiles, sigma {np.nanmin(s):.3g} to {np.nanmax(s):.3g} px."]
    else:
        lines = [f"Blur map: {grid} tiles, none could be measured."]
    findings = tuple(f for f in bm.findings if f.code != "unmeasured_tiles")
    prominent, notes = _finding_lines(findings)
    lines += prominent + notes  # what the map as a whole found comes before its details
    if bm.covariance is not None and bm.shift is not None:
        lines += _field_lines(bm.shift, bm.covariance, result, "tile")
    if result.arrow_scale is not None:
        name = result.layers[-1][1]["name"]
        lines.append(f"The arrows of {name!r} show each tile's shift {result.arrow_scale:g} times "
                     "enlarged.")
    lines += [left_out(f) for f in bm.findings if f.code == "unmeasured_tiles"]
    return "\n".join(lines + _context(result, findings))


def describe(result) -> str:
    """The result panel's text for a `napari_blurfit.layers.LayerFit`."""
    if result.frames is not None:
        return _frames_text(result)
    if result.blur_map is not None:
        return _blur_map_text(result)
    fit = result.fit
    prominent, notes = _finding_lines(fit.findings)
    lines = _kernel_lines(fit, result) + prominent
    if fit.gain_offset:
        lines.append(f"Gain {fit.gain:.4g} and offset {fit.offset:.4g} (fitted).")
    lines.append(f"Mean {fit.loss_name} loss {fit.loss:.4g} over {fit.n_pixels:,} pixels.")
    if fit.reference_noise:
        lines.append(f"Reference noise {fit.reference_noise:.3g} (sd), "
                     f"{'corrected for' if fit.reference_noise_corrected else 'too small to matter'}.")
    explained = _explained(fit)
    if explained:
        lines.append(explained)
    if fit.reverse:
        lines.append("Direction: the reference is the blurred one (reverse).")
    codes = {f.code for f in fit.findings}  # a flag the findings give already is said once, there
    if fit.target_sharper and "target_sharper" not in codes:
        lines.append('! The target looks sharper than the reference: tick "reverse".')
    if not fit.identifiable and not codes & {"not_identifiable", "target_sharper"}:
        lines.append("! A sigma below 0.3 px cannot be measured reliably.")
    if fit.at_bound and "at_bound" not in codes:
        lines.append('! The fit sits on a sigma bound: widen "sigma min/max".')
    return "\n".join(lines + _context(result, fit.findings) + notes)
