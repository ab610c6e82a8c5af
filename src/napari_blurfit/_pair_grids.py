"""The two grids one pair of images is fitted across, from pixel sizes (metadata, flags) and shapes.

Used by the ``blurfit`` command and by `napari_blurfit.dataset.fit_pairs`: `grids_of_sizes` turns
each image's pixel size (a `napari_blurfit.io.PixelSize`, or a `Grid` given as is) into grids in
one world unit; `pair_grids` then decides, from the images' shapes, whether `fit_blur` needs
grids at all (equal grids and shapes: the same-grid fit) or cannot be told where the images lie.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .grids import SAMPLINGS, Grid
from .io import PixelSize, convert, read_pixel_size

ROLES = ("reference", "target")


@dataclass(frozen=True)
class GridPair:
    """The grids of one pair (None: that image's pixel size is not known), in ``unit``.

    Per image, ``sources`` says where its pixel size came from (``"ImageJ metadata"``) and
    ``said`` what it is and where from, for messages; None when it has none.
    """

    reference: Grid | None = None
    target: Grid | None = None
    unit: str | None = None
    said: tuple[str | None, str | None] = field(default=(None, None))
    sources: tuple[str | None, str | None] = field(default=(None, None))

    @property
    def grids(self) -> tuple[Grid | None, Grid | None]:
        """(reference, target)."""
        return self.reference, self.target


def _unit_of(spec) -> str | None:
    """A pixel size's unit; a `Grid` has none."""
    return spec.unit if isinstance(spec, PixelSize) else None


def grids_of_sizes(reference, target, *, spatial_axes=None, sampling: str = "area",
                   reverse: bool = False, origins=(None, None)) -> GridPair:
    """Both images' grids in one world unit (the reference's).

    Parameters
    ----------
    reference, target : PixelSize, Grid or None
        Each image's pixel size (a `Grid`: taken as it is, in the other image's unit).
    spatial_axes : tuple of int, optional
        The fit's spatial axes (negative indices), to pick a file's sizes from its metadata.
    sampling : {"area", "point"}
        How the image the blur is measured on samples the world: the target's, the
        reference's with ``reverse`` (a `Grid` keeps its own).
    origins : pair of (sequence of float or None)
        World position of pixel 0's centre per image, in that image's pixel-size unit (for a
        `PixelSize`; a `Grid` keeps its own ``translate``). Default: half a pixel, so that
        the image's corner is at 0 and two images of one field of view share that corner.

    Returns
    -------
    GridPair
    """
    units = [_unit_of(s) for s in (reference, target)]
    unit = units[0] or units[1]
    grids, said = [], []
    for role, spec, origin in zip(ROLES, (reference, target), origins):
        measured = (role == "target") != reverse
        grid, text = _grid(spec, role, spatial_axes, unit, sampling if measured else "area", origin)
        grids.append(grid)
        said.append(text)
    sources = tuple(None if s is None else "as given" if isinstance(s, Grid) else s.source
                    for s in (reference, target))
    return GridPair(grids[0], grids[1], unit, tuple(said), sources)


def _grid(spec, role, spatial_axes, unit, sampling, origin) -> tuple[Grid | None, str | None]:
    """One image's grid in ``unit`` and where its pixel size came from."""
    if spec is None:
        if origin is not None:
            raise ValueError(f"{role}_origin needs the {role}'s pixel size ({role}_grid)")
        return None, None
    if isinstance(spec, Grid):
        if origin is not None:
            raise ValueError(f"{role}_origin is for a pixel size; a {role}_grid Grid has its own "
                             "translate")
        return spec, f"{' x '.join(f'{s:.6g}' for s in spec.scale)} (as given)"
    sizes = spec.along(spatial_axes, role)
    scale = convert(sizes, spec.unit, unit)
    # a file's pixel 0 has its corner at the origin (as ImageJ calibrates), so two images of
    # one field of view at two pixel sizes share its corner, not their first pixels' centres
    translate = (tuple(s / 2 for s in scale) if origin is None
                 else convert(np.atleast_1d(origin), spec.unit, unit))
    return Grid(scale, translate, sampling), _said(spec, scale, unit)


def _said(spec: PixelSize, scale, unit) -> str:
    """Where a pixel size came from, and what it is in the pair's unit."""
    values = " x ".join(f"{s:.6g}" for s in scale)
    if spec.unit == unit:
        return spec.text(scale)
    if spec.unit is None:
        return f"{values} {unit} (from {spec.source}, taken in the other image's unit)"
    return f"{spec.text()} = {values} {unit}"


def _spatial_shape(shape, spatial_axes) -> tuple[int, ...]:
    return tuple(shape) if spatial_axes is None else tuple(shape[a] for a in spatial_axes)


def _on_axes(grid: Grid, ndim: int, role: str) -> Grid:
    """``grid`` over ``ndim`` axes (one size repeated); refuse another number of sizes."""
    if grid.ndim not in (1, ndim):
        raise ValueError(f"{role}_grid has {grid.ndim} pixel sizes {grid.scale} but the images "
                         f"have {ndim} spatial axes; give one size or {ndim}")
    return Grid.of(grid, ndim, f"{role}_grid")


def _same(a: Grid, b: Grid) -> bool:
    """Equal grids, up to a unit conversion's rounding (the sampling does not matter then)."""
    return bool(np.allclose(a.scale, b.scale, rtol=1e-9, atol=0)
                and np.allclose(a.translate, b.translate, rtol=1e-9, atol=1e-12 * max(a.scale)))


def pair_grids(reference_shape, target_shape, spatial_axes, pair: GridPair | None) -> dict:
    """The ``reference_grid``/``target_grid`` options `fit_blur` needs for this pair ({} if none).

    Parameters
    ----------
    reference_shape, target_shape : tuple of int
        The images' shapes.
    spatial_axes : tuple of int or None
        The fit's spatial axes (None: every axis).
    pair : GridPair or None
        Both images' grids (None: no pixel size known for either).

    Returns
    -------
    dict
        ``{}`` when the images share one grid: neither or only one has a pixel size and their
        shapes agree, or both grids and shapes are equal (the same-grid fit, exactly);
        otherwise both grids.

    Raises
    ------
    ValueError
        The shapes differ and a pixel size is missing; a grid's number of sizes is wrong.
    """
    shapes = [_spatial_shape(s, spatial_axes) for s in (reference_shape, target_shape)]
    ndim = len(shapes[0])
    grids = (None, None) if pair is None else tuple(
        None if g is None else _on_axes(g, ndim, role) for g, role in zip(pair.grids, ROLES))
    if None in grids:
        _refuse_missing(shapes, grids, pair)
        return {}
    reference, target = grids
    if shapes[0] == shapes[1] and _same(reference, target):
        return {}
    return {"reference_grid": reference, "target_grid": target}


def _refuse_missing(shapes, grids, pair: GridPair | None) -> None:
    """Images whose shapes differ need both pixel sizes: say which is missing."""
    if shapes[0] == shapes[1]:
        return
    if grids == (None, None):
        raise ValueError(f"reference and target must have the same shape; got reference {shapes[0]} "
                         f"and target {shapes[1]}; or give reference_grid and target_grid (each "
                         "image's pixel size) to fit across the two grids")
    shown = f"the reference has shape {shapes[0]} and the target {shapes[1]}"
    missing = ROLES[grids.index(None)]
    known = ROLES[1 - grids.index(None)]
    raise ValueError(f"{shown} but only the {known} has a pixel size ({pair.said[ROLES.index(known)]}); "
                     f"give {missing}_grid (the {missing}'s pixel size) to fit across the two grids")


# ---------------------------------------------------------------- one spec per pair (fit_pairs)


def _per_pair(value, n: int, name: str) -> list:
    """``value`` for each of ``n`` pairs: one value repeated, or a list of one per pair."""
    if value is None or isinstance(value, (str, Grid, Mapping, PixelSize)):
        return [value] * n
    try:
        values = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a Grid, a mapping, a PixelSize, 'metadata', None or a "
                        f"list of one per pair; got {type(value).__name__}") from None
    if len(values) != n:
        raise ValueError(f"{name} lists {len(values)} grids for {n} pairs; give one for every "
                         "pair, or one for all")
    return values


def _spec(value, item, name: str):
    """One image's grid or pixel size (None: unknown) from one ``reference_grid`` entry."""
    if value is None or isinstance(value, (Grid, PixelSize)):
        return value
    if isinstance(value, str):
        if value != "metadata":
            raise ValueError(f"{name} may be 'metadata' (each file's pixel size), got {value!r}")
        return None if isinstance(item, np.ndarray) else read_pixel_size(item)
    if isinstance(value, Mapping):
        n = max(np.size(value.get("scale", 0)), np.size(value.get("translate", 0)))
        return Grid.of(value, n, name)
    raise TypeError(f"{name} must be a Grid, a mapping, a PixelSize, 'metadata' or None; got "
                    f"{type(value).__name__}")


def pair_grid_specs(pairs, grids, sampling: str, origins, options: dict) -> list | None:
    """Each pair's `GridPair`, or the reason its grids cannot be made (a str); None if no grid.

    ``grids``: (reference_grid, target_grid) as `fit_pairs` takes them; ``origins``: its
    (reference_origin, target_origin).
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"target_sampling must be 'area' or 'point', got {sampling!r}")
    if grids == (None, None):
        given = [n for n, v in (("target_sampling", sampling != "area"),
                                ("reference_origin", origins[0] is not None),
                                ("target_origin", origins[1] is not None)) if v]
        if given:
            raise ValueError(f"{', '.join(given)} applies to grids made from pixel sizes; give "
                             "reference_grid and target_grid (e.g. 'metadata')")
        return None
    columns = [_per_pair(g, len(pairs), f"{role}_grid") for g, role in zip(grids, ("reference", "target"))]
    specs = []
    for i, pair in enumerate(pairs):
        try:
            sides = [_spec(columns[k][i], pair[k], f"{role}_grid")
                     for k, role in enumerate(("reference", "target"))]
            specs.append(grids_of_sizes(*sides, spatial_axes=options.get("spatial_axes"),
                                        sampling=sampling, reverse=bool(options.get("reverse")),
                                        origins=origins))
        except (ValueError, TypeError) as err:
            specs.append(f"{type(err).__name__}: {err}")
    return specs
