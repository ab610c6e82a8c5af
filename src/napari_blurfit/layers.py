"""Fit napari layers: the bridge between layers and the core, without Qt.

Used by the dock widget (inside its worker thread) and from the napari console::

    from napari_blurfit.layers import fit_layers
    fit = fit_layers(viewer, "cell reference", "cell target", gain_offset=True)

Outputs are ``"<target> fit"`` and ``"<target> residual"`` image layers with the target's scale and
translate; re-running updates them in place. Input layers are never modified.

Two layers on different grids (another scale, translate or shape) are fitted through their world
transforms: each layer's scale and translate become a `napari_blurfit.Grid` for the core, and the
outputs lie on the target's grid. Rotated or sheared layers are refused then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from ._result import BlurFit
from ._validate import is_dask
from .fit import fit_blur
from .grids import SAMPLINGS, Grid

MODES = ("whole image/volume", "current slice", "frames jointly", "per frame", "blur map")
FRAME_MODES = ("current slice", "frames jointly", "per frame")  # the last two axes are the spatial ones
RESIDUAL_COLORMAP = "bwr"
SHIFT_ARROW_COLOR = "magenta"  # reads on every viridis shade of the blur map beneath


class KernelShape(Enum):
    """The widget's "kernel" choice: its label is the value, `options` the core keywords."""

    ROUND = "round"
    PER_AXIS = "per axis"
    ROTATED = "rotated"

    @property
    def options(self) -> dict:
        """``per_axis`` and ``full_covariance`` for `napari_blurfit.fit_blur` and friends."""
        return {"per_axis": self is KernelShape.PER_AXIS,
                "full_covariance": self is KernelShape.ROTATED}


@dataclass
class LayerFit:
    """What a layer fit produced: the fit (or per-frame fits / blur map), layers to show, context.

    Attributes
    ----------
    fit : BlurFit or None
        The fit (``"whole image/volume"``, ``"current slice"``, ``"frames jointly"``).
    layers : list
        napari LayerDataTuples to add or update.
    frames : list of BlurFit, optional
        Per-frame fits (``"per frame"``).
    blur_map : BlurMap, optional
        The map (``"blur map"``).
    sigma_world : tuple of float, optional
        ``fit.sigma`` times ``pixel_size`` per spatial axis.
    units : tuple of str
        Unit names of the spatial axes; ``""`` where the layer has none.
    pixel_size : tuple of float
        The scale of the pixels the kernel is sampled on (the reference's; the target's when
        reversed) along the spatial axes. On one grid, the target's scale.
    mode : str
    plane : tuple of int, optional
        Index of the fitted plane along the leading axes (``"current slice"``).
    mask_pixels : int, optional
        Pixels the mask selected (in the fitted data).
    hint : str
        A warning about the mode for this layer, or ``""``.
    arrow_scale : float, optional
        How many times the ``"<target> shift map"`` arrows enlarge each tile's shift.
    grids : dict, optional
        ``{"reference": Grid, "target": Grid}`` when the layers lie on different grids (the
        core was given them); ``None`` on one grid.
    kernel_pixels : str
        Whose pixels the kernel (sigma, shift, bounds) is sampled on: ``"reference"``, or
        ``"target"`` when reversed.
    """

    fit: BlurFit | None
    layers: list = field(default_factory=list)
    frames: list | None = None
    blur_map: object = None
    sigma_world: tuple | None = None
    units: tuple = ()
    pixel_size: tuple = ()
    mode: str = "whole image/volume"
    plane: tuple | None = None
    mask_pixels: int | None = None
    hint: str = ""
    arrow_scale: float | None = None
    grids: dict | None = None
    kernel_pixels: str = "reference"


def image_data(layer, role: str) -> object:
    """The array behind an image layer, checked (level 0 of a multiscale layer)."""
    from napari.layers import Image

    if not isinstance(layer, Image):
        kind = type(layer).__name__ if layer is not None else "nothing"
        raise TypeError(f"{role} must be an image layer; got {kind}")
    if getattr(layer, "rgb", False):
        raise ValueError(f"{role} layer {layer.name!r} is RGB; split its channels or convert it "
                         "to grayscale first")
    return layer.data[0] if layer.multiscale else layer.data


def check_pair(reference, target, mode: str = "whole image/volume") -> None:
    """Raise a clear error when the two layers cannot be fitted against each other in ``mode``.

    Layers of one shape and one world transform are compared pixel by pixel. Otherwise they are
    fitted across grids, which needs each to be only scaled and translated (`pair_grids`).
    """
    a, b = image_data(reference, "reference"), image_data(target, "target")
    if reference is target:
        raise ValueError(f"reference and target are the same layer {reference.name!r}; "
                         "choose two different layers")
    if a.ndim != b.ndim:
        raise ValueError(f"reference {reference.name!r} {tuple(a.shape)} and target "
                         f"{target.name!r} {tuple(b.shape)} differ in shape: they have different "
                         "numbers of axes")
    if on_one_grid(reference, target):
        return
    for layer, role in ((reference, "reference"), (target, "target")):
        _check_axis_aligned(layer, role)
    lead = range(a.ndim - 2) if mode in ("frames jointly", "per frame") else ()
    for axis in lead:  # frames are matched one to one: they must be the same frames
        if a.shape[axis] != b.shape[axis] or not np.allclose(
                data_to_world_matrix(reference)[axis], data_to_world_matrix(target)[axis]):
            raise ValueError(f"reference {reference.name!r} {tuple(a.shape)} and target "
                             f"{target.name!r} {tuple(b.shape)} differ in shape or place along "
                             f"axis {axis}; in {mode!r} mode their frames must be the same")


def on_one_grid(reference, target) -> bool:
    """Whether pixel ``i`` of one layer lies on pixel ``i`` of the other: same shape and transform."""
    a, b = image_data(reference, "reference"), image_data(target, "target")
    return tuple(a.shape) == tuple(b.shape) and np.allclose(
        data_to_world_matrix(reference), data_to_world_matrix(target))


def _check_axis_aligned(layer, role: str) -> None:
    """Refuse a layer whose pixels are rotated, sheared or flipped in the world (no `Grid` for it)."""
    linear = data_to_world_matrix(layer)[:-1, :-1]
    if np.any(np.abs(linear - np.diag(np.diag(linear))) > 1e-9 * np.abs(linear).max()):
        raise ValueError(f"{role} {layer.name!r} is rotated or sheared; layers on different grids "
                         "are fitted through their scale and translate only. Remove its rotation, "
                         "shear or affine, or give both layers the same transform and shape")
    if np.any(np.diag(linear) <= 0):
        raise ValueError(f"{role} {layer.name!r} is flipped (a negative scale); layers on different "
                         "grids need positive scales")


def layer_grid(layer, axes, sampling: str = "area") -> Grid:
    """The `napari_blurfit.Grid` of an axis-aligned layer over its data ``axes``.

    Its scale and translate are those of the layer's whole world transform (an affine that only
    scales and translates counts too).
    """
    matrix = data_to_world_matrix(layer)
    axes = list(axes)
    return Grid(scale=np.diag(matrix)[axes], translate=matrix[axes, -1], sampling=sampling)


def pair_grids(reference, target, mode: str = "whole image/volume", sampling: str = "area") -> dict | None:
    """The layers' grids over the spatial axes of ``mode``: ``{"reference": Grid, "target": Grid}``.

    ``None`` when the fitted arrays lie on one grid: then the fit compares them pixel by pixel, as
    without grids. ``sampling`` goes on both grids: the core reads it on the image the blur is
    measured on (the target; the reference when reversed). Call `check_pair` first.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"target sampling must be one of {SAMPLINGS}; got {sampling!r}")
    if on_one_grid(reference, target):
        return None
    axes = spatial_axes(reference.ndim, mode)
    grids = {"reference": layer_grid(reference, axes, sampling), "target": layer_grid(target, axes, sampling)}
    a, b = image_data(reference, "reference").shape, image_data(target, "target").shape
    if grids["reference"] == grids["target"] and [a[i] for i in axes] == [b[i] for i in axes]:
        return None  # they differ along other axes only (the planes of "current slice")
    return grids


def data_to_world_matrix(layer) -> np.ndarray:
    """Homogeneous ``(n + 1, n + 1)`` matrix from a layer's data coordinates to world coordinates.

    Composed from the public transform properties as napari does:
    ``affine @ (translate + rotate @ shear @ scale)``.
    """
    from napari.utils.transforms import Affine

    physical = Affine(scale=layer.scale, translate=layer.translate, rotate=layer.rotate,
                      shear=layer.shear)
    return np.asarray(layer.affine.affine_matrix) @ np.asarray(physical.affine_matrix)


def mask_to_target_matrix(mask_layer, target) -> np.ndarray:
    """Homogeneous matrix from ``mask_layer``'s data coordinates to ``target``'s pixel coordinates.

    A mask with fewer axes than the target covers its trailing axes (napari aligns layers of
    different dimensionality by their last axes), so the target's transform must not mix its
    leading axes with those.
    """
    k, n = mask_layer.ndim, target.ndim
    if k > n:
        raise ValueError(f"mask layer {mask_layer.name!r} has {k} axes, the target {target.name!r} "
                         f"only {n}")
    world = data_to_world_matrix(target)
    lead = n - k
    linear = world[:n, :n]
    if lead and (np.any(linear[lead:, :lead]) or np.any(linear[:lead, lead:])):
        raise ValueError(f"target {target.name!r} is rotated or sheared across its leading axes; "
                         f"the {k}D mask {mask_layer.name!r} cannot be placed on its pixels")
    trailing = np.eye(k + 1)
    trailing[:k, :k] = linear[lead:, lead:]
    trailing[:k, k] = world[lead:n, n]
    return np.linalg.solve(trailing, data_to_world_matrix(mask_layer))


def _labels_mask(labels, target, shape) -> np.ndarray:
    """Nonzero labels, placed on the target's pixel grid by whole-pixel offsets (no interpolation)."""
    k = labels.ndim
    matrix = mask_to_target_matrix(labels, target)
    shift = matrix[:k, k]
    if not (np.allclose(matrix[:k, :k], np.eye(k), atol=1e-6)
            and np.allclose(shift, np.round(shift), atol=1e-6)):
        raise ValueError(
            f"labels layer {labels.name!r} does not sit on the pixel grid of {target.name!r} "
            f"(scale {_fmt(labels.scale)} vs {_fmt(target.scale)}, translate {_fmt(labels.translate)} "
            f"vs {_fmt(target.translate)}): using it would need interpolation. Give it the target's "
            "scale and a whole-pixel translate, or draw the mask as shapes")
    shift = np.round(shift).astype(int)
    data = labels.data[0] if labels.multiscale else labels.data
    out = np.zeros(shape[-k:], bool)
    src = tuple(slice(max(0, -s), max(0, min(m, t - s))) for s, m, t in zip(shift, data.shape, out.shape))
    dst = tuple(slice(max(0, s), max(0, min(t, m + s))) for s, m, t in zip(shift, data.shape, out.shape))
    out[dst] = np.asarray(data[src]) != 0
    return out


def _ellipse_outline(corners, points: int = 96) -> np.ndarray:
    """Points on the ellipse inscribed in napari's four bounding-box corners (any affine image of them)."""
    centre = corners.mean(axis=0)
    u = (corners[0] + corners[1]) / 2 - centre
    v = (corners[1] + corners[2]) / 2 - centre
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)[:, None]
    return centre + np.cos(t) * u + np.sin(t) * v


def polygon_mask(polygon, shape) -> np.ndarray:
    """Pixels of a 2D grid whose centres lie inside ``polygon`` (``(m, 2)`` row, column; even-odd rule).

    Edges count half-open, so a rectangle from 20 to 200 selects pixels 20..199 on each axis.
    """
    out = np.zeros(shape, bool)
    # napari keeps vertices in float32: snap to 1/1000 px so transformed corners land on whole pixels
    poly = np.round(np.asarray(polygon, dtype=float), 3)
    rows = np.arange(max(0, int(np.ceil(poly[:, 0].min()))),
                     min(shape[0], int(np.ceil(poly[:, 0].max()))), dtype=float)
    if not rows.size:
        return out
    a, b = poly, np.roll(poly, -1, axis=0)
    y = rows[:, None]
    crosses = (a[:, 0] <= y) != (b[:, 0] <= y)
    dy = np.where(b[:, 0] != a[:, 0], b[:, 0] - a[:, 0], 1.0)
    x = np.where(crosses, a[:, 1] + (y - a[:, 0]) / dy * (b[:, 1] - a[:, 1]), np.inf)
    x.sort(axis=1)
    for row, xs in zip(rows.astype(int), x):
        xs = xs[np.isfinite(xs)]
        for x0, x1 in zip(xs[0::2], xs[1::2]):
            c0, c1 = max(0, int(np.ceil(x0))), min(shape[1], int(np.ceil(x1)))
            out[row, c0:c1] = True
    return out


def _shapes_mask(shapes, target, shape) -> np.ndarray:
    """Inside of any closed shape, drawn on the target's pixel grid after both layers' transforms."""
    k = shapes.ndim
    if k < 2:
        raise ValueError(f"shapes layer {shapes.name!r} must be at least 2D")
    matrix = mask_to_target_matrix(shapes, target)
    out = np.zeros(shape[-k:], bool)
    for number, (vertices, kind) in enumerate(zip(shapes.data, shapes.shape_type)):
        if kind in ("line", "path"):
            raise ValueError(f"shape {number} of {shapes.name!r} is a {kind}, which has no inside; "
                             "use rectangles, ellipses or polygons as a mask")
        vertices = np.asarray(vertices, dtype=float)
        if kind == "ellipse":
            vertices = _ellipse_outline(vertices)
        points = vertices @ matrix[:k, :k].T + matrix[:k, k]
        plane = points[:, :-2]
        if k > 2 and np.ptp(plane, axis=0).max() > 0.5:
            raise ValueError(f"shape {number} of {shapes.name!r} does not lie in one plane of "
                             f"{target.name!r}'s pixels")
        index = tuple(int(np.round(c)) for c in plane.mean(axis=0)) if k > 2 else ()
        if all(0 <= i < n for i, n in zip(index, out.shape)):
            out[index] |= polygon_mask(points[:, -2:], out.shape[-2:])
    return out


def mask_data(mask_layer, target) -> np.ndarray | None:
    """Boolean mask on ``target``'s pixel grid from a Labels (nonzero) or Shapes (inside) layer.

    The mask layer's own scale, translate, rotation and affine are honoured: a shape drawn over a
    region of the viewer selects the target's pixels under that region. A mask with fewer axes than
    the target is repeated along the target's leading axes (frames).
    """
    if mask_layer is None:
        return None
    from napari.layers import Labels, Shapes

    shape = tuple(image_data(target, "target").shape)
    if isinstance(mask_layer, Labels):
        mask = _labels_mask(mask_layer, target, shape)
    elif isinstance(mask_layer, Shapes):
        mask = _shapes_mask(mask_layer, target, shape)
    else:
        raise TypeError(f"the mask must be a labels or shapes layer; {mask_layer.name!r} is neither")
    if not mask.any():
        raise ValueError(f"mask {mask_layer.name!r} selects no pixel of {target.name!r} "
                         "(it lies outside the image)")
    return np.broadcast_to(mask, shape)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _units(layer, axes) -> tuple[str, ...]:
    """Unit names of ``axes`` of ``layer``; ``""`` where the layer has none (napari's "pixel")."""
    try:
        names = tuple(str(layer.units[a]) for a in axes)
    except (AttributeError, IndexError):
        return ("",) * len(axes)
    return tuple("" if n in ("pixel", "dimensionless") else n for n in names)


TIME_UNITS = ("second", "millisecond", "microsecond", "minute", "hour", "day")
FRAME_LABELS = ("t", "time", "c", "ch", "channel", "channels", "frame", "frames")


def axis_hint(layer, mode: str) -> str:
    """A plain-words warning when 'whole image/volume' would treat time or channels as space.

    Returns ``""`` when nothing looks wrong.
    """
    if layer is None or mode != "whole image/volume" or layer.ndim != 3:
        return ""
    shape = image_data(layer, "target").shape
    label = str(layer.axis_labels[0]).lower() if hasattr(layer, "axis_labels") else ""
    unit = str(layer.units[0]) if hasattr(layer, "units") else ""
    named = label in FRAME_LABELS or unit in TIME_UNITS
    if not named and not (shape[0] <= 16 and shape[0] * 8 <= min(shape[1:])):
        return ""
    why = (f"its first axis is labelled {label!r}" if label in FRAME_LABELS else
           f"its first axis is in {unit}s" if unit in TIME_UNITS else
           f"its first axis has only {shape[0]} planes")
    return (f"{layer.name!r} looks like a time series or channels ({why}), but 'whole image/volume' "
            "blurs across that axis as if it were depth. For frames or channels choose "
            "'frames jointly' (one sigma) or 'per frame', or split the channels (right-click the "
            "layer > Split Stack).")


def _plane_index(layer, world_point, ndim):
    """Data index of the 2D plane of an nD layer that the viewer shows at ``world_point``."""
    if world_point is None:
        return (0,) * (ndim - 2)
    data = np.asarray(layer.world_to_data(tuple(world_point)[-ndim:]))
    shape = layer.data.shape
    return tuple(int(np.clip(np.round(x), 0, n - 1)) for x, n in zip(data[: ndim - 2], shape))


def run_layer_fit(reference, target, *, mask_layer=None, mode: str = "whole image/volume", world_point=None,
                  tile: int = 128, target_sampling: str = "area", callback=None, **options) -> LayerFit:
    """Fit ``target`` against ``reference`` (napari image layers) and build the output layers.

    Heavy work only; touches no viewer, so it can run in a worker thread.

    Parameters
    ----------
    reference, target : napari.layers.Image
        On one grid (same shape and transform) they are compared pixel by pixel. Otherwise each
        layer's scale and translate over the spatial axes become the core's ``reference_grid`` and
        ``target_grid`` (see `check_pair` for what is refused); the outputs lie on the target's
        grid (the reference's when reversed).
    mask_layer : napari.layers.Labels or napari.layers.Shapes, optional
        Mapped onto the pixels of the image the blur is measured on (the target; the reference
        when reversed) through both layers' transforms (see `mask_data`).
    mode : str
        ``"whole image/volume"`` (every axis spatial, 2D/3D), ``"current slice"`` (the 2D plane
        shown by the viewer),
        ``"frames jointly"`` (last two axes spatial, one sigma over the others), ``"per frame"``
        (one fit per 2D frame) or ``"blur map"`` (fits on tiles of a 2D/3D image).
    world_point : sequence of float, optional
        The viewer's ``dims.point`` (world coordinates) for ``"current slice"``; default: the first plane.
    tile : int
        Tile size for ``"blur map"`` (in the target's pixels).
    target_sampling : {"area", "point"}
        How the blurred image's pixels sample the world when the layers lie on different grids:
        ``"area"`` (a camera: the mean over each pixel) or ``"point"`` (values at pixel centres).
    callback : callable, optional
        Passed to the core, and called between building the output images; raising in it cancels.
    **options
        Passed unchanged to the core function of the mode (`napari_blurfit.fit_blur`,
        `napari_blurfit.fit_blur_stack` or `napari_blurfit.blur_map`), which refuses what it
        cannot honour.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    check_pair(reference, target, mode)
    goal = reference if options.get("reverse") else target  # the image the model reproduces
    a, b, mask, plane = _arrays(reference, target, goal, mask_layer, mode, world_point)
    axes = spatial_axes(reference.ndim, mode)
    grids = pair_grids(reference, target, mode, target_sampling)
    grid_kw = {} if grids is None else {"reference_grid": grids["reference"], "target_grid": grids["target"]}
    source = "target" if goal is reference else "reference"  # the kernel is sampled on its pixels
    info = dict(mode=mode, plane=plane, hint=axis_hint(target, mode), grids=grids, kernel_pixels=source,
                mask_pixels=None if mask is None else int(np.count_nonzero(mask)),
                units=world_units(reference, target, axes),
                pixel_size=grids[source].scale if grids else tuple(float(target.scale[ax]) for ax in axes))
    meta_base = {"reference": reference.name, "target": target.name, "mode": mode}
    placement = _placement(goal, reference.ndim - a.ndim)
    if mode == "per frame":
        from .stack import fit_blur_stack

        frames = fit_blur_stack(a, b, spatial_axes=(-2, -1), mask=mask, callback=callback, **grid_kw,
                                **options)
        return LayerFit(None, [], frames=frames, **info)
    if mode == "blur map":
        return _blur_map_fit(a, b, mask, target.name, placement, tile, callback, {**options, **grid_kw},
                             meta_base, info)
    if mode == "frames jointly":
        options = {**options, "spatial_axes": (-2, -1)}
    fit = fit_blur(a, b, mask=mask, callback=callback, **grid_kw, **options)
    layers = _output_layers(fit, a, b, goal.name, placement, meta_base, callback,
                            lazy=mode == "frames jointly")
    world = tuple(s * p for s, p in zip(fit.sigma, info["pixel_size"]))
    return LayerFit(fit, layers, sigma_world=world, **info)


def _arrays(reference, target, goal, mask_layer, mode, world_point):
    """``(a, b, mask, plane)``: the arrays to fit and the mask on ``goal``'s pixels.

    In ``"current slice"`` mode, the plane of each layer shown at ``world_point`` (each layer
    sliced through its own transform) and that plane's index in the target.
    """
    a, b = image_data(reference, "reference"), image_data(target, "target")
    mask = mask_data(mask_layer, goal)
    if a.ndim < 2 and mode in FRAME_MODES:
        raise ValueError(f"{mode!r} mode needs layers with at least two axes")
    if mode != "current slice":
        return a, b, mask, None
    ref_plane, plane = (_plane_index(layer, world_point, a.ndim) for layer in (reference, target))
    mask = None if mask is None else mask[ref_plane if goal is reference else plane]
    return np.asarray(a[ref_plane]), np.asarray(b[plane]), mask, plane


def _placement(layer, first: int) -> dict:
    """Where output layers of ``layer``'s axes ``first:`` go: on ``layer``'s pixels, in its units.

    A whole layer's rotation, shear and affine are kept too; a plane of it gets scale and translate.
    """
    place = {"scale": tuple(float(v) for v in layer.scale[first:]),
             "translate": tuple(float(v) for v in layer.translate[first:]),
             "units": tuple(layer.units)[first:]}
    if first == 0:
        place.update(rotate=np.asarray(layer.rotate), shear=np.asarray(layer.shear),
                     affine=np.asarray(layer.affine.affine_matrix))
    return place


def spatial_axes(ndim: int, mode: str) -> list[int]:
    """The layers' spatial axes in ``mode``: the last two in the frame modes, else all of them."""
    return list(range(ndim - 2, ndim)) if mode in FRAME_MODES else list(range(ndim))


def world_units(reference, target, axes) -> tuple[str, ...]:
    """The spatial axes' units: the target's, or the reference's where the target has none."""
    return tuple(t or r for t, r in zip(_units(target, axes), _units(reference, axes)))


def _blur_map_fit(a, b, mask, name, placement, tile, callback, options, meta_base, info) -> LayerFit:
    """Blur-map mode: the core's map as an image layer on the target's pixels (plus its shifts)."""
    from .blurmap import blur_map

    bm = blur_map(a, b, tile=tile, mask=mask, callback=callback, **options)
    sigma_img = bm.full_resolution().mean(axis=-1)
    finite = sigma_img[np.isfinite(sigma_img)]
    hi = float(finite.max()) if finite.size else 1.0
    lo = float(finite.min()) if finite.size else 0.0
    placement = {**placement, "metadata": {"blurfit": {**meta_base, "tile": tile}}}
    layers = [(sigma_img, {"name": f"{name} blur map", "colormap": "viridis",
                           "contrast_limits": (lo, hi if hi > lo else lo + 1.0), **placement}, "image")]
    grids, kernel = info["grids"], info["kernel_pixels"]
    ratio = 1.0 if grids is None else np.divide(grids[kernel].scale, grids[_other(kernel)].scale)
    arrows = shift_arrows(bm, ratio) if options.get("shift") else None
    if arrows is not None:
        data, factor = arrows
        width = max(1.0, min(bm.step) / 24)
        layers.append((data, {"name": f"{name} shift map", "length": factor,
                              "edge_width": width, "edge_color": SHIFT_ARROW_COLOR, **placement},
                       "vectors"))
    return LayerFit(None, layers, blur_map=bm, arrow_scale=None if arrows is None else arrows[1],
                    **info)


def shift_arrows(bm, pixel_ratio=1.0) -> tuple[np.ndarray, float] | None:
    """Per-tile shifts as napari vectors ``(n, 2, d)`` (tile centre, shift) and an enlargement.

    The enlargement is a 1-2-5 number that draws the largest shift at about half a tile step;
    ``None`` when no tile has a finite shift. ``pixel_ratio`` (per axis) is how many of the map's
    pixels one pixel of the shift spans: across grids the shifts are in the kernel's pixels, the
    tile centres in the pixels of the grid the map lies on.
    """
    if bm.shift is None:
        return None
    d = bm.centers.shape[-1]
    centres = bm.centers.reshape(-1, d)
    shifts = np.asarray(bm.shift, float).reshape(-1, d) * np.asarray(pixel_ratio, float)
    keep = np.all(np.isfinite(shifts), axis=1)
    if not keep.any():
        return None
    longest = float(np.linalg.norm(shifts[keep], axis=1).max())
    wanted = 0.5 * min(bm.step) / max(longest, 1e-3)
    factor = max(1.0, _nice_below(wanted))
    return np.stack([centres[keep], shifts[keep]], axis=1), factor


def _other(role: str) -> str:
    return "target" if role == "reference" else "reference"


def _nice_below(x: float) -> float:
    """The largest 1, 2 or 5 times a power of ten that is at most ``x`` (``x > 0``)."""
    power = 10.0 ** np.floor(np.log10(x))
    return float(max(m * power for m in (1, 2, 5) if m * power <= x))


def _output_layers(fit, a, b, name, placement, meta_base, callback, *, lazy) -> list:
    """The ``"<name> fit"`` and ``"<name> residual"`` layer tuples; ``callback`` is checked between steps."""
    def step(stage):
        if callback is not None:
            callback(stage)

    step("making the fitted image")
    ref, tgt = a, b
    # a lazy stack gets lazy output layers, which napari computes frame by frame as shown (on one
    # grid: across grids the core resamples the whole stack at once)
    lazy = lazy and is_dask(b if fit.reverse else a) and fit.grids is None
    if not lazy:
        ref, tgt = np.asarray(a), np.asarray(b)
    goal = ref if fit.reverse else tgt
    # one filter pass serves both output layers; across grids both lie on the goal's pixels
    fitted = fit.fitted(ref, tgt).astype(np.float32)
    step("making the residual image")
    residual = (goal - fitted).astype(np.float32)
    first = (0,) * (residual.ndim - 2) if lazy else ...  # contrast limits from the first frame
    shown_goal, shown_residual = np.asarray(goal[first]), np.asarray(residual[first])
    # display limits only: a million evenly strided pixels give the percentile (0.3 s -> 0.02 s at 4096^2)
    sample = shown_residual.ravel()[:: max(1, shown_residual.size // 2**20)]
    bound = float(np.nanpercentile(np.abs(sample), 99.9)) or 1.0
    lo, hi = float(np.nanmin(shown_goal)), float(np.nanmax(shown_goal))
    step("showing the results")
    meta = {"blurfit": {**meta_base, **fit.to_dict()}}
    common = {**placement, "metadata": meta}
    return [
        (fitted, {"name": f"{name} fit", "colormap": "gray",
                  "contrast_limits": (lo, hi if hi > lo else lo + 1.0), **common}, "image"),
        (residual, {"name": f"{name} residual", "colormap": RESIDUAL_COLORMAP,
                    "contrast_limits": (-bound, bound), **common}, "image"),
    ]


UPDATED = ("scale", "translate", "rotate", "shear", "affine", "units", "metadata", "contrast_limits",
           "colormap", "length", "edge_width", "edge_color")


def show_layers(viewer, result: LayerFit) -> list:
    """Add a fit's output layers, or update same-named layers of the same kind in place.

    Returns the layers. A blur map's colourbar is drawn in the dock widget, beside the canvas
    (napari's own colorbar overlay would cover the image; the layer's context menu still offers it).
    """
    from napari.layers import Image, Vectors

    kinds = {"image": (Image, viewer.add_image), "vectors": (Vectors, viewer.add_vectors)}
    out = []
    for data, kwargs, kind in result.layers:
        cls, add = kinds[kind]
        name = kwargs["name"]
        if name in viewer.layers and isinstance(viewer.layers[name], cls):
            layer = viewer.layers[name]
            layer.data = data
            for key in UPDATED:
                if key in kwargs:
                    setattr(layer, key, kwargs[key])
        else:
            layer = add(data, **kwargs)
        out.append(layer)
    _remove_stale_shift_map(viewer, result)
    return out


def _remove_stale_shift_map(viewer, result: LayerFit) -> None:
    """A blur map rerun without a shift leaves no arrows of an earlier run beside the new map."""
    if result.blur_map is None or any(kind == "vectors" for _, _, kind in result.layers):
        return
    for _, kwargs, _ in result.layers:
        stale = kwargs["name"].replace(" blur map", " shift map")
        if stale in viewer.layers and "blurfit" in viewer.layers[stale].metadata:
            viewer.layers.remove(stale)


def fit_layers(viewer, reference, target, *, mask=None, mode: str = "whole image/volume", show: bool = True,
               target_sampling: str = "area", **options):
    """Fit two layers of ``viewer`` (given by name or as layers) and show fit and residual.

    The console counterpart of the dock widget: same computation, same output layers.

    Parameters
    ----------
    viewer : napari.Viewer
    reference, target : str or napari.layers.Image
    mask : str or napari.layers.Labels or napari.layers.Shapes, optional
    mode : str
        See `run_layer_fit`.
    show : bool
        Add/update the output layers.
    target_sampling : {"area", "point"}
        How the blurred image's pixels sample the world, for layers on different grids.
    **options
        Passed to `napari_blurfit.fit_blur` (``loss``, ``per_axis``, ``gain_offset``, ...).

    Returns
    -------
    BlurFit or list of BlurFit or BlurMap
        The fit; per-frame fits in ``"per frame"`` mode; the map in ``"blur map"`` mode.
    """
    def get(x):
        return viewer.layers[x] if isinstance(x, str) else x

    result = run_layer_fit(get(reference), get(target), mask_layer=get(mask), mode=mode,
                           world_point=viewer.dims.point, target_sampling=target_sampling, **options)
    if show:
        show_layers(viewer, result)
    if mode == "per frame":
        return result.frames
    if mode == "blur map":
        return result.blur_map
    return result.fit
