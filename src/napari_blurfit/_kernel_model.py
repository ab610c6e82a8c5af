"""What the whole-kernel solver asks of a kernel shape: the `KernelModel` interface.

A kernel model maps a free parameter vector to a kernel and back, samples the kernel as the fit
applies it, differentiates it, says how far it reaches and where a fit should start. The solver
(`napari_blurfit._whole`) knows only this interface; `napari_blurfit._gaussian.GaussianModel` is
the one implementation. Another kernel shape is another subclass (and its tests), not a change
to the solver.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class KernelModel(ABC):
    """A family of sampled blur kernels with a parameter vector.

    Attributes
    ----------
    ndim : int
        Number of spatial axes.
    n_params : int
        Length of the free parameter vector.
    identity_below : float
        Scale (px) below which a kernel of the family equals the identity to within 1e-8: a fit
        reports it as no blur.
    identifiable_from : float
        Scale (px) below which the sampled kernel is so close to the identity that the data
        cannot pin it: a fit there is reported as not identifiable.
    """

    ndim: int
    n_params: int
    identity_below: float
    identifiable_from: float

    @abstractmethod
    def kernel(self, params: np.ndarray) -> Any:
        """The kernel of a free parameter vector."""

    @abstractmethod
    def params(self, kernel: Any) -> np.ndarray:
        """The free parameter vector closest to ``kernel``."""

    @abstractmethod
    def sampled(self, kernel: Any) -> np.ndarray:
        """The kernel array (odd size per axis, offset 0 at the centre), as the fit applies it."""

    def factors(self, kernel: Any) -> list[np.ndarray] | None:
        """1-D kernels whose outer product is `sampled`, or None when it does not factorise."""
        return None

    def axis_derivatives(self, kernel: Any) -> tuple[list[np.ndarray], np.ndarray] | None:
        """A factorising kernel's derivatives axis by axis, or None (the default).

        ``(rows, mapping)``: ``rows[i]`` stacks the factor along axis ``i`` (`factors`), then its
        derivatives by the parameters that act along that axis alone; ``mapping`` (``n_params``
        by their total count, axis by axis) sends those parameters' gradients to the free
        vector's. A gradient then needs no derivative kernel of the full dimension
        (`ReferenceSpectrum.axis_correlation`).
        """
        return None

    @abstractmethod
    def derivatives(self, kernel: Any) -> np.ndarray:
        """``d sampled / d params``, shape ``(n_params, *sampled.shape)`` (support held fixed)."""

    def radius(self, kernel: Any) -> tuple[int, ...]:
        """Half-width of `sampled` per axis."""
        return tuple((n - 1) // 2 for n in self.sampled(kernel).shape)

    def pad_radius(self, kernels: list[Any]) -> tuple[int, ...]:
        """Padding that leaves room for the kernels to grow by half during a search."""
        radius = np.max([self.radius(k) for k in kernels], axis=0)
        return tuple(int(r) * 3 // 2 + 2 for r in radius)

    @abstractmethod
    def starts(self, start_sigma, shift: np.ndarray) -> list[Any]:
        """Start kernels around an axis-aligned estimate ``start_sigma`` (px) moved by ``shift``."""

    @abstractmethod
    def diagonal_in_dct(self, kernel: Any) -> bool:
        """True when reflect-mode filtering with ``kernel`` is diagonal in the DCT-II (exact L2)."""

    @abstractmethod
    def standard_errors(self, kernel: Any, param_covariance: np.ndarray) -> dict[str, np.ndarray]:
        """Standard errors of the kernel's reported quantities from the parameters' covariance."""
