"""Turn what users pass into a checked pair of frame stacks, with errors that name the problem.

Inputs are never modified: anything filled or converted is a copy.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MIN_AXIS_LENGTH = 3


def is_dask(x) -> bool:
    """True for a dask array (without importing dask when it is not in use)."""
    return type(x).__module__.split(".")[0] == "dask" and hasattr(x, "dask")


def working_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """float32 for inputs exactly representable in it, float64 otherwise."""
    if dtype == np.bool_:
        raise TypeError(f"{name} has dtype bool; pass a numeric (intensity) image")
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{name} has complex dtype {dtype}; pass a real-valued image")
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise TypeError(f"{name} has dtype {dtype}; pass a numeric image")
    if dtype.itemsize <= 2 or dtype == np.float32:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def as_image(x, name: str):
    """A numpy or dask array from ``x``, checked for type and emptiness (not yet converted)."""
    if is_dask(x):
        arr = x
    else:
        if x is None or isinstance(x, (str, bytes, numbers.Number)):
            raise TypeError(f"{name} must be an image array, got {type(x).__name__}")
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as err:
            raise TypeError(f"{name} cannot be read as an array ({err})") from None
    working_dtype(np.dtype(arr.dtype), name)
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(arr.shape)})")
    return arr


def as_image_pair(reference, target):
    """Both inputs as arrays (`as_image`), checked to have the same shape."""
    ref, tgt = as_image(reference, "reference"), as_image(target, "target")
    if tuple(ref.shape) != tuple(tgt.shape):
        raise ValueError(
            "reference and target must have the same shape; got reference "
            f"{tuple(ref.shape)} and target {tuple(tgt.shape)}"
        )
    return ref, tgt


def normalize_spatial_axes(spatial_axes, ndim: int, shape, name: str) -> tuple[int, ...]:
    """Positive, sorted spatial axes; checks that the image is 2D/3D when they are not given."""
    if spatial_axes is None:
        if ndim not in (2, 3):
            hint = (" pass spatial_axes=(-2, -1) (or three axes) to treat the others as frames"
                    if ndim > 3 else "")
            raise ValueError(
                f"{name} must be a 2D or 3D image; got a {ndim}-D array of shape {tuple(shape)}"
                + (";" + hint if hint else "")
            )
        if ndim == 3 and shape[-1] in (3, 4) and min(shape[:2]) > 4 * shape[-1]:
            raise ValueError(
                f"{name} looks like an RGB(A) image: its last axis has {shape[-1]} entries "
                f"(shape {tuple(shape)}). Convert it to grayscale, pass spatial_axes=(0, 1) to fit "
                "one sigma over the channels, or spatial_axes=(0, 1, 2) if it is a volume"
            )
        return tuple(range(ndim))
    try:
        axes = [int(a) for a in spatial_axes]
    except TypeError:
        raise TypeError(f"spatial_axes must be a sequence of 2 or 3 ints, got {spatial_axes!r}") from None
    if len(axes) not in (2, 3):
        raise ValueError(f"spatial_axes must name 2 or 3 axes, got {tuple(axes)}")
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"spatial_axes {tuple(axes)} out of range for a {ndim}-D {name}")
    positive = sorted(a % ndim for a in axes)
    if len(set(positive)) != len(positive):
        raise ValueError(f"spatial_axes {tuple(axes)} repeats an axis")
    return tuple(positive)


def fill_nonfinite(ref: np.ndarray, tgt: np.ndarray):
    """Copies of ``ref``/``tgt`` with NaN/inf replaced by the nearest finite pixel.

    Returns ``(ref, tgt, finite, count)``; ``finite`` is None when every pixel is finite. Filled
    pixels are excluded from the loss by the caller; the fill only keeps the blur well defined.
    """
    # fast path: a sum is finite when every pixel is (an overflowing sum of huge but finite
    # values only sends us down the full check)
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(ref.sum()) and np.isfinite(tgt.sum()):
            return ref, tgt, None, 0
    finite = np.isfinite(ref) & np.isfinite(tgt)
    count = int(finite.size - np.count_nonzero(finite))
    if count == 0:
        return ref, tgt, None, 0
    if count == finite.size:
        raise ValueError("no pixel is finite in both reference and target (all NaN/inf)")
    out = []
    for arr in (ref, tgt):
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
            arr = arr[tuple(idx)]
        out.append(arr)
    return out[0], out[1], finite, count


@dataclass
class Pair:
    """Reference and target as frame stacks: frames on leading axes, spatial axes last.

    ``used`` is a boolean array broadcastable to the stack (True: pixel counts in the loss), or
    None when every pixel counts. ``spatial_axes`` are the axes of the caller's arrays.
    """

    reference: object
    target: object
    used: np.ndarray | None
    spatial_axes: tuple[int, ...]
    input_shape: tuple[int, ...]
    n_nonfinite: int
    dask: bool

    @property
    def ndim(self) -> int:
        return len(self.spatial_axes)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.input_shape[a] for a in self.spatial_axes)

    @property
    def n_pixels(self) -> int:
        """Pixels that count in the loss."""
        total = int(np.prod(self.input_shape))
        if self.used is None:
            return total
        return int(np.count_nonzero(np.broadcast_to(self.used, self.reference.shape)))


def _to_frames(arr, spatial_axes):
    """Move spatial axes last (a view for numpy, lazy for dask)."""
    dest = tuple(range(arr.ndim - len(spatial_axes), arr.ndim))
    if is_dask(arr):
        import dask.array as da

        return da.moveaxis(arr, spatial_axes, dest)
    return np.moveaxis(arr, spatial_axes, dest)


def border_tuple(exclude_border, spatial_shape) -> tuple[int, ...]:
    d = len(spatial_shape)
    if np.ndim(exclude_border) == 0:
        values = [exclude_border] * d
    else:
        values = list(exclude_border)
        if len(values) != d:
            raise ValueError(f"exclude_border needs 1 or {d} values, got {len(values)}")
    out = []
    for axis, (b, n) in enumerate(zip(values, spatial_shape)):
        if not isinstance(b, numbers.Integral) or b < 0:
            raise ValueError(f"exclude_border must be non-negative integers, got {exclude_border!r}")
        if 2 * b >= n:
            raise ValueError(
                f"exclude_border={b} leaves no pixels along spatial axis {axis} (length {n})"
            )
        out.append(int(b))
    return tuple(out)


def mask_frames(mask, input_shape, spatial_axes) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        if not np.issubdtype(m.dtype, np.number) or not np.isin(m, (0, 1)).all():
            raise TypeError(f"mask must be a boolean array (True where a pixel counts), got dtype {m.dtype}")
        m = m.astype(bool)
    spatial_shape = tuple(input_shape[a] for a in spatial_axes)
    if m.shape == tuple(input_shape):
        return np.moveaxis(m, spatial_axes, range(m.ndim - len(spatial_axes), m.ndim))
    if m.shape == spatial_shape:
        return m
    raise ValueError(
        f"mask has shape {m.shape}; it must match the images {tuple(input_shape)}"
        + (f" or their spatial shape {spatial_shape}" if spatial_shape != tuple(input_shape) else "")
    )


def prepare_pair(reference, target, *, spatial_axes=None, mask=None, exclude_border=0,
                 check_finite=True) -> Pair:
    """Check and convert the inputs of a fit (see `napari_blurfit.fit_blur`).

    With ``check_finite=False`` in-memory pixels are not checked for NaN/inf (a pass over both
    images): for callers that detect them afterwards, from non-finite statistics.
    """
    ref, tgt = as_image_pair(reference, target)
    shape = tuple(int(n) for n in ref.shape)
    axes = normalize_spatial_axes(spatial_axes, ref.ndim, shape, "reference")
    for a in axes:
        if shape[a] < MIN_AXIS_LENGTH:
            raise ValueError(
                f"reference and target have only {shape[a]} pixel(s) along axis {a}; every spatial "
                f"axis needs at least {MIN_AXIS_LENGTH}"
            )
    dtype = np.promote_types(working_dtype(np.dtype(ref.dtype), "reference"),
                             working_dtype(np.dtype(tgt.dtype), "target"))
    dask = is_dask(ref) or is_dask(tgt)
    ref, tgt = _to_frames(ref, axes), _to_frames(tgt, axes)
    border = border_tuple(exclude_border, tuple(shape[a] for a in axes))
    used = None if mask is None else mask_frames(mask, shape, axes)
    if any(border):
        interior = np.zeros(ref.shape[ref.ndim - len(axes):], dtype=bool)
        interior[tuple(slice(b, n - b) for b, n in zip(border, interior.shape))] = True
        used = interior if used is None else used & interior
    n_nonfinite = 0
    if dask:
        import dask.array as da

        ref = da.asarray(ref).astype(dtype)
        tgt = da.asarray(tgt).astype(dtype)
    else:
        ref = np.asarray(ref, dtype=dtype)
        tgt = np.asarray(tgt, dtype=dtype)
        if check_finite:
            ref, tgt, finite, n_nonfinite = fill_nonfinite(ref, tgt)
            if finite is not None:
                used = finite if used is None else used & finite
    if used is not None and not used.any():
        raise ValueError("mask selects no pixels" if mask is not None and not np.any(mask)
                         else "no pixel is left for the loss after the mask, border and NaN exclusion")
    return Pair(ref, tgt, used, axes, shape, n_nonfinite, dask)
