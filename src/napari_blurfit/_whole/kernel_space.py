"""The whole image's Gauss-Newton matrix from statistics of the reference alone (L2, no mask)."""

from __future__ import annotations

import numpy as np

from .. import _transforms as transforms
from .problem import Settings, check_radius
from .spectrum import ReferenceSpectrum, dot


class KernelSpace:
    """``J^T J`` at any kernel, from the reference's autocorrelation and box sums.

    With ``m = A_pad * K``: ``sum m = K.s`` and ``sum m^2 = K^T G K``, where ``s`` holds the box
    sums of the padded reference and ``G[n, k] = sum_x A_pad(x - n) A_pad(x - k)``. ``G`` is
    replaced by the Toeplitz ``T(n - k)``, the reference's autocorrelation (symmetrised): they
    differ only on strips |n| wide along the edges, which matters little for a matrix that only
    preconditions steps along the exact gradient. Set-up: a few FFTs of the padded grid; no
    Jacobian images. (Searching on this quadratic form instead of the exact loss is biased by
    those strips: docs/design.md, section 10.4.)
    """

    def __init__(self, frames, settings: Settings, radius, workers, dtype):
        self.settings, self.frames = settings, frames
        self.workers, self.dtype = workers, dtype
        self.n_used = frames.target.size
        self._build(tuple(radius))

    def _build(self, radius: tuple[int, ...]) -> None:
        """Statistics for kernels up to ``radius``.

        On a grid of its own, with a margin of ``2 radius`` for the lags of T, dropped once they
        are taken: a fit's models need only ``radius`` (in 3D the wider grid was a third larger).
        """
        lags = tuple(2 * r for r in radius)
        grid = ReferenceSpectrum(self.frames.reference, radius, self.workers, dtype=self.dtype,
                                 margin=lags)
        # the box sums enter only the gain/offset rows (one pass over the grid: skip it otherwise)
        self.s = grid.box_sums(radius) if self.settings.gain_offset else None
        t, _ = grid.lag_correlation(self.frames.reference, lags)
        self.t = 0.5 * (t + t[(slice(None, None, -1),) * len(radius)])
        self.radius = radius

    def matrix_at(self, kernel, gain: float) -> np.ndarray:
        """``J^T J`` at a kernel (gain given; offset free), without the target's statistics."""
        k = self.settings.model.sampled(kernel)
        s, t = self._local(tuple((n - 1) // 2 for n in k.shape))
        return self._matrix(kernel, gain, k, s, t)

    def _local(self, radius: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``s`` and ``T`` cut to a kernel of the given radius."""
        if any(r > p for r, p in zip(radius, self.radius)):
            check_radius(radius, self.frames.target.shape[1:])
            self._build(tuple(max(r, p) * 3 // 2 + 2 for r, p in zip(radius, self.radius)))
        cut = tuple(slice(p - r, p + r + 1) for r, p in zip(radius, self.radius))
        lag = tuple(slice(2 * (p - r), 2 * (p + r) + 1) for r, p in zip(radius, self.radius))
        return (None if self.s is None else self.s[cut]), self.t[lag]

    def _gram(self, t: np.ndarray, kernels: np.ndarray) -> np.ndarray:
        """``G k`` on the kernel's support for one kernel, or a stack of them (first axis)."""
        extra = kernels.ndim - t.ndim
        axes = tuple(range(extra, kernels.ndim))
        return transforms.convolve_valid(t.reshape((1,) * extra + t.shape), kernels, axes)

    def _matrix(self, kernel, g: float, k: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """``J^T J`` over kernel params (and gain, offset) from ``T`` and the box sums."""
        gk = self._gram(t, k)
        derivs = self.settings.model.derivatives(kernel)
        flat = derivs.reshape(len(derivs), -1)
        q = len(flat)
        go = self.settings.gain_offset
        out = np.zeros((q + 2, q + 2) if go else (q, q))
        out[:q, :q] = g * g * np.einsum("pi,qi->pq", flat, self._gram(t, derivs).reshape(q, -1))
        if go:
            sff, sf = dot(k, gk), dot(k, s)
            out[:q, q] = out[q, :q] = g * np.einsum("pi,i->p", flat, gk.ravel())
            out[:q, q + 1] = out[q + 1, :q] = g * np.einsum("pi,i->p", flat, s.ravel())
            out[q, q], out[q, q + 1], out[q + 1, q], out[q + 1, q + 1] = sff, sf, sf, self.n_used
        return 0.5 * (out + out.T)
