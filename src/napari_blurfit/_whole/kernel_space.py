"""The whole image's Gauss-Newton matrix from statistics of the reference alone (L2, no mask)."""

from __future__ import annotations

import numpy as np

from .. import _transforms as transforms
from .problem import Settings, check_radius
from .spectrum import ReferenceSpectrum, dot, half_weight, line_spectra


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
        self.mean_square = 0.0  # T holds the mean (`on_grid`'s is of the centred reference)
        self._build(tuple(radius))

    @classmethod
    def on_grid(cls, problem, kernel) -> KernelSpace:
        """The statistics from an L2 problem's own grid: two FFTs, no grid of their own.

        ``T`` is read at lags up to twice the grid's margin, so beyond it they wrap into the
        opposite face's reflection: on the 3D rows of ``benchmarks/bench_volumes.py`` (kernels
        spanning a third of an axis) the diagonal moved by under 0.1% against statistics on a grid
        ``2 radius`` wider per side, which took 1.2 filter passes to build. The box sums are the
        reference's mean at every lag. A mask's voxels are taken to hold the crop's statistics
        (``T`` scaled by their share). The problem's grid is grown first to hold ``kernel``;
        kernels beyond its radius raise ``ValueError``.
        """
        problem.reach(kernel)
        space = cls.__new__(cls)
        spectrum = problem.spectrum
        space.settings, space.frames, space.n_used = problem.settings, None, problem.n_used
        space.workers = problem.workers
        space.radius = tuple(min(r, (n - 1) // 4) for r, n in zip(spectrum.radius, spectrum.lengths))
        share = problem.n_used / max(problem.target.size, 1)
        # of the reference less its mean: a mean far above the detail (a background of 100)
        # swamped the detail's share of an uncentred T, whose window-cut errors then made the
        # matrix indefinite. The kernel rows never see the mean (a derivative kernel sums to 0);
        # the gain's row gets it back exactly (`_matrix`)
        mean = float(np.mean(problem.reference, dtype=np.float64))
        t, _ = spectrum.lag_correlation(problem.reference, tuple(2 * r for r in space.radius),
                                        transform=lambda a, out: np.subtract(a, mean, out=out))
        space.t = 0.5 * (t + t[(slice(None, None, -1),) * t.ndim]) * share
        space.mean_square, space.s = mean * mean, None
        if problem.settings.gain_offset:
            space.s = np.full(tuple(2 * r + 1 for r in space.radius), mean * problem.n_used)
        return space

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
            if self.frames is None:
                raise ValueError(f"a kernel of radius {radius} px outgrew the statistics' {self.radius}")
            check_radius(radius, self.frames.target.shape[1:])
            self._build(tuple(max(r, p) * 3 // 2 + 2 for r, p in zip(radius, self.radius)))
        cut = tuple(slice(p - r, p + r + 1) for r, p in zip(radius, self.radius))
        lag = tuple(slice(2 * (p - r), 2 * (p + r) + 1) for r, p in zip(radius, self.radius))
        return (None if self.s is None else self.s[cut]), self.t[lag]

    def _grams(self, t: np.ndarray, kernels: np.ndarray) -> np.ndarray:
        """``sum_{n,m} a[n] T(n - m) b[m]`` for every pair of a stack of kernels (first axis).

        By Parseval on a grid of ``4 radius + 1`` (the pairs' lags and ``T``'s, unaliased): one
        small FFT per kernel and one of ``T``, then a weighted product of the spectra, where
        convolving ``T`` with each kernel took seconds in 3D.
        """
        shape = tuple(transforms.next_fast_len(n) for n in t.shape)
        placed = np.zeros((len(kernels) + 1, *shape))
        for grid, a in zip(placed, [*kernels, t]):
            _at_origin(grid, a)
        spectra = transforms.r2c(placed, tuple(range(1, t.ndim + 1)), workers=self._threads())
        # T is even: its spectrum is real
        weighted = (spectra[-1].real * half_weight(shape[-1], spectra.shape[-1])).reshape(-1)
        flat = spectra[:-1].reshape(len(kernels), -1)
        gram = (flat.real * weighted) @ flat.real.T + (flat.imag * weighted) @ flat.imag.T
        return gram / np.prod(shape, dtype=np.float64)

    def _axis_grams(self, t: np.ndarray, rows: list[np.ndarray], mapping: np.ndarray,
                    with_kernel: bool) -> np.ndarray:
        """`_grams` of a factorising kernel's derivatives (then the kernel), from its factors.

        ``rows`` and ``mapping`` as `KernelModel.axis_derivatives` gives them. Each derivative
        is an outer product of one row per axis, so every Gram is ``T``'s spectrum contracted
        with one pair of rows' line spectra per axis: one small FFT (``T``'s), not one per
        derivative kernel.
        """
        shape = tuple(transforms.next_fast_len(n) for n in t.shape)
        grid = np.zeros(shape)
        _at_origin(grid, t)
        table = transforms.r2c(grid, tuple(range(t.ndim)), workers=self._threads()).real
        table *= half_weight(shape[-1], table.shape[-1])
        for axis in range(t.ndim - 1, -1, -1):  # each contraction appends the axis's row pair
            spec = line_spectra(rows[axis], shape[axis], last=axis == t.ndim - 1)
            pairs = spec[:, None, :] * np.conj(spec[None, :, :])
            table = np.tensordot(table, pairs, axes=([axis], [2]))
        # axes now (v, u) per spatial axis, last axis first: put them in axis order
        order = [a for j in range(t.ndim - 1, -1, -1) for a in (2 * j, 2 * j + 1)]
        table = np.transpose(table, order).real / np.prod(shape, dtype=np.float64)
        # the derivatives by each axis's own parameters, then the kernel (every row 0)
        terms = [(axis, j) for axis, axis_rows in enumerate(rows) for j in range(1, len(axis_rows))]
        terms.append((None, 0))

        def index(a, b):
            (ia, ja), (ib, jb) = a, b
            return tuple(x for axis in range(t.ndim)
                         for x in (ja if axis == ia else 0, jb if axis == ib else 0))

        full = np.array([[table[index(a, b)] for b in terms] for a in terms])
        lift = np.zeros((len(mapping) + 1, len(terms)))
        lift[:-1, :-1], lift[-1, -1] = mapping, 1.0
        grams = lift @ full @ lift.T
        return grams if with_kernel else grams[:-1, :-1]

    def _threads(self) -> int:
        return -1 if self.workers is None else self.workers

    def _matrix(self, kernel, g: float, k: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """``J^T J`` over kernel params (and gain, offset) from ``T`` and the box sums."""
        model = self.settings.model
        q, go = model.n_params, self.settings.gain_offset
        separable = model.axis_derivatives(kernel)
        # the derivative kernels themselves: for the Grams of one that does not factorise, and
        # for the offset's column
        derivs = model.derivatives(kernel) if go or separable is None else None
        if separable is not None:
            grams = self._axis_grams(t, *separable, with_kernel=go)
        else:
            grams = self._grams(t, np.concatenate([derivs, k[None]]) if go else derivs)
        out = np.zeros((q + 2, q + 2) if go else (q, q))
        out[:q, :q] = g * g * grams[:q, :q]
        if go:
            sff, sf = grams[q, q] + self.n_used * self.mean_square * float(k.sum()) ** 2, dot(k, s)
            out[:q, q] = out[q, :q] = g * grams[:q, q]
            out[:q, q + 1] = out[q + 1, :q] = g * np.einsum("pi,i->p", derivs.reshape(q, -1), s.ravel())
            out[q, q], out[q, q + 1], out[q + 1, q], out[q + 1, q + 1] = sff, sf, sf, self.n_used
        return 0.5 * (out + out.T)


def _at_origin(grid: np.ndarray, a: np.ndarray) -> None:
    """Write ``a`` (odd sizes, offset 0 at the centre) into ``grid`` at the origin, circularly."""
    grid[np.ix_(*[np.arange(-(n // 2), n // 2 + 1) % m for n, m in zip(a.shape, grid.shape)])] = a
