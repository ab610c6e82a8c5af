"""Every FFT and DCT of the package, in one place.

The fitting code calls only these functions, never an FFT library: this is the seam another
backend (CuPy on a GPU, say) plugs into. ducc0 (the successor of the pocketfft inside
`scipy.fft`) runs the large transforms, about 1.5x faster here, and can write into a given buffer;
small one-off transforms go through `scipy.fft`.

``workers`` follows `scipy.fft`: None is one thread, -1 all cores, -2 all but one.
"""

from __future__ import annotations

import os

import ducc0
import numpy as np
from scipy import fft as sfft
from scipy import signal

__all__ = [
    "HalfSpectrum", "c2c", "c2r", "c2r_at", "convolve_valid", "fft", "fftfreq", "fftn", "frame_dct",
    "frame_idct", "ifftn", "irfftn", "next_fast_len", "r2c", "rfft", "rfftn", "threads",
]


def threads(workers: int | None) -> int:
    """Thread count for ``workers`` as `scipy.fft` reads it (None: 1; -1: all cores, -2: all but one)."""
    if workers is None:
        return 1
    if workers < 0:
        return max(1, (os.cpu_count() or 1) + 1 + workers)
    return max(1, workers)


def next_fast_len(n: int, *, real: bool = True) -> int:
    """The smallest length ``>= n`` the FFTs handle quickly."""
    return sfft.next_fast_len(n, real=real)


# orthonormal DCTs over the last axes ---------------------------------------------------------------
def frame_dct(frames: np.ndarray, ndim: int, *, workers: int | None = None,
              out: np.ndarray | None = None) -> np.ndarray:
    """Orthonormal DCT-II over the last ``ndim`` axes (the spatial ones), into ``out`` if given."""
    axes = tuple(range(frames.ndim - ndim, frames.ndim))
    return ducc0.fft.dct(frames, 2, axes=axes, inorm=1, out=out, nthreads=threads(workers))


def frame_idct(coefs: np.ndarray, ndim: int, *, workers: int | None = None,
               overwrite: bool = False) -> np.ndarray:
    """Inverse of `frame_dct` (``overwrite`` lets it reuse ``coefs``' memory)."""
    axes = tuple(range(coefs.ndim - ndim, coefs.ndim))
    out = coefs if overwrite and coefs.flags.writeable else None
    return ducc0.fft.dct(coefs, 3, axes=axes, inorm=1, out=out, nthreads=threads(workers))


# real and complex FFTs into buffers ----------------------------------------------------------------
def r2c(a: np.ndarray, axes: tuple[int, ...], *, workers: int | None = None,
        out: np.ndarray | None = None) -> np.ndarray:
    """Forward real-to-complex FFT over ``axes`` (the last one halved), into ``out`` if given."""
    return ducc0.fft.r2c(a, axes=axes, out=out, nthreads=threads(workers))


def c2c(a: np.ndarray, axes: tuple[int, ...], *, workers: int | None = None,
        out: np.ndarray | None = None) -> np.ndarray:
    """Forward complex FFT over ``axes``, into ``out`` if given (``out`` may be ``a``)."""
    return ducc0.fft.c2c(a, axes=axes, out=out, nthreads=threads(workers))


def c2r_at(a: np.ndarray, picks: list[np.ndarray], lastsize: int, *,
           workers: int | None = None) -> np.ndarray:
    """`c2r` over every axis of ``a`` read only at ``picks[i]`` along axis ``i`` (a pruned inverse).

    Axis by axis, each complex one transformed in place and cut to its picks before the next,
    the one cut most first: where few outputs are read (a kernel's lags on an image's grid), the
    later axes transform a fraction of the lines, and the copies stay small. In 3D, about a
    third of a full inverse. ``a`` is overwritten.
    """
    nthreads = threads(workers)
    for axis in sorted(range(a.ndim - 1), key=lambda k: len(picks[k]) / a.shape[k]):
        a = ducc0.fft.c2c(a, axes=(axis,), forward=False, inorm=2, out=a, nthreads=nthreads)
        a = np.take(a, picks[axis], axis=axis)
    last = ducc0.fft.c2r(a, axes=(a.ndim - 1,), lastsize=lastsize, forward=False, inorm=2,
                         nthreads=nthreads, allow_overwriting_input=True)
    return np.take(last, picks[-1], axis=a.ndim - 1)


def c2r(a: np.ndarray, axes: tuple[int, ...], lastsize: int, *, workers: int | None = None,
        out: np.ndarray | None = None) -> np.ndarray:
    """Normalised inverse of `r2c` (``lastsize``: the real length of the last axis).

    ``a`` may be overwritten: callers pass a spectrum they no longer need.
    """
    return ducc0.fft.c2r(a, axes=axes, lastsize=lastsize, forward=False, inorm=2, out=out,
                         nthreads=threads(workers), allow_overwriting_input=True)


class HalfSpectrum:
    """The real FFT of ``a`` over its last ``ndim`` axes, made once, read at subgrids of frequencies.

    Half a complex FFT's work, multithreaded; the frequencies past the last axis's half are read
    as ``X[k] = conj(X[-k])``. ``shape``: ``a``'s. With ``step`` (dividing every spatial axis)
    only every ``step``-th frequency per axis is kept, from the transform of ``a`` `folded`: a
    transform ``step**ndim`` times smaller (in 3D, 8 ms where the whole took 57 ms); subgrids
    read from it must step by multiples of it.
    """

    def __init__(self, a: np.ndarray, ndim: int, *, step: int = 1, workers: int | None = -1):
        a = np.asarray(a)
        self.shape, self.spatial, self.step = a.shape, a.shape[a.ndim - ndim:], step
        source = folded(a, ndim, step) if step > 1 else a
        self.half = r2c(source, tuple(range(a.ndim - ndim, a.ndim)), workers=workers)

    def picked(self, picked: tuple[slice, ...]) -> np.ndarray:
        """``fftn(a)`` over the spatial axes at the frequencies ``picked`` (one slice per axis)."""
        index = [np.arange(n)[chosen] for n, chosen in zip(self.spatial, picked)]
        if any(np.any(i % self.step) for i in index):
            raise ValueError(f"frequencies {picked} off the every-{self.step}th subgrid kept")
        # on the folded grid: frequency k of the image is k / step of it
        index = [i // self.step for i in index]
        sizes = [n // self.step for n in self.spatial]
        last, n = index[-1], sizes[-1]
        direct = last <= n // 2
        out = np.empty(self.shape[:len(self.shape) - len(picked)] + tuple(len(i) for i in index),
                       dtype=self.half.dtype)
        out[..., direct] = self.half[(Ellipsis, *np.ix_(*index[:-1], last[direct]))]
        mirrored = [(-i) % m for i, m in zip(index[:-1], sizes[:-1])]
        out[..., ~direct] = np.conj(self.half[(Ellipsis, *np.ix_(*mirrored, n - last[~direct]))])
        return out


def folded(a: np.ndarray, ndim: int, step: int) -> np.ndarray:
    """``a`` cut into ``step`` blocks along each of its last ``ndim`` axes, the blocks summed.

    Its DFT is ``a``'s at every ``step``-th frequency, exactly (the blocks alias onto them).
    ``step`` divides every one of those axes.
    """
    lead, spatial = a.shape[:a.ndim - ndim], a.shape[a.ndim - ndim:]
    blocks = lead + tuple(size for n in spatial for size in (step, n // step))
    return a.reshape(blocks).sum(axis=tuple(len(lead) + 2 * axis for axis in range(ndim)))


def dividing_stride(spatial: tuple[int, ...], least: int) -> int:
    """The largest stride from ``least`` down to half of it that divides every axis, else ``least``.

    A subgrid of frequencies at a dividing stride is read from a `folded` transform; down, not
    up, so a subgrid never holds fewer frequencies than its limit allows (up, 64 x 160 x 160 kept
    26k of them where 64k were allowed, and its error bars moved by 40%).
    """
    for step in range(least, max(1, -(-least // 2)) - 1, -1):
        if all(n % step == 0 for n in spatial):
            return step
    return least


# plain transforms (small arrays, one-off) -----------------------------------------------------------
def rfft(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """One-dimensional real FFT along ``axis`` (numpy's: tiny kernels, called per evaluation)."""
    return np.fft.rfft(a, axis=axis)


def fft(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """One-dimensional complex FFT along ``axis`` (numpy's, as `rfft`)."""
    return np.fft.fft(a, axis=axis)


def fftn(a: np.ndarray, axes: tuple[int, ...], *, workers: int | None = -1) -> np.ndarray:
    """Complex FFT over ``axes``."""
    return sfft.fftn(a, axes=axes, workers=workers)


def ifftn(a: np.ndarray, *, workers: int | None = -1) -> np.ndarray:
    """Inverse complex FFT over every axis."""
    return sfft.ifftn(a, workers=workers)


def rfftn(a: np.ndarray, shape, axes: tuple[int, ...] | None = None, *,
          workers: int | None = -1) -> np.ndarray:
    """Real FFT over ``axes`` (default the last ``len(shape)``), zero-padded to ``shape``."""
    return sfft.rfftn(a, shape, axes=axes, workers=workers)


def irfftn(a: np.ndarray, shape, axes: tuple[int, ...] | None = None, *,
           workers: int | None = -1) -> np.ndarray:
    """Inverse of `rfftn`."""
    return sfft.irfftn(a, shape, axes=axes, workers=workers)


def convolve_valid(a: np.ndarray, b: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``a * b`` over ``axes`` where they fully overlap (`scipy.signal.fftconvolve`, ``"valid"``)."""
    return signal.fftconvolve(a, b, mode="valid", axes=axes)


def fftfreq(n: int) -> np.ndarray:
    """Sample frequencies of a length-``n`` FFT, in cycles per sample."""
    return sfft.fftfreq(n)
