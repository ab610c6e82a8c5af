"""Inputs of the whole-Gaussian fit as frame stacks, central crops, and the shift estimate.

The shift's start value is a plain (not whitened) cross-correlation of Hann-windowed,
mean-removed images: on blurred pairs whitened phase correlation is 0.1-0.2 px off (it weights the
frequencies the blur removed), and without the window the crop's shared border pulls the estimate
towards 0 (docs/design.md, "The whole Gaussian").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._transforms import fftfreq, irfftn, rfftn

MIN_SIZE = 8  # below this a shift cannot be told from a blur


class Frames(NamedTuple):
    """Inputs as frames-first float arrays with the spatial axes last."""

    reference: np.ndarray
    target: np.ndarray
    used: np.ndarray | None  # bool, target's shape; None: every pixel counts


def as_frames(reference, target, used, d: int) -> Frames:
    ref = np.asarray(reference)
    tgt = np.asarray(target)
    if ref.shape != tgt.shape or ref.ndim < d:
        raise ValueError(f"reference and target must have the same shape with {d} spatial axes last; "
                         f"got {ref.shape} and {tgt.shape}")
    spatial = ref.shape[ref.ndim - d :]
    if min(spatial) < MIN_SIZE:
        raise ValueError(f"every spatial axis needs at least {MIN_SIZE} pixels to fit a shift and a "
                         f"covariance; got spatial shape {spatial}")
    ref = ref.reshape((-1, *spatial))
    if ref.dtype not in (np.float32, np.float64):
        ref = ref.astype(np.float64)
    tgt = tgt.reshape((-1, *spatial))
    if tgt.dtype not in (np.float32, np.float64):
        tgt = tgt.astype(np.float64)
    mask = None if used is None else np.broadcast_to(np.asarray(used, dtype=bool), tgt.shape)
    finite = np.isfinite(ref) & np.isfinite(tgt)
    if not finite.all():  # NaN/inf pixels: left out of the loss, filled so the FFTs stay finite
        mask = finite if mask is None else mask & finite
        ref = np.where(np.isfinite(ref), ref, np.nanmean(np.where(np.isfinite(ref), ref, np.nan)))
        tgt = np.where(finite, tgt, 0.0)
    if mask is not None and not mask.any():
        raise ValueError("no pixel is used: the mask, border band and NaN pixels exclude them all")
    return Frames(ref, tgt, None if mask is None or mask.all() else np.ascontiguousarray(mask))


def central(frames: Frames, edge, max_frames: int, band=None) -> Frames:
    """A central crop of at most ``edge`` pixels per spatial axis, on a few evenly spaced frames.

    ``edge``: one edge for every axis, or one per spatial axis. ``band``: per axis, the pixels
    left out of the loss along each face the crop cut (`cut_band`).
    """
    spatial = frames.reference.shape[1:]
    edges = np.broadcast_to(edge, len(spatial))
    pick = np.unique(np.linspace(0, len(frames.reference) - 1, max_frames).round().astype(int))
    box = (pick,) + tuple(slice((n - min(n, e)) // 2, (n - min(n, e)) // 2 + min(n, e))
                          for n, e in zip(spatial, edges))

    def cut(a):
        return None if a is None else np.ascontiguousarray(a[box])

    used = cut(frames.used)
    if band is not None:
        used = cut_band(used, (len(pick), *(b.stop - b.start for b in box[1:])), spatial, band)
    return Frames(cut(frames.reference), cut(frames.target), None if used is None or used.all() else used)


def cut_band(used: np.ndarray | None, shape, spatial, band) -> np.ndarray:
    """``used`` (or all True) without a band of ``band[i]`` px along the faces of a cut axis.

    A crop's target near a face it cut was blurred from pixels outside the crop, which a model
    reflecting the crop cannot see: counted, they bias the fit (a centred pair read as shifted by
    0.7 px at sigma 6 on a 128 px crop; sigma 6 read as 6.36 on a crop of a bead slide).
    """
    keep = np.ones(shape, dtype=bool) if used is None else used.copy()
    d = len(spatial)
    for axis, (n, full, r) in enumerate(zip(shape[-d:], spatial, band)):
        if n < full and r > 0:
            index = [slice(None)] * len(shape)
            index[len(shape) - d + axis] = np.r_[0:r, n - r : n]
            keep[tuple(index)] = False
    return keep


def estimate_shift(reference, target, *, ndim: int | None = None, max_pixels: int = 2**18) -> np.ndarray:
    """Shift (px) that moves ``reference`` onto ``target``, from a windowed cross-correlation.

    Plain (not whitened) cross-correlation of Hann-windowed, mean-removed central crops (at most
    ``max_pixels`` per frame; frames on leading axes are summed), refined to 0.01 px by evaluating
    the correlation's trigonometric interpolant on two finer grids around the peak (a matrix DFT).
    The sign follows `scipy.ndimage.shift`: ``target ~ shift(reference, result)``.

    Parameters
    ----------
    reference, target : array_like
        Same shape; the last ``ndim`` axes are spatial.
    ndim : int, optional
        Number of spatial axes (default: all).
    max_pixels : int
        Largest crop per frame.

    Returns
    -------
    ndarray
        One shift per spatial axis, in pixels.
    """
    d = np.ndim(reference) if ndim is None else ndim
    edge = max(MIN_SIZE, int(max_pixels ** (1.0 / d)))
    crop = as_frames(*raw_crop(reference, target, d, edge, None), None, d)  # crop first, then convert
    axes = tuple(range(1, d + 1))
    window = np.ones(())
    for n in crop.reference.shape[1:]:
        window = np.multiply.outer(window, np.hanning(n))
    a = (crop.reference - crop.reference.mean(axis=axes, keepdims=True)) * window
    b = (crop.target - crop.target.mean(axis=axes, keepdims=True)) * window
    shape = crop.reference.shape[1:]
    # real transforms: the correlation is real, its spectrum Hermitian (half the work)
    power = (rfftn(b, shape, axes) * np.conj(rfftn(a, shape, axes))).sum(0)
    xc = irfftn(power, shape, tuple(range(d)))
    peak = np.array(np.unravel_index(np.argmax(xc), xc.shape), dtype=np.float64)
    sizes = np.array(xc.shape)
    peak = np.where(peak > sizes // 2, peak - sizes, peak)
    for step in (0.1, 0.01):
        peak = _refine_peak(power, shape, peak, step)
    return peak


def _refine_peak(power: np.ndarray, shape, centre: np.ndarray, step: float, half: int = 15) -> np.ndarray:
    """Arg-max of the correlation's interpolant on a grid ``centre + step * (-half..half)`` per axis.

    ``power``: the correlation's half spectrum (`rfftn` of a ``shape`` image). A real signal's
    interpolant is the real part of the sum over the half, each frequency but the zero and the
    Nyquist one counted twice (for its mirror).
    """
    values = power
    for axis, n in enumerate(shape):
        s = centre[axis] + step * np.arange(-half, half + 1)
        if axis < len(shape) - 1:
            e = np.exp(2j * np.pi * np.outer(s, fftfreq(n)))
        else:
            k = np.arange(n // 2 + 1)
            twice = np.where((k == 0) | (2 * k == n), 1.0, 2.0)
            e = twice * np.exp(2j * np.pi * np.outer(s, k / n))
        moved = np.einsum("pq,q...->p...", e, np.moveaxis(values, axis, 0))  # einsum: no BLAS threads
        values = np.moveaxis(moved, 0, axis)
    best = np.unravel_index(np.argmax(values.real), values.shape)
    return centre + step * (np.array(best) - half)


def raw_crop(reference, target, d: int, edge,
             max_frames: int | None = 2) -> tuple[np.ndarray, np.ndarray]:
    """Central crop of ``max_frames`` frames at most (None: all), before any conversion.

    ``edge``: one edge for every spatial axis, or one per axis.
    """
    ref, tgt = np.asarray(reference), np.asarray(target)
    if ref.shape != tgt.shape or ref.ndim < d:
        raise ValueError(f"reference and target must have the same shape with {d} spatial axes last; "
                         f"got {ref.shape} and {tgt.shape}")
    spatial = ref.shape[ref.ndim - d :]
    ref, tgt = ref.reshape((-1, *spatial)), tgt.reshape((-1, *spatial))
    edges = np.broadcast_to(edge, d)
    pick = np.unique(np.linspace(0, len(ref) - 1, max_frames or len(ref)).round().astype(int))
    box = (pick,) + tuple(slice((n - min(n, e)) // 2, (n - min(n, e)) // 2 + min(n, e))
                          for n, e in zip(spatial, edges))
    return ref[box], tgt[box]


