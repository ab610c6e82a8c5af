"""The cached spectrum of the reflect-padded reference: models and lag correlations by FFT.

The reference is reflect-padded once by the largest radius a search can reach and transformed
once (one real FFT per frame); a model is one inverse FFT of that spectrum times the spectrum of
the small kernel, then a crop. The kernel's spectrum is a pruned DFT (a small transform per
axis), not a full-size FFT. ``J_k^T f`` for any image ``f`` is the cross-correlation of ``f`` with
the padded reference at the kernel's small lags (`ReferenceSpectrum.lag_correlation`).
"""

from __future__ import annotations

import numpy as np

from .. import _transforms as transforms


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)`` accumulated in float64, without a temporary or a copy of strided views (einsum)."""
    letters = "abcdefghij"[: a.ndim]
    return float(np.einsum(f"{letters},{letters}->", a, b, dtype=np.float64))


def reflect_fill(grid: np.ndarray, frames: np.ndarray, margin: tuple[int, ...]) -> None:
    """Write ``frames`` into ``grid`` at ``margin`` and reflect-pad around it (numpy ``"symmetric"``).

    Axis by axis over the rows already filled, so corners are right; what lies beyond a reflection
    as wide as the image (only on tiny images) is filled by ``np.pad``.
    """
    spatial = frames.shape[1:]
    if any(m > n or g - m - n > n for m, n, g in zip(margin, spatial, grid.shape[1:])):
        pad = [(0, 0)] + [(m, g - m - n) for m, n, g in zip(margin, spatial, grid.shape[1:])]
        grid[...] = np.pad(frames, pad, mode="symmetric")
        return
    grid[(slice(None),) + tuple(slice(m, m + n) for m, n in zip(margin, spatial))] = frames
    for k, (m, n) in enumerate(zip(margin, spatial)):
        g = grid.shape[k + 1]
        view = np.moveaxis(grid, k + 1, 0)
        view[:m] = view[m : 2 * m][::-1]
        right = g - m - n
        view[m + n :] = view[m + n - right : m + n][::-1]


def box_sums(grid: np.ndarray, margin: tuple[int, ...], spatial: tuple[int, ...],
              radius: tuple[int, ...]) -> np.ndarray:
    """``s[n] = sum over frames and x in the crop of grid(x - n)`` for lags ``|n_i| <= radius_i`` (float64).

    One ``np.add.reduceat`` per axis over the breakpoints ``crop edge - n``; the first pass reads the
    grid once and every later pass works on a small array; the axis that shrinks the most goes
    first.
    """
    out = grid
    order = sorted(range(len(spatial)), key=lambda k: (2 * radius[k] + 1) / grid.shape[k + 1])
    for k in order:
        m, n, r, axis = margin[k], spatial[k], radius[k], k + 1
        lags = np.arange(-r, r + 1)
        if n > 2 * r:
            idx = np.concatenate([m - lags[::-1], m + n - lags[::-1]])
            blocks = reduceat64(out, idx, axis)
            prefix = np.cumsum(np.moveaxis(blocks, axis, 0), axis=0)
            prefix = np.concatenate([np.zeros_like(prefix[:1]), prefix[:-1]])  # sum idx[0]..idx[j]
            start, stop = prefix[r - lags], prefix[2 * r + 1 + r - lags]
        else:  # a tiny image: plain prefix sums
            prefix = np.cumsum(np.moveaxis(out, axis, 0), axis=0, dtype=np.float64)
            prefix = np.concatenate([np.zeros_like(prefix[:1]), prefix])
            start, stop = prefix[m - lags], prefix[m + n - lags]
        out = np.moveaxis(stop - start, 0, axis)
    return out.sum(axis=0)


def reduceat64(a: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    """``np.add.reduceat(a, idx, axis, dtype=float64)`` a slab at a time along another axis.

    Given a float32 array, reduceat casts all of it to float64 first (1.7x the two inputs for the
    3D grid of `KernelSpace`); slabs of about a million elements keep that copy small.
    """
    along = max((k for k in range(a.ndim) if k != axis), key=lambda k: a.shape[k])
    shape = list(a.shape)
    shape[axis] = len(idx)
    out = np.empty(shape)
    step = max(1, 2**20 * a.shape[along] // max(a.size, 1))
    for start in range(0, a.shape[along], step):
        slab = [slice(None)] * a.ndim
        slab[along] = slice(start, start + step)
        out[tuple(slab)] = np.add.reduceat(a[tuple(slab)], idx, axis=axis, dtype=np.float64)
    return out


FLOAT32_SAFE = 1e18  # largest n * max|x| a float32 transform takes: a product of two spectra stays finite


def transform_dtype(dtype, *arrays: np.ndarray) -> np.dtype:
    """``dtype``, or float64 where a float32 transform of ``arrays`` could overflow.

    A spectrum is at most ``n * max|x|``; lag correlations multiply two of them.
    """
    if np.dtype(dtype) != np.float32:
        return np.dtype(dtype)
    for a in arrays:
        if a.size and a.size * max(abs(float(a.max())), abs(float(a.min()))) > FLOAT32_SAFE:
            return np.dtype(np.float64)
    return np.dtype(np.float32)


def line_spectra(rows: np.ndarray, length: int, *, last: bool, dtype=np.float64) -> np.ndarray:
    """DFTs of 1-D kernels (rows, offset 0 at the centre) placed at the origin of a grid axis.

    ``last``: the grid's real, halved last axis (`rfft`), else a complex one (`fft`). ``dtype``:
    of the placed lines (a float32 problem's models keep their float32 lines).
    """
    r = (rows.shape[-1] - 1) // 2
    line = np.zeros((len(rows), length), dtype=dtype)
    line[:, np.arange(-r, r + 1) % length] = rows
    return transforms.rfft(line) if last else transforms.fft(line)


def half_weight(length: int, half: int) -> np.ndarray:
    """On a real FFT's halved last axis, every frequency but 0 and Nyquist stands for two."""
    weight = np.full(half, 2.0)
    weight[0] = 1.0
    if length % 2 == 0:
        weight[-1] = 1.0
    return weight


class ReferenceSpectrum:
    """One rFFT of the reflect-padded reference frames (frames first, spatial axes last).

    ``radius`` is the largest kernel radius per axis that a model may use. The crop sits ``margin``
    (at least ``radius``; twice it leaves room for the lags of `KernelSpace`) from the origin; each
    axis is padded to a fast FFT length, the extra going to the right, so circular convolution never
    wraps into the crop. ``dtype`` is float64, or float32 for large images (half the time and memory).
    One grid-sized real buffer serves models and lag correlations in turn (the padded reference
    until then), one complex buffer their spectra.
    """

    def __init__(self, reference: np.ndarray, radius: tuple[int, ...], workers: int | None, *,
                 dtype=np.float64, margin: tuple[int, ...] | None = None):
        self.d = len(radius)
        self.radius = tuple(radius)
        self.margin = self.radius if margin is None else tuple(margin)
        self.nthreads = transforms.threads(-1 if workers is None else workers)  # default: all cores
        self.dtype = np.dtype(dtype)
        self.spatial = reference.shape[1:]
        self.lengths = tuple(transforms.next_fast_len(n + 2 * m)
                             for n, m in zip(self.spatial, self.margin))
        padded = np.empty((len(reference), *self.lengths), dtype=self.dtype)
        reflect_fill(padded, reference, self.margin)
        self.axes = tuple(range(1, self.d + 1))
        self.spectrum = transforms.r2c(padded, self.axes, workers=self.nthreads)
        self.crop = (slice(None),) + tuple(slice(m, m + n) for m, n in zip(self.margin, self.spatial))
        self._complex = np.empty_like(self.spectrum)
        # the padded reference until the first model or lag correlation, then their real buffer
        self._padded, self._holds_reference = padded, True

    def page_in(self) -> None:
        """Touch the spectra's buffer (its first write would otherwise page it in: `Problem.page_in`)."""
        self._complex.fill(0)

    def box_sums(self, radius: tuple[int, ...]) -> np.ndarray:
        """Sums of the padded reference over the crop moved by every lag ``|n_i| <= radius_i``.

        Only before the first model or lag correlation: they reuse the reference's buffer.
        """
        if not self._holds_reference:
            raise RuntimeError("box_sums after a model or lag correlation overwrote the padded reference")
        return box_sums(self._padded, self.margin, self.spatial, radius)

    def kernel_spectrum(self, kernel: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """DFT of the kernel placed with offset 0 at the origin (circularly, on the padded grid).

        Transformed axis by axis: the last (real) axis only over the kernel's few rows, the others
        over the rows already filled, so it costs less than a full-size transform. ``out``: a
        buffer of the spectrum's shape for the full-size last pass (else a new array).
        """
        radius = tuple((k - 1) // 2 for k in kernel.shape)
        nt = self.nthreads
        last = np.zeros((*kernel.shape[:-1], self.lengths[-1]), dtype=self.dtype)
        last[..., np.arange(-radius[-1], radius[-1] + 1) % self.lengths[-1]] = kernel
        spec = transforms.r2c(last, (self.d - 1,), workers=nt)
        for axis in range(self.d - 2, -1, -1):
            shape = list(spec.shape)
            shape[axis] = self.lengths[axis]
            if axis == 0 and out is not None:
                grown = out
                grown.fill(0)
            else:
                grown = np.zeros(shape, dtype=spec.dtype)
            index = [slice(None)] * self.d
            index[axis] = np.arange(-radius[axis], radius[axis] + 1) % self.lengths[axis]
            grown[tuple(index)] = spec
            spec = transforms.c2c(grown, (axis,), out=grown, workers=nt)
        # the zero frequency is the kernel's sum, exactly: in float32 the transforms round it by
        # ~1e-7, a gain that changes from kernel to kernel, and an L1 loss (which weighs a gain by
        # sum sign(r) m) then jumps by 1e-6 of itself between neighbouring kernels
        spec[(0,) * self.d] = kernel.sum(dtype=np.float64)
        return spec

    def axis_spectra(self, factors: list[np.ndarray]) -> list[np.ndarray]:
        """DFTs of 1-D kernels (offset 0 at the origin) along each axis, shaped to broadcast."""
        out = []
        for axis, (f, n) in enumerate(zip(factors, self.lengths)):
            spec = line_spectra(np.asarray(f)[None], n, last=axis == self.d - 1, dtype=self.dtype)[0]
            shape = [1] * (self.d + 1)
            shape[axis + 1] = len(spec)
            out.append(spec.astype(self._complex.dtype).reshape(shape))
        return out

    def model(self, kernel: np.ndarray, factors: list[np.ndarray] | None = None, *,
              gain: float = 1.0, offset: float = 0.0) -> np.ndarray:
        """``gain * (A * kernel) + offset`` on the crop: a view of a reused buffer.

        ``factors``: 1-D kernels whose outer product is ``kernel`` (`GaussianKernel.factors`); its
        spectrum is then their spectra broadcast, one pass per axis instead of a transform of
        the grid. The gain scales the kernel and the offset enters the zero frequency, so
        neither costs a pass. The view is overwritten by the next call; copy it to keep it.
        """
        if factors is None and len(self._complex) == 1:  # built in the buffer: no grid-sized temporary
            spectrum = self.kernel_spectrum(kernel * gain, out=self._complex[0])
            np.multiply(spectrum, self.spectrum[0], out=self._complex[0])
        elif factors is None:
            np.multiply(self.spectrum, self.kernel_spectrum(kernel * gain), out=self._complex)
        else:
            first, *rest = self.axis_spectra(factors)[::-1]
            np.multiply(self.spectrum, first * gain, out=self._complex)
            for spec in rest:
                self._complex *= spec
        if offset:  # the inverse transform divides by the grid's size
            self._complex[(slice(None),) + (0,) * self.d] += offset * np.prod(self.lengths, dtype=np.float64)
        self._holds_reference = False
        full = transforms.c2r(self._complex, self.axes, self.lengths[-1], out=self._padded,
                              workers=self.nthreads)
        return full[self.crop]

    def _place(self, image: np.ndarray, transform, *, flip: bool) -> np.ndarray:
        """``f`` (``image``, or what ``transform(image, out)`` writes) in the real buffer, zero around.

        At the crop, ``flip``-ped along every spatial axis or not; the model buffer is overwritten.
        """
        real, self._holds_reference = self._padded, False
        place = real[self.crop]
        if flip:
            place = place[(slice(None),) + (slice(None, None, -1),) * self.d]
        if transform is None:
            place[...] = image
        else:
            transform(image, place)
        for axis, (m, n) in enumerate(zip(self.margin, self.spatial), start=1):
            edge = [slice(None)] * real.ndim
            edge[axis] = slice(0, m)
            real[tuple(edge)] = 0.0
            edge[axis] = slice(m + n, None)
            real[tuple(edge)] = 0.0
        return real

    def axis_correlation(self, image: np.ndarray, rows: list[np.ndarray], *,
                         transform=None) -> tuple[np.ndarray, float]:
        """``t[j_0, .., j_d-1] = sum_x f(x) (A_pad * (rows_0[j_0] x .. x rows_d-1[j_d-1]))(x)`` and ``sum f``.

        For separable kernels: each ``rows[i]`` stacks 1-D kernels along axis ``i`` (offset 0 at
        the centre), and ``t`` holds ``f``'s correlation with the model of every outer product of
        one row per axis, summed over frames. By Parseval on the grid: one forward FFT of ``f``
        and a contraction of its product with the reference's spectrum against the rows' line
        spectra, where `lag_correlation` takes an inverse FFT of the grid too. ``f`` and
        ``transform`` as in `lag_correlation`; overwrites the model buffer.
        """
        real = self._place(image, transform, flip=False)
        z = transforms.r2c(real, self.axes, out=self._complex, workers=self.nthreads)
        total = float(z[(slice(None),) + (0,) * self.d].real.sum(dtype=np.float64))
        np.conjugate(z, out=z)
        z *= self.spectrum
        product = z.sum(axis=0) if len(z) > 1 else z[0]
        lines = [line_spectra(r, n, last=axis == self.d - 1)
                 for axis, (r, n) in enumerate(zip(rows, self.lengths))]
        weight = half_weight(self.lengths[-1], product.shape[-1])
        # the last axis in the spectrum's precision (a BLAS product over one line: short sums),
        # the rest, over most of the grid, in float64
        out = (product @ (lines[-1] * weight).T.astype(product.dtype)).astype(np.complex128)
        for axis in range(self.d - 2, -1, -1):  # each contraction appends the rows' axis
            out = np.tensordot(out, lines[axis], axes=([axis], [1]))
        table = np.transpose(out, tuple(range(self.d - 1, -1, -1))).real
        return table / np.prod(self.lengths, dtype=np.float64), total

    def lag_correlation(self, image: np.ndarray, radius: tuple[int, ...], *,
                        transform=None) -> tuple[np.ndarray, float]:
        """``c[n] = sum_x f(x) A_pad(x + m - n)`` summed over frames, for lags ``|n_i| <= radius_i``.

        ``f`` is ``image``, or what ``transform(image, out)`` writes into ``out`` (an elementwise
        function of it, formed in the buffer: no image-sized temporary). Returns ``c`` and
        ``sum f`` (the transform's zero frequency). The image goes into the model buffer flipped
        (zero outside the crop): the correlation is then the convolution
        ``c2r(r2c(flipped) * A_hat)`` read at mirrored lags, with no pass to conjugate the
        spectrum. Overwrites the model buffer: a view returned by `model` is invalid afterwards
        (``image`` may be that view).
        """
        real = self._place(image, transform, flip=True)
        z = transforms.r2c(real, self.axes, out=self._complex, workers=self.nthreads)
        total = float(z[(slice(None),) + (0,) * self.d].real.sum(dtype=np.float64))
        z *= self.spectrum
        spec = z.sum(axis=0) if len(z) > 1 else z[0]
        # f(x) sits at y = m + N - 1 - x: the convolution at q holds the lag 2m + N - 1 - q
        lags = [(2 * m + n - 1 - np.arange(-r, r + 1)) % length
                for m, n, r, length in zip(self.margin, self.spatial, radius, self.lengths)]
        corr = transforms.c2r_at(spec, lags, self.lengths[-1], workers=self.nthreads)
        return corr.astype(np.float64), total
