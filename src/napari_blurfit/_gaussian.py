"""The whole Gaussian kernel: a full covariance and a shift, sampled exactly as the fit uses it.

Model (docs/design.md, section "The whole Gaussian"): ``K[n] ∝ exp(-1/2 (n - mu)^T Sigma^-1 (n - mu))``
sampled at integer offsets ``n``, normalised to sum 1, truncated per axis at the radius
``int(truncate * sqrt(Sigma_ii) + |mu_i| + 0.5)`` and applied as a convolution with reflect borders. The
target is the reference moved by ``+mu`` (the `scipy.ndimage.shift` convention). With a diagonal
``Sigma`` and ``mu = 0`` the sampled kernel is the outer product of scipy's 1-D kernels (a Gaussian
factorises over a box), so `GaussianKernel.apply` equals `scipy.ndimage.gaussian_filter`.

Axes: ``covariance`` and ``shift`` are indexed like the array's spatial axes (the last ``d`` axes). In
2D, ``x`` is the last axis (columns) and ``y`` the second-to-last (rows); BasicSR's
``sigma_matrix2(sig_x, sig_y, theta)`` triple is read in that frame, ``theta`` turning from ``+x``
towards ``+y`` (clockwise on a screen, where rows grow downwards).

Log-Cholesky parameters: ``Sigma = L L^T`` with ``L`` lower triangular; the vector holds
``log L_ii`` for ``i = 0..d-1`` followed by the strictly lower entries ``L_ij`` (``i > j``) in row
order. Any real vector gives a positive definite ``Sigma``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import _transforms as transforms
from ._kernel_model import KernelModel

# scipy's kernel is exactly the identity below 0.125 px and within 1e-8 of it below 0.165 px
# (side weight exp(-1 / (2 sigma^2))): such a fit is reported as sigma 0
IDENTITY_BELOW = 0.165
IDENTIFIABLE_FROM = 0.3  # below this the sampled kernel is nearly [0, 1, 0] (docs/design.md section 7)


def _normalised_exp(exponent: np.ndarray) -> np.ndarray:
    """``exp(exponent)`` normalised to sum 1, taken relative to its largest entry.

    A kernel far narrower than a pixel (a solver's wild trial) samples to a point, not to 0 / 0.
    """
    phi = np.exp(exponent - exponent.max())
    return phi / phi.sum()


def _lower_indices(d: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the strictly lower entries of a d x d matrix, in row order."""
    rows, cols = np.tril_indices(d, -1)
    return rows, cols


def n_cholesky(d: int) -> int:
    """Number of log-Cholesky parameters of a d x d covariance."""
    return d * (d + 1) // 2


class BasicSRTriple(NamedTuple):
    """A 2-D covariance as BasicSR's ``(sig_x, sig_y, theta)``, ``sig_x >= sig_y``, theta in (-pi/2, pi/2]."""

    sigma_x: float
    sigma_y: float
    theta: float


class KernelGrid(NamedTuple):
    """Offsets of a sampled kernel: per axis the radius and the integer offsets ``-r..r``."""

    radius: tuple[int, ...]
    offsets: tuple[np.ndarray, ...]


@dataclass(frozen=True, eq=False)
class GaussianKernel:
    """A sampled Gaussian blur kernel with a full covariance and a shift.

    Attributes
    ----------
    covariance : ndarray, shape (d, d)
        Symmetric positive definite, in px^2, indexed like the spatial axes.
    shift : ndarray, shape (d,)
        Centre of the kernel in px: the target is the reference moved by ``+shift``.
    """

    covariance: np.ndarray
    shift: np.ndarray

    def __post_init__(self):
        cov = np.array(self.covariance, dtype=np.float64)
        d = cov.shape[0] if cov.ndim == 2 else -1
        if cov.shape != (d, d) or d < 1:
            raise ValueError(f"covariance must be a square matrix, got shape {cov.shape}")
        shift = np.zeros(d) if self.shift is None else np.array(self.shift, dtype=np.float64)
        if shift.shape != (d,):
            raise ValueError(f"shift must have {d} entries, got shape {shift.shape}")
        cov = 0.5 * (cov + cov.T)
        if not np.all(np.isfinite(cov)) or np.linalg.eigvalsh(cov)[0] <= 0:
            raise ValueError("covariance must be finite and positive definite")
        cov.setflags(write=False)
        shift.setflags(write=False)
        object.__setattr__(self, "covariance", cov)
        object.__setattr__(self, "shift", shift)

    # construction ----------------------------------------------------------------------------
    @classmethod
    def from_sigma(cls, sigma, shift=None) -> GaussianKernel:
        """Axis-aligned kernel with per-axis standard deviations ``sigma`` (px)."""
        s = np.asarray(sigma, dtype=np.float64)
        return cls(np.diag(s**2), np.zeros(len(s)) if shift is None else shift)

    @classmethod
    def from_cholesky(cls, params, shift=None) -> GaussianKernel:
        """Kernel from a log-Cholesky vector (see the module notes); positive definite by construction."""
        lower = cholesky_factor(params)
        d = lower.shape[0]
        return cls(lower @ lower.T, np.zeros(d) if shift is None else shift)

    @classmethod
    def from_basicsr(cls, sigma_x: float, sigma_y: float, theta: float, shift=None) -> GaussianKernel:
        """2-D kernel from BasicSR's ``sigma_matrix2(sig_x, sig_y, theta)`` (x = columns, y = rows)."""
        c, s = np.cos(theta), np.sin(theta)
        rot = np.array([[c, -s], [s, c]])
        cov_xy = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
        cov = cov_xy[::-1, ::-1]  # (x, y) -> array order (y, x)
        return cls(cov, np.zeros(2) if shift is None else shift)

    # views -----------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return self.covariance.shape[0]

    @property
    def cholesky(self) -> np.ndarray:
        """The log-Cholesky parameter vector of ``covariance``."""
        lower = np.linalg.cholesky(self.covariance)
        rows, cols = _lower_indices(self.ndim)
        return np.concatenate([np.log(np.diag(lower)), lower[rows, cols]])

    @property
    def sigma(self) -> np.ndarray:
        """Per-axis standard deviations ``sqrt(diag(covariance))`` (px)."""
        return np.sqrt(np.diag(self.covariance))

    @property
    def principal(self) -> tuple[np.ndarray, np.ndarray]:
        """Principal sigmas (largest first) and their unit directions (columns, array-axis order)."""
        values, vectors = np.linalg.eigh(self.covariance)
        order = np.argsort(values)[::-1]
        return np.sqrt(values[order]), vectors[:, order]

    @property
    def correlation(self) -> np.ndarray:
        """Correlation matrix of the covariance (off-diagonals in [-1, 1])."""
        s = self.sigma
        return self.covariance / np.outer(s, s)

    @property
    def angle(self) -> float:
        """2D only: angle of the major axis from +x (columns) towards +y (rows), in (-pi/2, pi/2]."""
        return self.basicsr().theta

    def basicsr(self) -> BasicSRTriple:
        """2D only: the canonical ``(sigma_x, sigma_y, theta)`` with ``sigma_x >= sigma_y``."""
        if self.ndim != 2:
            raise ValueError("the (sigma_x, sigma_y, theta) triple is defined for 2-D kernels only")
        sig, vec = self.principal
        vy, vx = vec[:, 0]  # major direction in array order (y, x)
        theta = float(np.arctan2(vy, vx))
        if theta <= -np.pi / 2:
            theta += np.pi
        elif theta > np.pi / 2:
            theta -= np.pi
        return BasicSRTriple(float(sig[0]), float(sig[1]), theta)

    @property
    def is_diagonal_centred(self) -> bool:
        """True when the covariance is diagonal and the shift zero: the DCT fast path applies."""
        off = self.covariance - np.diag(np.diag(self.covariance))
        return bool(not np.any(off) and not np.any(self.shift))

    # sampling --------------------------------------------------------------------------------
    def grid(self, truncate: float = 4.0) -> KernelGrid:
        """Per-axis radius ``int(truncate * sigma_i + |mu_i| + 0.5)`` and the offsets it spans."""
        radius = tuple(int(truncate * s + abs(m) + 0.5) for s, m in zip(self.sigma, self.shift))
        return KernelGrid(radius, tuple(np.arange(-r, r + 1, dtype=np.float64) for r in radius))

    def _whitened(self, grid: KernelGrid) -> tuple[np.ndarray, np.ndarray]:
        """``z = L^-1 (n - mu)`` and ``w = Sigma^-1 (n - mu)`` at every offset, shape (d, *kernel)."""
        delta = np.stack(np.meshgrid(*[o - m for o, m in zip(grid.offsets, self.shift)], indexing="ij"))
        # the d x d inverse of the Cholesky factor, then products: a solve against the
        # kernel-sized right-hand side took 1-2 ms a call, 0.4 filter passes of a 3D fit. By
        # numpy, not scipy.linalg: scipy's own OpenBLAS pool, woken, kept spinning and took a
        # core from the transforms (a 3D model's 96 ms became 137 ms)
        inverse = np.linalg.inv(np.linalg.cholesky(self.covariance))
        flat = delta.reshape(self.ndim, -1)
        z = inverse @ flat
        w = inverse.T @ z
        return z.reshape(delta.shape), w.reshape(delta.shape)

    def sampled(self, truncate: float = 4.0) -> np.ndarray:
        """The kernel array (odd size ``2 r_i + 1`` per axis, centre = offset 0), summing to 1."""
        if self.is_diagonal_centred:  # the exact product of scipy's separately normalised kernels
            return _separable(self.sigma, self.grid(truncate))
        z, _ = self._whitened(self.grid(truncate))
        return _normalised_exp(-0.5 * np.einsum("i...,i...->...", z, z))

    def factors(self, truncate: float = 4.0) -> list[np.ndarray] | None:
        """1-D kernels whose outer product is `sampled`, one per axis; None unless Sigma is diagonal.

        A diagonal Gaussian factorises, shifted or not: so do its box and its normalisation.
        """
        sigma = self.sigma
        if np.any(self.covariance - np.diag(np.diag(self.covariance))) or not np.all(sigma > 0):
            return None
        out = []
        for s, m, o in zip(sigma, self.shift, self.grid(truncate).offsets):
            out.append(_normalised_exp(-0.5 * ((o - m) / s) ** 2))
        return out

    def derivatives(self, truncate: float = 4.0) -> np.ndarray:
        """``dK/dp`` for every log-Cholesky entry then every shift entry, shape (n_chol + d, *kernel).

        The radius is held fixed (it is a step function of the parameters).
        """
        d = self.ndim
        z, w = self._whitened(self.grid(truncate))
        kernel = _normalised_exp(-0.5 * np.einsum("i...,i...->...", z, z))
        lower_diag = np.diag(np.linalg.cholesky(self.covariance))
        rows, cols = _lower_indices(d)
        # d log(phi) / d theta: w_i z_j (times L_ii for the log-diagonal), and w_k for the shift
        dlog = [w[i] * z[i] * lower_diag[i] for i in range(d)]
        dlog += [w[i] * z[j] for i, j in zip(rows, cols)]
        dlog += [w[k] for k in range(d)]
        out = np.empty((len(dlog), *kernel.shape))
        for p, g in enumerate(dlog):
            out[p] = kernel * (g - np.sum(kernel * g))
        return out

    def covariance_jacobian(self) -> np.ndarray:
        """``d Sigma_ij / d theta_p`` for the log-Cholesky vector, shape (n_chol, d, d)."""
        d = self.ndim
        lower = np.linalg.cholesky(self.covariance)
        rows, cols = _lower_indices(d)
        units = [(i, i, lower[i, i]) for i in range(d)] + [(i, j, 1.0) for i, j in zip(rows, cols)]
        out = np.empty((len(units), d, d))
        for p, (i, j, scale) in enumerate(units):
            dl = np.zeros((d, d))
            dl[i, j] = scale
            out[p] = dl @ lower.T + lower @ dl.T
        return out

    def apply(self, image, truncate: float = 4.0) -> np.ndarray:
        """Blur (and shift) the last ``d`` axes of ``image`` with reflect borders, in float64.

        Reflect-pads by the kernel radius (`scipy.ndimage` ``mode="reflect"``, numpy's
        ``"symmetric"``), convolves with one FFT and crops.
        """
        image = np.asarray(image, dtype=np.float64)
        d = self.ndim
        kernel = self.sampled(truncate)
        radius = [(k - 1) // 2 for k in kernel.shape]
        spatial = image.shape[image.ndim - d :]
        if any(2 * r + 1 > 2 * n for r, n in zip(radius, spatial)):
            raise ValueError(f"kernel of radius {tuple(radius)} is too large for an image of shape {spatial}")
        pad = [(0, 0)] * (image.ndim - d) + [(r, r) for r in radius]
        padded = np.pad(image, pad, mode="symmetric")
        axes = tuple(range(image.ndim - d, image.ndim))
        shape = [transforms.next_fast_len(n + 2 * r) for n, r in zip(spatial, radius)]
        spectrum = transforms.rfftn(padded, shape, axes=axes)
        spectrum *= transforms.rfftn(kernel, shape)
        full = transforms.irfftn(spectrum, shape, axes=axes)
        crop = tuple(slice(None) for _ in range(image.ndim - d))
        crop += tuple(slice(2 * r, 2 * r + n) for r, n in zip(radius, spatial))
        return np.ascontiguousarray(full[crop])


def cholesky_factor(params) -> np.ndarray:
    """The lower-triangular factor ``L`` of a log-Cholesky vector."""
    p = np.asarray(params, dtype=np.float64)
    d = int(round((np.sqrt(8 * len(p) + 1) - 1) / 2))
    if n_cholesky(d) != len(p):
        raise ValueError(f"a log-Cholesky vector has d(d+1)/2 entries, got {len(p)}")
    lower = np.diag(np.exp(p[:d]))
    rows, cols = _lower_indices(d)
    lower[rows, cols] = p[d:]
    return lower


def _separable(sigma: np.ndarray, grid: KernelGrid) -> np.ndarray:
    """Outer product of scipy's normalised 1-D Gaussian kernels (identity where sigma is 0)."""
    kernel = np.ones(())
    for s, o in zip(sigma, grid.offsets):
        g = np.exp(-0.5 * (o / s) ** 2) if s > 0 else (o == 0).astype(np.float64)
        kernel = np.multiply.outer(kernel, g / g.sum())
    return kernel


@dataclass(frozen=True)
class GaussianModel(KernelModel):
    """The Gaussian kernels a fit searches over, and their free parameters (a `KernelModel`).

    The full parameter vector is ``[log-Cholesky (d(d+1)/2), shift (d)]`` (module notes); the
    free vector picks from it: one log sigma shared by every axis (``isotropic``), one per axis,
    or every covariance entry (``full_covariance``), and the shift when ``shift``.

    Parameters
    ----------
    ndim : int
        Number of spatial axes.
    truncate : float
        Kernel truncation in standard deviations (plus the shift), as in `scipy.ndimage`.
    full_covariance : bool
        A rotated ellipse; else the covariance stays diagonal.
    shift : bool
        The kernel's centre is free; else it stays where the start puts it.
    isotropic : bool
        One sigma for every axis (excludes ``full_covariance``).
    """

    ndim: int
    truncate: float = 4.0
    full_covariance: bool = False
    shift: bool = False
    isotropic: bool = False
    tie: np.ndarray = field(init=False, repr=False, compare=False)

    identity_below = IDENTITY_BELOW
    identifiable_from = IDENTIFIABLE_FROM

    def __post_init__(self):
        if self.isotropic and self.full_covariance:
            raise ValueError("isotropic and full_covariance exclude each other")
        object.__setattr__(self, "tie", self._tie())

    def _tie(self) -> np.ndarray:
        """``full = tie @ x``: columns pick entries of the full vector; fixed entries stay zero.

        A round kernel has one column that moves every log sigma together.
        """
        nc, d = n_cholesky(self.ndim), self.ndim
        unit = np.eye(nc + d)
        columns = []
        if self.isotropic:
            columns.append(np.r_[np.ones(d), np.zeros(nc)])
        else:
            columns += [unit[i] for i in range(nc if self.full_covariance else d)]
        if self.shift:
            columns += [unit[nc + i] for i in range(d)]
        return np.stack(columns, axis=1)

    @property
    def n_params(self) -> int:
        return self.tie.shape[1]

    def kernel(self, params) -> GaussianKernel:
        nc = n_cholesky(self.ndim)
        full = self.tie @ params
        return GaussianKernel.from_cholesky(full[:nc], full[nc:])

    def params(self, kernel: GaussianKernel) -> np.ndarray:
        """The free vector closest to ``kernel`` (a round fit starts from the mean log sigma)."""
        return np.linalg.pinv(self.tie) @ np.concatenate([kernel.cholesky, kernel.shift])

    def sampled(self, kernel: GaussianKernel) -> np.ndarray:
        return kernel.sampled(self.truncate)

    def factors(self, kernel: GaussianKernel) -> list[np.ndarray] | None:
        return kernel.factors(self.truncate)

    def derivatives(self, kernel: GaussianKernel) -> np.ndarray:
        # by einsum, not BLAS: OpenBLAS's threads spun on after the product and took a core
        # from the gradient's transforms (a rotated 3D normal 92 ms became 131 ms)
        return np.einsum("fp,f...->p...", self.tie, kernel.derivatives(self.truncate))

    def axis_derivatives(self, kernel: GaussianKernel) -> tuple[list[np.ndarray], np.ndarray] | None:
        """Per axis: the factor, its derivatives by that axis's log sigma and shift; None if rotated.

        ``d phi / d log sigma_i = (n_i - mu_i)^2 / sigma_i^2`` and ``d phi / d mu_i = (n_i - mu_i) /
        sigma_i^2`` in log, each less its mean under the kernel (the normalisation), as in
        `GaussianKernel.derivatives` for a diagonal covariance.
        """
        factors = None if self.full_covariance else kernel.factors(self.truncate)
        if factors is None:
            return None
        d, nc = self.ndim, n_cholesky(self.ndim)
        rows = []
        for f, s, m, o in zip(factors, kernel.sigma, kernel.shift, kernel.grid(self.truncate).offsets):
            dlog = [((o - m) / s) ** 2, (o - m) / s**2]
            rows.append(np.stack([f] + [f * (g - np.dot(f, g)) for g in dlog]))
        full = np.zeros((nc + d, 2 * d))  # the full vector's log sigma_i and mu_i, axis by axis
        full[np.arange(d), 2 * np.arange(d)] = 1.0
        full[nc + np.arange(d), 2 * np.arange(d) + 1] = 1.0
        return rows, self.tie.T @ full

    def radius(self, kernel: GaussianKernel) -> tuple[int, ...]:
        return kernel.grid(self.truncate).radius

    def starts(self, start_sigma, shift) -> list[GaussianKernel]:
        """The per-axis sigma (at least `IDENTIFIABLE_FROM`); rotated, also each axis pair at +-0.5."""
        s = np.maximum(np.asarray(start_sigma, dtype=np.float64), self.identifiable_from)
        starts = [GaussianKernel(np.diag(s**2), shift)]
        if self.full_covariance:
            for i, j in zip(*_lower_indices(self.ndim)):
                for rho in (0.5, -0.5):
                    corr = np.eye(self.ndim)
                    corr[i, j] = corr[j, i] = rho
                    starts.append(GaussianKernel(corr * np.outer(s, s), shift))
        return starts

    def diagonal_in_dct(self, kernel: GaussianKernel) -> bool:
        return kernel.is_diagonal_centred

    def standard_errors(self, kernel: GaussianKernel, param_covariance) -> dict[str, np.ndarray]:
        """``covariance`` (d, d) and ``shift`` (d,) standard errors (delta method); NaN if not free."""
        d, nc = self.ndim, n_cholesky(self.ndim)
        full = self.tie @ param_covariance @ self.tie.T
        jac = kernel.covariance_jacobian()  # (nc, d, d)
        var_cov = np.einsum("pij,pq,qij->ij", jac, full[:nc, :nc], jac)
        var_shift = np.diag(full)[nc:] if self.shift else np.full(d, np.nan)
        return {"covariance": np.sqrt(np.abs(var_cov)), "shift": np.sqrt(np.abs(var_shift))}
