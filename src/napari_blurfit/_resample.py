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


def resample(image: np.ndarray, weights, first_axis: int, dtype=np.float64) -> np.ndarray:
    """``image`` with each ``weights[k]`` applied along axis ``first_axis + k``, as float64.

    ``dtype``: of the arithmetic. float32 (for large images, where a float32 model is resampled)
    halves the memory traffic and makes no float64 copy of the source; a destination pixel sums
    two or three source pixels, well inside float32's precision.
    """
    out = np.asarray(image, dtype=dtype)
    for k, matrix in enumerate(weights):
        out = _along(out, matrix.astype(dtype, copy=False), first_axis + k)
    return np.asarray(out, dtype=np.float64)


def _along(image: np.ndarray, matrix: sparse.csr_matrix, axis: int) -> np.ndarray:
    """``matrix`` applied along ``axis`` in ``image``'s dtype.

    Along the last axis, where every row reads a run of adjacent columns (area and point weights
    do), as a few weighted gathers: a C-ordered result, the sums in a sparse product's order.
    Along any other axis (and the last, otherwise) as sparse products that read its rows whole.
    """
    band = _band(matrix) if axis == image.ndim - 1 else None
    if band is None:
        if axis < image.ndim - 1:
            return product_along(image, matrix, axis)
        flat = image.reshape(-1, image.shape[-1])
        return (matrix @ flat.T).T.reshape(image.shape[:-1] + (matrix.shape[0],))
    out = None
    for columns, values in band:
        term = np.take(image, columns, axis=axis)
        term *= values.astype(image.dtype)
        out = term if out is None else np.add(out, term, out=out)
    return out


def _band(matrix: sparse.csr_matrix) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """``matrix``'s rows as ``(column, weight)`` per place in a run of adjacent columns.

    None when a row is empty or its columns are not adjacent. Rows shorter than the longest
    repeat their first column with weight 0.
    """
    m = sparse.csr_matrix(matrix)
    if not m.has_sorted_indices:
        m = m.sorted_indices()
    starts, counts = m.indptr[:-1], np.diff(m.indptr)
    if m.nnz == 0 or counts.min() == 0:
        return None
    first = m.indices[starts]
    place = np.arange(m.nnz) - np.repeat(starts, counts)
    if np.any(m.indices != np.repeat(first, counts) + place):
        return None
    band = []
    for k in range(int(counts.max())):
        has = counts > k
        at = np.minimum(starts + k, m.nnz - 1)
        band.append((np.where(has, first + k, first), np.where(has, m.data[at], 0.0)))
    return band


def reflect_convolution(factor: np.ndarray, n: int) -> sparse.csr_matrix:
    """``scipy.ndimage.convolve1d(x, factor, mode="reflect")`` on lines of length ``n``, as a matrix.

    ``factor`` has odd length, centred; taps beyond an end fold back (``-1`` is pixel 0, with
    period ``2 n``) and are summed.
    """
    radius = len(factor) // 2
    rows = np.repeat(np.arange(n), len(factor))
    cols = np.mod(rows - np.tile(np.arange(-radius, radius + 1), n), 2 * n)
    cols = np.where(cols >= n, 2 * n - 1 - cols, cols)
    return sparse.csr_matrix((np.tile(np.asarray(factor, dtype=np.float64), n), (rows, cols)),
                             shape=(n, n))


def product_along(image: np.ndarray, matrix: sparse.csr_matrix, axis: int,
                  block: int = 2**20) -> np.ndarray:
    """``matrix`` applied along ``axis`` of ``image`` (a view will do), without transposes.

    Sparse products per index of the axes before ``axis``, each over the columns of at most
    ``block`` elements that it reads whole along ``axis`` (a sparse product copies a view it
    is given: a block at a time, the copies stay small). The result has the dtype of
    ``matrix`` times ``image``.
    """
    out = np.empty(image.shape[:axis] + (matrix.shape[0],) + image.shape[axis + 1:],
                   dtype=np.result_type(image.dtype, matrix.dtype))
    for index in np.ndindex(image.shape[:axis]):
        lines, into = image[index], out[index]
        lines, into = lines.reshape(lines.shape[0], -1), into.reshape(into.shape[0], -1)
        width = max(1, block // lines.shape[0])
        for start in range(0, lines.shape[1], width):
            into[:, start:start + width] = matrix @ lines[:, start:start + width]
    return out
