"""`blur_map`: sigma fitted on overlapping tiles, for blur that changes across the field of view.

Each tile is fitted with some real image context around it (the halo): the blur is computed with
that context and only the tile's own pixels count in the loss, so tile edges are not biased by an
artificial boundary. Tiles where sigma cannot be measured are NaN with a reason, never noise.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from scipy import interpolate, ndimage

from ._finding import Finding
from ._grid_pair import Roles, grid_pair, grids_given, same_grids
from ._options import FitOptions
from ._result import BlurFitWarning
from ._validate import as_image, as_image_pair, border_tuple, is_dask, mask_frames, normalize_spatial_axes
from .fit import fit_blur
from .grids import Grid

FLAT_CONTRAST = 1e-3  # a tile whose reference std is below this fraction of the image's is flat
TILES_PER_TASK = 4  # per axis: on dask, one task fits a block of up to 4 x 4 (x 4) tiles,
MIN_BLOCKS = 8  # as long as at least this many blocks along each axis remain to spread over workers
MAP_CAUSES = ("brightness", "misaligned", "lacks_detail")  # tile findings that can be the map's
MAP_SHARE = 1 / 3  # ... when at least this share of the fitted tiles report them


@dataclass(frozen=True)
class BlurMap:
    """Sigma per tile.

    Attributes
    ----------
    sigma : ndarray, shape (*grid, d)
        Sigma per tile and spatial axis in pixels; NaN where not measurable.
    sigma_stderr, gain, offset, loss : ndarray
        Per tile (``sigma_stderr`` with a last axis of d); NaN where not measurable.
    shift : ndarray, shape (*grid, d)
        The kernel's centre per tile (px; zeros unless fitted with ``shift=True``): a field map
        of misregistration.
    covariance : ndarray, shape (*grid, d, d)
        The kernel's covariance per tile (px^2; rotated ellipses with ``full_covariance=True``).
    reason : ndarray of str, shape grid
        ``""`` for a good tile, otherwise why it is NaN: "flat", "masked out", "not
        identifiable", "target sharper", "at bound", "lacks detail" (the blur changes the tile by
        less than a grey level: its sigma is not determined), "failed: ...".
    centers : ndarray, shape (*grid, d)
        Tile centres in pixel coordinates of the image.
    tile, step : tuple of int
        Tile size and spacing per axis.
    shape : tuple of int
        The image's shape.
    findings : tuple of Finding
        What applies to the whole map (`map_findings`): a brightness difference or misalignment
        most tiles share, a reference without detail, the tiles left out; ``notes`` as text.
    grids : dict or None
        A map across grids: ``{"reference": Grid, "target": Grid}``. Tiles, ``centers`` and
        ``shape`` are then on the target's grid (the reference's when reversed: the grid the
        loss is measured on), sigma in the other image's pixels (as `BlurFit` has it).
    """

    sigma: np.ndarray
    sigma_stderr: np.ndarray
    gain: np.ndarray
    offset: np.ndarray
    loss: np.ndarray
    reason: np.ndarray
    centers: np.ndarray
    tile: tuple[int, ...]
    step: tuple[int, ...]
    shape: tuple[int, ...]
    shift: np.ndarray | None = None
    covariance: np.ndarray | None = None
    findings: tuple[Finding, ...] = ()
    grids: dict | None = None

    @property
    def notes(self) -> tuple[str, ...]:
        """The map's findings as sentences (also warned with ``warn=True``)."""
        return tuple(f.text for f in self.findings)

    def full_resolution(self) -> np.ndarray:
        """Sigma at every pixel, shape ``(*shape, d)``, linearly interpolated between tile centres.

        Pixels whose nearest tile is not measurable are NaN.
        """
        d = len(self.shape)
        grid_axes = [np.unique(self.centers[..., i]) for i in range(d)]
        bad = np.isnan(self.sigma[..., 0])
        if bad.all():
            return np.full((*self.shape, d), np.nan, dtype=np.float32)
        # fill NaN tiles from their nearest good tile for the interpolation, then blank them again
        idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
        filled = self.sigma[tuple(idx)]
        coords = [np.clip(np.arange(n, dtype=np.float64), g[0], g[-1])
                  for n, g in zip(self.shape, grid_axes)]
        out = np.empty((*self.shape, d), dtype=np.float32)
        points = np.stack(np.meshgrid(*coords, indexing="ij"), axis=-1)
        for i in range(d):
            if all(len(g) > 1 for g in grid_axes):
                f = interpolate.RegularGridInterpolator(grid_axes, filled[..., i])
                out[..., i] = f(points)
            else:
                out[..., i] = np.nanmean(filled[..., i])
        nearest = [np.clip(np.searchsorted(g, c), 0, len(g) - 1) for g, c in zip(grid_axes, coords)]
        for ax, (g, c) in enumerate(zip(grid_axes, coords)):
            left = np.clip(nearest[ax] - 1, 0, len(g) - 1)
            closer = np.abs(g[left] - c) <= np.abs(g[nearest[ax]] - c)
            nearest[ax] = np.where(closer, left, nearest[ax])
        blank = bad[np.ix_(*nearest)]
        out[blank] = np.nan
        return out

    def to_dict(self) -> dict:
        """Plain-Python fields (NaN as None) for JSON."""
        def clean(a):
            a = np.asarray(a, dtype=object)
            return np.where(a != a, None, a).tolist()  # NaN != NaN
        return {"sigma": clean(self.sigma), "sigma_stderr": clean(self.sigma_stderr),
                "gain": clean(self.gain), "offset": clean(self.offset), "loss": clean(self.loss),
                "reason": self.reason.tolist(), "centers": self.centers.tolist(),
                "shift": clean(self.shift), "covariance": clean(self.covariance),
                "tile": list(self.tile), "step": list(self.step), "shape": list(self.shape),
                "findings": [f.to_dict() for f in self.findings], "notes": list(self.notes),
                "grids": None if self.grids is None else {k: g.to_dict() for k, g in self.grids.items()}}


def _starts(n: int, tile: int, step: int) -> list[int]:
    if tile >= n:
        return [0]
    starts = list(range(0, n - tile + 1, step))
    if starts[-1] != n - tile:
        starts.append(n - tile)
    return starts


class _TileFit(NamedTuple):
    """One tile's answer; NaN values with a ``reason`` when it cannot be measured."""

    sigma: np.ndarray
    stderr: np.ndarray
    gain: float
    offset: float
    loss: float
    reason: str
    shift: np.ndarray
    covariance: np.ndarray
    findings: tuple[Finding, ...] = ()  # the tile fit's

    @classmethod
    def failed(cls, d: int, reason: str) -> _TileFit:
        nan = np.full(d, np.nan)
        return cls(nan, nan, np.nan, np.nan, np.nan, reason, nan, np.full((d, d), np.nan))


def _fit_tile(a, b, used, pad, halo, options: FitOptions, flat_level) -> _TileFit:
    """Fit one tile with its halo.

    ``pad`` completes the halo where the tile meets the image edge by mirroring, which is what
    scipy's reflect mode sees there, so every tile has a full halo and the border band that is
    excluded from the loss is the same on all sides. ``used`` (the caller's mask and border band
    cut to this region, or None) is padded with False: mirrored pixels never count.
    """
    a = np.pad(np.asarray(a, dtype=np.float64), pad, mode="symmetric")
    b = np.pad(np.asarray(b, dtype=np.float64), pad, mode="symmetric")
    d = a.ndim
    inner = tuple(slice(halo, n - halo) for n in a.shape)
    if used is not None:
        used = np.pad(used, pad, mode="constant", constant_values=False)
        if not used[inner].any():
            return _TileFit.failed(d, "masked out")
    if not np.isfinite(a[inner]).any() or np.nanstd(a[inner]) <= flat_level:
        return _TileFit.failed(d, "flat")
    try:
        fit = fit_blur(a, b, **options.replace(mask=used, exclude_border=halo,
                                               warn=False).as_kwargs())
    except (ValueError, TypeError) as err:
        return _TileFit.failed(d, f"failed: {err}")
    return _verdict(fit, d)


def _verdict(fit, d: int) -> _TileFit:
    """A tile fit's answer, or NaN with the reason it does not measure the blur."""
    codes = {f.code for f in fit.findings}
    if not fit.identifiable:
        reason = "target sharper" if fit.target_sharper else "not identifiable"
    elif fit.at_bound:
        reason = "at bound"
    elif "lacks_detail" in codes:
        reason = "lacks detail"
    else:
        return _TileFit(np.array(fit.sigma), np.array(fit.sigma_stderr), fit.gain, fit.offset,
                        fit.loss, "", np.array(fit.shift), np.array(fit.covariance), fit.findings)
    return _TileFit.failed(d, reason)._replace(gain=fit.gain, offset=fit.offset, loss=fit.loss,
                                               findings=fit.findings)


def _fit_tiles(a, b, used, jobs, halo, options, flat_level) -> list:
    """`_fit_tile` for several tiles cut from one region (``jobs`` relative to it)."""
    return [_fit_tile(a[outer], b[outer], None if used is None else used[outer], pad, halo,
                      options, flat_level) for outer, pad in jobs]


def _fit_tiles_on_dask(ref, tgt, used, jobs, grid, halo, options, flat_level) -> list:
    """Tile results in ``jobs`` order, one dask task per block of neighbouring tiles.

    Overlapping tiles share most of their pixels, so a task per block reads each pixel a few
    times instead of about ten, and a task's overhead is paid once per block.
    """
    import dask

    block = [max(1, min(TILES_PER_TASK, n // MIN_BLOCKS)) for n in grid]
    groups: dict = {}
    for index, job in enumerate(jobs):
        position = np.unravel_index(index, grid)
        groups.setdefault(tuple(p // g for p, g in zip(position, block)), []).append((index, job))
    tasks, order = [], []
    for members in groups.values():
        outers = [outer for _, (outer, _) in members]
        region = tuple(slice(min(o[ax].start for o in outers), max(o[ax].stop for o in outers))
                       for ax in range(len(grid)))
        local = [(tuple(slice(o.start - r.start, o.stop - r.start) for o, r in zip(outer, region)),
                  pad) for _, (outer, pad) in members]
        cut = None if used is None else used[region]
        tasks.append(dask.delayed(_fit_tiles)(ref[region], tgt[region], cut, local, halo, options,
                                              flat_level))
        order += [index for index, _ in members]
    results = [None] * len(jobs)
    for index, result in zip(order, itertools.chain.from_iterable(dask.compute(*tasks))):
        results[index] = result
    return results


def blur_map(reference, target, *, tile=128, overlap: float = 0.5, halo=None, callback=None,
             **options) -> BlurMap:
    """Fit sigma on overlapping tiles of a 2D or 3D image pair.

    Parameters
    ----------
    reference, target : array_like
        2D or 3D images of equal shape (numpy or dask; dask tiles are read one at a time and
        fitted in parallel on the active dask scheduler, a `dask.distributed` cluster included).
    tile : int or sequence of int
        Tile size in pixels (per axis if a sequence).
    overlap : float
        Fraction of a tile shared with its neighbour, in [0, 1).
    halo : int, optional
        Pixels of real image context around each tile that shape the blur but not the loss.
        Default ``tile // 4``: enough for sigmas up to about tile / 16.
    callback : callable, optional
        Called as ``callback(stage)`` before each tile (numpy input); raising stops.
    **options
        `napari_blurfit.fit_blur`'s options, honoured per tile: ``loss``, ``per_axis``,
        ``gain_offset``, ``sigma_bounds``, ``reverse``, ``huber_delta``, ``truncate``,
        ``workers``; ``mask`` (the image's shape) and ``exclude_border`` (a band along the
        image's edges) restrict every tile's loss, and a tile with no pixel left is NaN with
        reason ``"masked out"``; ``warn`` summarises the tiles that could not be measured in a
        `BlurFitWarning`. ``spatial_axes`` is refused: a map is of one 2D or 3D image.
        ``reference_grid``/``target_grid``: images on different grids (see
        `napari_blurfit.fit_blur`); the tiles are then on the target's grid (the reference's
        when reversed), ``tile`` and ``halo`` in its pixels, and each tile is fitted across
        grids against the part of the other image that covers it. A tile outside the other
        image is NaN with reason ``"outside"``.

    Returns
    -------
    BlurMap
        ``sigma`` has the tile grid as leading axes and one value per spatial axis last;
        ``full_resolution()`` gives the map aligned with the image.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from napari_blurfit import blur_map
    >>> sharp = ndimage.zoom(np.random.default_rng(0).random((32, 32)), 4)
    >>> m = blur_map(sharp, ndimage.gaussian_filter(sharp, 2.0), tile=64)
    >>> m.sigma.shape, bool(np.allclose(m.sigma, 2.0, rtol=1e-3))
    ((3, 3, 2), True)
    """
    opts = FitOptions.from_kwargs("blur_map", options)
    opts.refuse("blur_map", "spatial_axes", why="a blur map is of one 2D or 3D image")
    opts.refuse("blur_map", "callback", why="pass callback= to blur_map itself")
    if grids_given(opts) and not same_grids(reference, target, opts):
        return _map_across_grids(reference, target, tile, overlap, halo, callback, opts)
    if grids_given(opts):  # equal grids: the map without them, which records them
        kwargs = opts.replace(reference_grid=None, target_grid=None).as_kwargs()
        del kwargs["callback"]  # refused above: the map's own is ``callback``
        plain = blur_map(reference, target, tile=tile, overlap=overlap, halo=halo, callback=callback,
                         **kwargs)
        d = len(plain.shape)
        return replace(plain, grids=dict(zip(("reference", "target"), grid_pair(opts, d))))
    ref, tgt = as_image_pair(reference, target)
    normalize_spatial_axes(None, ref.ndim, ref.shape, "reference")
    tiling = _tiling(ref.shape, tile, overlap, halo)
    tiles, halo, starts, grid = tiling.tiles, tiling.halo, tiling.starts, tiling.grid
    used = _used_pixels(opts, tuple(ref.shape))
    tile_options = opts.replace(mask=None, exclude_border=0, warn=False)
    flat_level = FLAT_CONTRAST * float(np.nanstd(np.asarray(ref[tuple(slice(None, None, max(1, n // 256))
                                                                      for n in ref.shape)],
                                                            dtype=np.float64)))
    jobs = _tile_jobs(starts, tiles, halo, ref.shape)
    if is_dask(ref) or is_dask(tgt):
        results = _fit_tiles_on_dask(ref, tgt, used, jobs, grid, halo, tile_options, flat_level)
    else:
        results = []
        for n, (outer, pad) in enumerate(jobs):
            if callback is not None:
                callback(f"tile {n + 1}/{len(jobs)}")
            results.append(_fit_tile(ref[outer], tgt[outer], None if used is None else used[outer],
                                     pad, halo, tile_options, flat_level))
    return _map_result(results, tiling, tuple(ref.shape), opts.warn)


class _Tiling(NamedTuple):
    """Tiles over an image: sizes, spacing, halo, corners per axis and the tile grid's shape."""

    tiles: tuple[int, ...]
    steps: tuple[int, ...]
    halo: int
    starts: list[list[int]]
    grid: tuple[int, ...]


def _tiling(shape, tile, overlap, halo) -> _Tiling:
    d = len(shape)
    tiles = tuple(int(t) for t in np.broadcast_to(tile, (d,)))
    if min(tiles) < 8:
        raise ValueError(f"tile must be at least 8 pixels, got {tile!r}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    tiles = tuple(min(t, n) for t, n in zip(tiles, shape))
    steps = tuple(max(1, int(round(t * (1 - overlap)))) for t in tiles)
    halo = max(0, int(min(tiles) // 4 if halo is None else halo))
    starts = [_starts(n, t, s) for n, t, s in zip(shape, tiles, steps)]
    return _Tiling(tiles, steps, halo, starts, tuple(len(s) for s in starts))


def _map_across_grids(reference, target, tile, overlap, halo, callback, opts: FitOptions) -> BlurMap:
    """`blur_map` with tiles on the grid the loss is measured on, each fitted across grids."""
    roles = Roles.of(opts.reverse)
    images = {"reference": np.asarray(as_image(reference, "reference")),
              "target": np.asarray(as_image(target, "target"))}
    for name, image in images.items():
        normalize_spatial_axes(None, image.ndim, image.shape, name)
    if images["reference"].ndim != images["target"].ndim:
        raise ValueError("reference and target must both be 2D or both 3D for a blur map")
    d = images["reference"].ndim
    grids = dict(zip(("reference", "target"), grid_pair(opts, d)))
    measured, source = images[roles.destination], images[roles.source]
    m_grid, s_grid = grids[roles.destination], grids[roles.source]
    tiling = _tiling(measured.shape, tile, overlap, halo)
    used = _used_pixels(opts, tuple(measured.shape))
    tile_options = opts.replace(mask=None, exclude_border=0, warn=False)
    results = []
    for n, corner in enumerate(itertools.product(*tiling.starts)):
        if callback is not None:
            callback(f"tile {n + 1}/{int(np.prod(tiling.grid))}")
        outer = tuple(slice(max(0, c - tiling.halo), min(k, c + t + tiling.halo))
                      for c, t, k in zip(corner, tiling.tiles, measured.shape))
        own = np.zeros([o.stop - o.start for o in outer], dtype=bool)
        own[tuple(slice(c - o.start, c - o.start + t) for c, o, t in zip(corner, outer, tiling.tiles))] = True
        if used is not None:
            own &= used[outer]
        sub_grid = Grid(m_grid.scale, np.array(m_grid.translate) + [o.start * s for o, s in
                                                                   zip(outer, m_grid.scale)],
                        m_grid.sampling)
        cut = _covering(s_grid, source.shape, sub_grid, own.shape, tiling.halo)
        if cut is None:
            results.append(_TileFit.failed(d, "outside"))
            continue
        source_grid = Grid(s_grid.scale, np.array(s_grid.translate) + [c.start * s for c, s in
                                                                      zip(cut, s_grid.scale)])
        results.append(_tile_across_grids(source[cut], measured[outer], own, source_grid, sub_grid,
                                          roles, tile_options))
    return _map_result(results, tiling, tuple(measured.shape), opts.warn, grids)


def _covering(source: Grid, shape, destination: Grid, d_shape, halo: int) -> tuple[slice, ...] | None:
    """The source pixels that cover a destination region, with ``halo`` destination pixels more."""
    lo, hi = destination.extent(d_shape)
    out = []
    for k in range(source.ndim):
        pad = halo * destination.scale[k]
        first = int(np.floor((lo[k] - pad - source.translate[k]) / source.scale[k] + 0.5))
        last = int(np.ceil((hi[k] + pad - source.translate[k]) / source.scale[k] - 0.5)) + 1
        first, last = max(0, first), min(shape[k], last)
        if last - first < 3:
            return None
        out.append(slice(first, last))
    return tuple(out)


def _tile_across_grids(source, measured, own, source_grid, measured_grid, roles, options) -> _TileFit:
    d = source.ndim
    if not own.any():
        return _TileFit.failed(d, "masked out")
    images = {roles.source: source, roles.destination: measured}
    grids = {roles.source: source_grid, roles.destination: measured_grid}
    try:
        fit = fit_blur(images["reference"], images["target"], **options.replace(
            mask=own, reference_grid=grids["reference"], target_grid=grids["target"]).as_kwargs())
    except (ValueError, TypeError) as err:
        outside = ("do not overlap", "overlap by only", "extent is left for the loss")
        if any(words in str(err) for words in outside):  # the tile's own pixels lie outside
            return _TileFit.failed(d, "outside")
        if "is constant" in str(err):
            return _TileFit.failed(d, "flat")
        return _TileFit.failed(d, f"failed: {err}")
    return _verdict(fit, d)


def _map_result(results, tiling: _Tiling, shape, warn: bool, grids=None) -> BlurMap:
    """The map from its tiles' answers (in tile-grid order), its findings warned with ``warn``."""
    d, grid = len(shape), tiling.grid
    findings = map_findings(results)
    if warn:
        for finding in findings:
            warnings.warn(finding.text, BlurFitWarning, stacklevel=3)
    centers = np.array([[c + t / 2 - 0.5 for c, t in zip(corner, tiling.tiles)]
                        for corner in itertools.product(*tiling.starts)]).reshape(*grid, d)
    return BlurMap(
        sigma=np.array([r.sigma for r in results]).reshape(*grid, d),
        sigma_stderr=np.array([r.stderr for r in results]).reshape(*grid, d),
        gain=np.array([r.gain for r in results], dtype=float).reshape(grid),
        offset=np.array([r.offset for r in results], dtype=float).reshape(grid),
        loss=np.array([r.loss for r in results], dtype=float).reshape(grid),
        reason=np.array([r.reason for r in results], dtype=object).reshape(grid).astype(str),
        centers=centers, tile=tiling.tiles, step=tiling.steps, shape=tuple(int(n) for n in shape),
        shift=np.array([r.shift for r in results]).reshape(*grid, d),
        covariance=np.array([r.covariance for r in results]).reshape(*grid, d, d),
        findings=findings, grids=grids,
    )


def _tile_jobs(starts, tiles, halo: int, shape) -> list[tuple[tuple[slice, ...], tuple]]:
    """Per tile in grid order: its region with the halo, and the padding where the image ends."""
    jobs = []
    for corner in itertools.product(*starts):
        outer = tuple(slice(max(0, c - halo), min(n, c + t + halo)) for c, t, n in zip(corner, tiles, shape))
        pad = tuple((halo - (c - o.start), c + t + halo - o.stop) for c, t, o in zip(corner, tiles, outer))
        jobs.append((outer, pad))
    return jobs


def _used_pixels(options: FitOptions, shape: tuple[int, ...]) -> np.ndarray | None:
    """The caller's mask and border band as one boolean image (None: every pixel counts)."""
    axes = tuple(range(len(shape)))
    used = None if options.mask is None else mask_frames(options.mask, shape, axes)
    border = border_tuple(options.exclude_border, shape)
    if any(border):
        band = np.zeros(shape, dtype=bool)
        band[tuple(slice(b, n - b) for b, n in zip(border, shape))] = True
        used = band if used is None else used & band
    return used


def map_findings(tiles) -> tuple[Finding, ...]:
    """What applies to the whole map: causes most tile fits share, and the tiles left out.

    A cause a tile fit reports (a brightness difference, a misalignment, a reference without
    detail at the blur's scale) that `MAP_SHARE` or more of the fitted tiles share is the map's;
    its values add the share of tiles, and a misalignment the median shift. The tiles that could
    not be measured are summed up by reason.
    """
    fitted = [t for t in tiles if np.isfinite(t.loss)]  # a fit ran (not flat, masked out, failed)
    found = []
    for code in MAP_CAUSES:
        having = [f for t in fitted for f in t.findings if f.code == code]
        if fitted and len(having) >= MAP_SHARE * len(fitted):
            first = having[0]
            values = {**first.values, "tiles": len(having), "of_tiles": len(fitted)}
            if "shift" in first.values:
                shifts = np.median([f.values["shift"] for f in having], axis=0)
                values["shift"] = tuple(float(v) for v in shifts)
            found.append(Finding(code, first.suggestion, values,
                                 f"in {len(having)} of {len(fitted)} tiles: {first.text}"))
    counts: dict[str, int] = {}
    for reason in (t.reason for t in tiles):
        if reason:
            key = "failed" if reason.startswith("failed") else reason
            counts[key] = counts.get(key, 0) + 1
    if counts:
        detail = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
        found.append(Finding("unmeasured_tiles", {}, {"reasons": dict(sorted(counts.items())),
                                                       "tiles": len(tiles)},
                             f"{sum(counts.values())} of {len(tiles)} tiles could not be measured "
                             f"(NaN in the map): {detail}"))
    return tuple(found)
