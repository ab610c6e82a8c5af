"""Check and arrange a pair of images on different grids (docs/design.md section 18).

The image the kernel is applied to is the *source* (the reference; the target with
``reverse=True``), the image the loss is measured on the *destination*. Both become frame
stacks (frames first, one leading axis) in float; the destination is cut to the block of pixels
whose footprint lies inside the source's extent (the others are outside what the source saw).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from ._options import FitOptions
from ._resample import AxisSampling, axis_sampling, resample
from ._validate import (
    MIN_AXIS_LENGTH,
    as_image,
    border_tuple,
    normalize_spatial_axes,
    working_dtype,
)
from .grids import Grid

SCALE_TOLERANCE = 1e-9  # relative: pixel sizes closer than this are equal


class Roles(NamedTuple):
    """What the user calls the source and destination images and grids."""

    source: str
    destination: str

    @classmethod
    def of(cls, reverse: bool) -> Roles:
        return cls("target", "reference") if reverse else cls("reference", "target")


class GridPair(NamedTuple):
    """A checked pair across grids.

    ``source`` is ``(frames, *spatial)`` in its working dtype; ``destination`` ``(frames,
    *inside)`` in float64 (non-finite pixels set to 0 and left out by ``used``); ``used`` is
    None when every inside pixel counts.
    """

    source: np.ndarray
    destination: np.ndarray
    used: np.ndarray | None
    sampling: tuple[AxisSampling, ...]
    grids: tuple[Grid, Grid]  # source, destination
    destination_shape: tuple[int, ...]  # the destination's whole spatial shape
    spatial_axes: tuple[int, ...]
    roles: Roles
    n_nonfinite: int
    n_destination: int  # every destination pixel, inside or not

    @property
    def ndim(self) -> int:
        return len(self.sampling)

    @property
    def inside(self) -> tuple[slice, ...]:
        return tuple(s.inside for s in self.sampling)

    @property
    def n_used(self) -> int:
        if self.used is None:
            return int(self.destination.size)
        return int(np.count_nonzero(np.broadcast_to(self.used, self.destination.shape)))


def grids_given(options: FitOptions) -> bool:
    return options.reference_grid is not None or options.target_grid is not None


def same_grids(reference, target, options: FitOptions) -> bool:
    """True when the grids change nothing: equal shapes, scales and origins (today's model)."""
    ref, tgt = as_image(reference, "reference"), as_image(target, "target")
    if tuple(ref.shape) != tuple(tgt.shape):
        return False
    d = len(normalize_spatial_axes(options.spatial_axes, ref.ndim, ref.shape, "reference"))
    a, b = grid_pair(options, d)
    return (np.allclose(a.scale, b.scale, rtol=SCALE_TOLERANCE, atol=0)
            and np.allclose(a.translate, b.translate, rtol=0, atol=SCALE_TOLERANCE * min(a.scale)))


def grid_pair(options: FitOptions, d: int) -> tuple[Grid, Grid]:
    """The reference's and the target's grid (unit pixels at the origin where not given)."""
    unit = Grid((1.0,) * d)
    ref = unit if options.reference_grid is None else Grid.of(options.reference_grid, d, "reference_grid")
    tgt = unit if options.target_grid is None else Grid.of(options.target_grid, d, "target_grid")
    return ref, tgt


def prepare_grid_pair(reference, target, options: FitOptions) -> GridPair:
    """Check the images, grids, mask and border of a fit across grids; see `GridPair`."""
    roles = Roles.of(options.reverse)
    images = {"reference": as_image(reference, "reference"), "target": as_image(target, "target")}
    axes = {name: normalize_spatial_axes(options.spatial_axes, arr.ndim, arr.shape, name)
            for name, arr in images.items()}
    src, dst = images[roles.source], images[roles.destination]
    s_axes, d_axes = axes[roles.source], axes[roles.destination]
    _check_frames(src, dst, s_axes, d_axes, roles)
    d = len(s_axes)
    grids = dict(zip(("reference", "target"), grid_pair(options, d)))
    s_grid, d_grid = grids[roles.source], grids[roles.destination]
    s_shape = tuple(int(src.shape[a]) for a in s_axes)
    d_shape = tuple(int(dst.shape[a]) for a in d_axes)
    _check_coarser(s_grid, d_grid, roles)
    sampling = tuple(_axis(s_grid, s_shape, d_grid, d_shape, k, roles) for k in range(d))
    source = _frames(src, s_axes, working_dtype(np.dtype(src.dtype), roles.source), copy=False)
    destination = _frames(dst, d_axes, np.float64, copy=True)
    used = _used(options, dst.shape, d_axes, d_shape, roles)
    source, destination, used, n_nonfinite = _exclude_nonfinite(source, destination, used, sampling)
    inside = (slice(None),) + tuple(s.inside for s in sampling)
    destination = np.ascontiguousarray(destination[inside])
    used = None if used is None else np.ascontiguousarray(used[inside])
    if used is not None and not used.any():
        raise ValueError(f"no {roles.destination} pixel inside the {roles.source}'s extent is left for "
                         "the loss after the mask, border and NaN exclusion")
    _check_not_constant(source, destination, used, roles)
    return GridPair(source, destination, used, sampling, (s_grid, d_grid), d_shape, d_axes, roles,
                    n_nonfinite, int(np.prod(dst.shape)))


def _check_frames(src, dst, s_axes, d_axes, roles: Roles) -> None:
    if len(s_axes) != len(d_axes):
        raise ValueError(f"the {roles.source} has {len(s_axes)} spatial axes and the {roles.destination} "
                         f"{len(d_axes)}; both must be 2D or both 3D")
    s_frames = [n for a, n in enumerate(src.shape) if a not in s_axes]
    d_frames = [n for a, n in enumerate(dst.shape) if a not in d_axes]
    if s_frames != d_frames:
        raise ValueError(f"the {roles.source}'s frame axes {tuple(s_frames)} and the {roles.destination}'s "
                         f"{tuple(d_frames)} differ; only the spatial axes may differ across grids")
    for name, arr, axes in ((roles.source, src, s_axes), (roles.destination, dst, d_axes)):
        for a in axes:
            if arr.shape[a] < MIN_AXIS_LENGTH:
                raise ValueError(f"the {name} has only {arr.shape[a]} pixel(s) along axis {a}; every "
                                 f"spatial axis needs at least {MIN_AXIS_LENGTH}")


def _check_coarser(source: Grid, destination: Grid, roles: Roles) -> None:
    """The kernel is fitted on the finer grid: a destination finer than the source is refused."""
    finer = [k for k in range(source.ndim)
             if destination.scale[k] < source.scale[k] * (1 - SCALE_TOLERANCE)]
    if finer:
        k = finer[0]
        other = "False" if roles.source == "target" else "True"
        raise ValueError(
            f"the {roles.destination}'s pixels are finer than the {roles.source}'s along axis {k} "
            f"({destination.scale[k]:g} against {source.scale[k]:g} world units per pixel): the blur "
            f"is fitted on the finer image's grid; pass reverse={other} to fit "
            f"{roles.destination} -> {roles.source}")


def _axis(source: Grid, s_shape, destination: Grid, d_shape, k: int, roles: Roles) -> AxisSampling:
    sampling = axis_sampling(source, s_shape[k], destination, d_shape[k], k)
    if sampling is None:
        s_lo, s_hi = source.extent(s_shape)
        d_lo, d_hi = destination.extent(d_shape)
        raise ValueError(
            f"the grids do not overlap along axis {k}: the {roles.source} covers world "
            f"[{s_lo[k]:g}, {s_hi[k]:g}] and the {roles.destination} [{d_lo[k]:g}, {d_hi[k]:g}], "
            f"and no {roles.destination} pixel lies inside the {roles.source}'s extent; check scale "
            "and translate")
    n_inside = sampling.inside.stop - sampling.inside.start
    if n_inside < MIN_AXIS_LENGTH:
        raise ValueError(
            f"the grids overlap by only {n_inside} {roles.destination} pixel(s) along axis {k} (at "
            f"least {MIN_AXIS_LENGTH} needed): too small a region to measure a blur on")
    return sampling


def _frames(arr, axes, dtype, *, copy: bool) -> np.ndarray:
    """Spatial axes last, the frames on one leading axis, as ``dtype``.

    Without ``copy``, a read-only view of the input where its layout and dtype allow (the
    source: nothing writes to it; `_exclude_nonfinite` fills a copy).
    """
    moved = np.moveaxis(np.asarray(arr), axes, range(arr.ndim - len(axes), arr.ndim))
    spatial = moved.shape[arr.ndim - len(axes):]
    frames = np.array(moved.reshape((-1,) + spatial), dtype=dtype, copy=copy or None)
    if not copy:
        frames = frames.view()
        frames.flags.writeable = False
    return frames


def _used(options: FitOptions, input_shape, axes, spatial_shape, roles: Roles) -> np.ndarray | None:
    """The destination pixels the mask and border leave, as ``(frames or 1, *spatial)``."""
    used = None
    if options.mask is not None:
        mask = np.asarray(options.mask)
        if mask.dtype != np.bool_:
            if not np.issubdtype(mask.dtype, np.number) or not np.isin(mask, (0, 1)).all():
                raise TypeError("mask must be a boolean array (True where a pixel counts), got "
                                f"dtype {mask.dtype}")
            mask = mask.astype(bool)
        if mask.shape == tuple(input_shape):
            used = _frames(mask, axes, bool, copy=True)
        elif mask.shape == tuple(spatial_shape):
            used = mask[None]
        else:
            shapes = " or ".join(str(s) for s in dict.fromkeys((tuple(input_shape), tuple(spatial_shape))))
            raise ValueError(f"mask has shape {mask.shape}; it must be on the {roles.destination}'s "
                             f"grid, where the loss is measured: shape {shapes}")
    border = border_tuple(options.exclude_border, spatial_shape)
    if any(border):
        interior = np.zeros((1,) + tuple(spatial_shape), dtype=bool)
        interior[(0,) + tuple(slice(b, n - b) for b, n in zip(border, spatial_shape))] = True
        used = interior if used is None else used & interior
    if used is not None and not used.any():
        raise ValueError("mask selects no pixels" if options.mask is not None
                         else "no pixel is left for the loss after the border exclusion")
    return used


def _exclude_nonfinite(source, destination, used, sampling):
    """Non-finite pixels out of the loss: a destination's own, and those that read a source's.

    A non-finite source pixel is filled with its nearest finite neighbour (the blur stays
    defined) and every destination pixel whose footprint reads it is left out.
    """
    bad_destination = ~np.isfinite(destination)
    bad_source = ~np.isfinite(source)
    n_nonfinite = int(np.count_nonzero(bad_destination))
    if not bad_destination.any() and not bad_source.any():
        return source, destination, used, 0
    if bad_source.all():
        raise ValueError("no pixel of the image the kernel is applied to is finite (all NaN/inf)")
    keep = ~bad_destination
    if bad_source.any():
        idx = ndimage.distance_transform_edt(bad_source, return_distances=False, return_indices=True)
        source = source[tuple(idx)]
        reads = resample(bad_source.astype(np.float64), [s.weights for s in sampling], 1) > 0
        full = np.zeros(destination.shape, dtype=bool)
        full[(slice(None),) + tuple(s.inside for s in sampling)] = reads
        n_nonfinite += int(np.count_nonzero(full & ~bad_destination))
        keep &= ~full
    destination = np.where(bad_destination, 0.0, destination)
    used = keep if used is None else used & keep
    return source, destination, used, n_nonfinite


def _check_not_constant(source, destination, used, roles: Roles) -> None:
    if np.ptp(source) == 0:
        raise ValueError(f"{roles.source} is constant: a blur cannot be measured from a flat image")
    values = destination if used is None else destination[np.broadcast_to(used, destination.shape)]
    if values.size == 0 or np.ptp(values) == 0:
        raise ValueError(f"{roles.destination} is constant: a blur cannot be measured from a flat image")
