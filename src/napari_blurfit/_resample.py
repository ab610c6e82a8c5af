"""Sampling one pixel grid from another: per-axis weight matrices (docs/design.md section 18).

Axis-aligned grids make the resampling separable: along each axis a sparse matrix ``W`` takes
the source's pixels to the destination's, and the destination image is ``W_0 ... W_{d-1}``
applied to the source. A destination pixel's row holds, for ``"area"`` sampling, the fraction
of each source pixel inside its footprint divided by the footprint's length (the mean over the
footprint); for ``"point"`` sampling the linear-interpolation weights at its centre, the source
extended by reflection (index ``-1`` is pixel 0, as `scipy.ndimage`'s ``mode="reflect"``).
Only destination pixels whose footprint lies inside the source's extent get a row.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import sparse

from .grids import Grid

EDGE_TOLERANCE = 1e-9  # in source pixels: a footprint edge this close to the extent's is inside


class AxisSampling(NamedTuple):
    """How one axis of the destination samples the source.

    ``weights`` has a row per destination pixel in ``inside`` (a contiguous range: those whose
    footprint lies inside the source's extent) and a column per source pixel.
    """

    weights: sparse.csr_matrix
    inside: slice

    @property
    def columns(self) -> tuple[int, int]:
        """The range of source pixels any row reads."""
        used = np.flatnonzero(np.diff(self.weights.tocsc().indptr))
        return int(used[0]), int(used[-1]) + 1


def axis_sampling(source: Grid, n_source: int, destination: Grid, n_destination: int,
                  axis: int) -> AxisSampling | None:
    """The weights of ``axis``, or None when no destination pixel lies inside the source's extent."""
    s_scale, s_origin = source.scale[axis], source.translate[axis]
    d_scale, d_origin = destination.scale[axis], destination.translate[axis]
    centres = (d_origin + np.arange(n_destination) * d_scale - s_origin) / s_scale  # source px
    half = 0.5 * d_scale / s_scale
    low, high = centres - half, centres + half
    inside = np.flatnonzero((low >= -0.5 - EDGE_TOLERANCE) & (high <= n_source - 0.5 + EDGE_TOLERANCE))
    if inside.size == 0:
        return None
    rows = slice(int(inside[0]), int(inside[-1]) + 1)
    if destination.sampling == "area":
        weights = _area_weights(low[rows], high[rows], n_source)
    else:
        weights = _point_weights(centres[rows], n_source)
    return AxisSampling(weights, rows)


def _area_weights(low: np.ndarray, high: np.ndarray, n_source: int) -> sparse.csr_matrix:
    """Each footprint ``[low, high]`` (source px) as the share of every source pixel inside it."""
    first = np.clip(np.floor(low + 0.5).astype(np.int64), 0, n_source - 1)
    span = int(np.max(np.ceil(high + 0.5) - first)) + 1
    rows, cols, vals = [], [], []
    for k in range(span):
        col = first + k
        overlap = np.minimum(high, col + 0.5) - np.maximum(low, col - 0.5)
        keep = (overlap > EDGE_TOLERANCE) & (col < n_source)
        rows.append(np.flatnonzero(keep))
        cols.append(col[keep])
        vals.append(overlap[keep] / (high - low)[keep])
    return _matrix(rows, cols, vals, (len(low), n_source))


def _point_weights(centres: np.ndarray, n_source: int) -> sparse.csr_matrix:
    """Linear interpolation at ``centres`` (source px), reflected at the edges."""
    left = np.floor(centres).astype(np.int64)
    frac = centres - left
    index = np.arange(len(centres))
    rows = [index, index]
    cols = [np.clip(left, 0, n_source - 1), np.clip(left + 1, 0, n_source - 1)]
    return _matrix(rows, cols, [1.0 - frac, frac], (len(centres), n_source))


def _matrix(rows, cols, vals, shape) -> sparse.csr_matrix:
    """A CSR matrix from triplets (duplicates summed: reflected interpolation weights)."""
    matrix = sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                               shape=shape).tocsr()
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix


def resample(image: np.ndarray, weights, first_axis: int) -> np.ndarray:
    """``image`` with each ``weights[k]`` applied along axis ``first_axis + k`` (float64)."""
    out = np.asarray(image, dtype=np.float64)
    for k, matrix in enumerate(weights):
        axis = first_axis + k
        moved = np.moveaxis(out, axis, 0)
        flat = np.ascontiguousarray(moved).reshape(moved.shape[0], -1)
        out = np.moveaxis((matrix @ flat).reshape((matrix.shape[0],) + moved.shape[1:]), 0, axis)
    return out
