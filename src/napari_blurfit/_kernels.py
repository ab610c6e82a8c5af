"""The sampled Gaussian kernel exactly as scipy.ndimage builds it, and its DCT transfer function.

`scipy.ndimage.gaussian_filter(a, s)` with ``mode='reflect'`` is diagonal in the orthonormal type-II
DCT: ``dctn(filter(a)) == H * dctn(a)`` with ``H = prod_i h_i(k_i)`` and
``h(k) = g[0] + 2 * sum_n g[n] cos(pi k n / N)`` (docs/design.md section 2; checked to 1e-15, for kernels
longer than the image too). ``h`` is the real part of a length-2N FFT of the folded kernel, which is
how it is computed here: one small FFT per sigma instead of an N x radius cosine table.
"""

from __future__ import annotations

import numpy as np

from ._transforms import rfft

# scipy.ndimage.gaussian_filter skips an axis whose sigma is at most this.
SIGMA_IDENTITY = 1e-15


def kernel_radius(sigma: float, truncate: float = 4.0) -> int:
    """Radius scipy uses for a Gaussian of this sigma (``int(truncate * sigma + 0.5)``)."""
    if sigma <= SIGMA_IDENTITY:
        return 0
    return int(truncate * float(sigma) + 0.5)


def half_kernels(sigmas, truncate: float = 4.0, *, derivative: bool = False):
    """Right halves ``g[0..r]`` of scipy's normalised kernels, one row per sigma.

    Rows are zero-padded to the largest radius. With ``derivative=True`` also return
    ``dg/dsigma`` at fixed radius (the kernel's radius is a step function of sigma).
    """
    sigmas = np.atleast_1d(np.asarray(sigmas, dtype=np.float64))
    radii = np.array([kernel_radius(s, truncate) for s in sigmas])
    n = np.arange(radii.max() + 1, dtype=np.float64)
    inside = n[None, :] <= radii[:, None]
    safe = np.where(sigmas > SIGMA_IDENTITY, sigmas, 1.0)[:, None]
    phi = np.where(inside, np.exp(-0.5 * n**2 / safe**2), 0.0)
    phi[:, 0] = 1.0
    total = phi[:, 0] + 2.0 * phi[:, 1:].sum(axis=1)
    g = phi / total[:, None]
    if not derivative:
        return g
    dphi = phi * n**2 / safe**3
    dtotal = 2.0 * dphi[:, 1:].sum(axis=1)
    dg = (dphi * total[:, None] - phi * dtotal[:, None]) / total[:, None] ** 2
    return g, dg


def _fold_transfer(half: np.ndarray, size: int) -> np.ndarray:
    """``h(k) = sum_{n=-r..r} g[|n|] cos(pi k n / size)`` for k < size, one column per row of half."""
    period = 2 * size
    m, width = half.shape
    folded = np.zeros((m, period))
    pos = np.arange(width) % period
    neg = (-np.arange(1, width)) % period
    np.add.at(folded.T, pos, half.T)
    np.add.at(folded.T, neg, half[:, 1:].T)
    return rfft(folded, axis=1).real[:, :size].T.copy()


def transfer(sigmas, size: int, truncate: float = 4.0, *, derivative: bool = False):
    """DCT-II transfer vectors of the Gaussian filter along one axis of length ``size``.

    Parameters
    ----------
    sigmas : array_like
        Sigma values in pixels, shape (m,).
    size : int
        Length of the axis.
    truncate : float
        As in `scipy.ndimage.gaussian_filter`.
    derivative : bool
        Also return ``dh/dsigma`` (at fixed kernel radius).

    Returns
    -------
    h : ndarray, shape (size, m)
        Column j multiplies the DCT coefficients along this axis for ``sigmas[j]``.
    dh : ndarray, shape (size, m)
        Only with ``derivative=True``.
    """
    if derivative:
        g, dg = half_kernels(sigmas, truncate, derivative=True)
        return _fold_transfer(g, size), _fold_transfer(dg, size)
    return _fold_transfer(half_kernels(sigmas, truncate), size)


def axis_transfers(axis_sigmas, shape, truncate: float = 4.0, *, derivative: bool = False) -> list:
    """`transfer` along each axis of ``shape`` for the sigmas ``axis_sigmas[i]`` of axis i.

    Axes of one length with the same sigmas (a round kernel on a square image) share one result,
    computed once: the arrays are shared, not copied, so they are for reading only.
    """
    out: list = []
    for i, (s, n) in enumerate(zip(axis_sigmas, shape)):
        same = next((j for j in range(i) if shape[j] == n and np.array_equal(axis_sigmas[j], s)), None)
        out.append(out[same] if same is not None else transfer(s, n, truncate, derivative=derivative))
    return out
