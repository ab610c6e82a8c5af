"""`blur_map`: sigma fitted on overlapping tiles, for blur that changes across the field of view.

Each tile is fitted with some real image context around it (the halo): the blur is computed with
that context and only the tile's own pixels count in the loss, so tile edges are not biased by an
artificial boundary. Tiles where sigma cannot be measured are NaN with a reason, never noise.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import interpolate, ndimage

from ._validate import as_image_pair, is_dask, normalize_spatial_axes
from .fit import fit_blur

FLAT_CONTRAST = 1e-3  # a tile whose reference std is below this fraction of the image's is flat
TILES_PER_TASK = 4  # per axis: on dask, one task fits a block of up to 4 x 4 (x 4) tiles,
MIN_BLOCKS = 8  # as long as at least this many blocks along each axis remain to spread over workers


@dataclass(frozen=True)
class BlurMap:
    """Sigma per tile.

    Attributes
    ----------
    sigma : ndarray, shape (*grid, d)
        Sigma per tile and spatial axis in pixels; NaN where not measurable.
    sigma_stderr, gain, offset, loss : ndarray
        Per tile (``sigma_stderr`` with a last axis of d); NaN where not measurable.
    reason : ndarray of str, shape grid
        ``""`` for a good tile, otherwise why it is NaN ("flat", "not identifiable", ...).
    centers : ndarray, shape (*grid, d)
        Tile centres in pixel coordinates of the image.
    tile, step : tuple of int
        Tile size and spacing per axis.
    shape : tuple of int
        The image's shape.
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
                "tile": list(self.tile), "step": list(self.step), "shape": list(self.shape)}


def _starts(n: int, tile: int, step: int) -> list[int]:
    if tile >= n:
        return [0]
    starts = list(range(0, n - tile + 1, step))
    if starts[-1] != n - tile:
        starts.append(n - tile)
    return starts


def _fit_tile(a, b, pad, halo, options, flat_level):
    """Fit one tile with its halo; returns (sigma, stderr, gain, offset, loss, reason).

    ``pad`` completes the halo where the tile meets the image edge by mirroring, which is what
    scipy's reflect mode sees there, so every tile has a full halo and the border band that is
    excluded from the loss is the same on all sides.
    """
    a = np.pad(np.asarray(a, dtype=np.float64), pad, mode="symmetric")
    b = np.pad(np.asarray(b, dtype=np.float64), pad, mode="symmetric")
    d = a.ndim
    nan = np.full(d, np.nan)
    inner = a[tuple(slice(halo, n - halo) for n in a.shape)]
    if not np.isfinite(inner).any() or np.nanstd(inner) <= flat_level:
        return nan, nan, np.nan, np.nan, np.nan, "flat"
    try:
        fit = fit_blur(a, b, exclude_border=halo, warn=False, **options)
    except (ValueError, TypeError) as err:
        return nan, nan, np.nan, np.nan, np.nan, f"failed: {err}"
    if not fit.identifiable:
        reason = "not identifiable"
    elif fit.target_sharper:
        reason = "target sharper"
    elif fit.at_bound:
        reason = "at bound"
    else:
        reason = ""
    sigma = nan if reason else np.array(fit.sigma)
    se = nan if reason else np.array(fit.sigma_stderr)
    return sigma, se, fit.gain, fit.offset, fit.loss, reason


def _fit_tiles(a, b, jobs, halo, options, flat_level) -> list:
    """`_fit_tile` for several tiles cut from one region (``jobs`` relative to it)."""
    return [_fit_tile(a[outer], b[outer], pad, halo, options, flat_level) for outer, pad in jobs]


def _fit_tiles_on_dask(ref, tgt, jobs, grid, halo, options, flat_level) -> list:
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
        tasks.append(dask.delayed(_fit_tiles)(ref[region], tgt[region], local, halo, options,
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
        Passed to `napari_blurfit.fit_blur` per tile (``loss``, ``per_axis``, ``gain_offset``,
        ``sigma_bounds``, ...).

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
    ref, tgt = as_image_pair(reference, target)
    normalize_spatial_axes(None, ref.ndim, ref.shape, "reference")
    d = ref.ndim
    tiles = tuple(int(t) for t in np.broadcast_to(tile, (d,)))
    if min(tiles) < 8:
        raise ValueError(f"tile must be at least 8 pixels, got {tile!r}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    tiles = tuple(min(t, n) for t, n in zip(tiles, ref.shape))
    steps = tuple(max(1, int(round(t * (1 - overlap)))) for t in tiles)
    halo = max(0, int(min(tiles) // 4 if halo is None else halo))
    starts = [_starts(n, t, s) for n, t, s in zip(ref.shape, tiles, steps)]
    grid = tuple(len(s) for s in starts)
    flat_level = FLAT_CONTRAST * float(np.nanstd(np.asarray(ref[tuple(slice(None, None, max(1, n // 256))
                                                                      for n in ref.shape)],
                                                            dtype=np.float64)))
    jobs = []
    for corner in itertools.product(*starts):
        outer = tuple(slice(max(0, c - halo), min(n, c + t + halo))
                      for c, t, n in zip(corner, tiles, ref.shape))
        pad = tuple((halo - (c - o.start), c + t + halo - o.stop)
                    for c, t, o in zip(corner, tiles, outer))
        jobs.append((outer, pad))
    options = {k: v for k, v in options.items() if k not in ("warn", "mask", "exclude_border")}
    if is_dask(ref) or is_dask(tgt):
        results = _fit_tiles_on_dask(ref, tgt, jobs, grid, halo, options, flat_level)
    else:
        results = []
        for n, (outer, pad) in enumerate(jobs):
            if callback is not None:
                callback(f"tile {n + 1}/{len(jobs)}")
            results.append(_fit_tile(ref[outer], tgt[outer], pad, halo, options, flat_level))
    sigma = np.array([r[0] for r in results]).reshape(*grid, d)
    centers = np.array([[c + t / 2 - 0.5 for c, t in zip(corner, tiles)]
                        for corner in itertools.product(*starts)]).reshape(*grid, d)
    return BlurMap(
        sigma=sigma,
        sigma_stderr=np.array([r[1] for r in results]).reshape(*grid, d),
        gain=np.array([r[2] for r in results], dtype=float).reshape(grid),
        offset=np.array([r[3] for r in results], dtype=float).reshape(grid),
        loss=np.array([r[4] for r in results], dtype=float).reshape(grid),
        reason=np.array([r[5] for r in results], dtype=object).reshape(grid).astype(str),
        centers=centers, tile=tiles, step=steps, shape=tuple(int(n) for n in ref.shape),
    )
