"""Standard errors of a whole-Gaussian L2 fit that hold for both noises and coloured residuals.

The engine's Gauss-Newton errors take the residual as white. It is not: the reference's noise
reaches it blurred (power ``s_B**2 + gain**2 |K_hat|**2 s_A**2``, highest where the signal is),
and a model that is not quite right leaves structure. Here the sandwich ``A^-1 B A^-1`` is taken
over Fourier frequencies (independent for stationary noise): ``A`` the Gauss-Newton matrix with
the reference's noise taken out of its power, ``B`` the sum of each frequency's squared score.
"""

from __future__ import annotations

import numpy as np

from .. import _transforms as transforms
from .._gaussian import GaussianModel
from .._spectral import strided

FREQUENCIES = 2**17  # frequencies read at most: a regular subgrid of them


def sandwich_errors(model: GaussianModel, kernel, reference: transforms.HalfSpectrum,
                    residual: transforms.HalfSpectrum, gain: float, *, gain_offset: bool,
                    noise: float) -> dict[str, np.ndarray] | None:
    """``covariance`` (d, d) and ``shift`` (d,) standard errors, or None for a kernel too wide.

    ``reference`` and ``residual`` (``gain * K * reference + offset - target``): the transforms of
    frames-first arrays over the kernel's axes; ``noise`` is the reference's noise variance the
    fit was corrected for.
    """
    d = model.ndim
    spatial = reference.spatial
    sampled = model.sampled(kernel)
    if any(k > n for k, n in zip(sampled.shape, spatial)):
        return None
    picked, weight = subgrid(spatial)
    columns = [gain * kernel_spectrum(dk, spatial, picked) for dk in model.derivatives(kernel)]
    k_hat = kernel_spectrum(sampled, spatial, picked)
    if gain_offset:
        columns.append(k_hat)
    power, cross = _reference_terms(reference, residual, picked)
    frames = int(np.prod(reference.shape[:len(reference.shape) - d]))
    cross = cross - frames * noise * gain * np.conj(k_hat)  # the score of the noise's share
    design = np.stack(columns).reshape(len(columns), -1)
    score = 2.0 * np.real(design * cross.reshape(-1))
    info = (power - frames * noise).reshape(-1)
    bread = 2.0 * np.real((design * info) @ np.conj(design).T)
    meat = 2.0 * score @ score.T  # a real image's frequencies come in conjugate pairs
    with np.errstate(all="ignore"):
        try:
            inverse = np.linalg.inv(bread)
        except np.linalg.LinAlgError:
            return None
    cov = inverse @ meat @ inverse / weight
    count = len(columns) - (1 if gain_offset else 0)
    return model.standard_errors(kernel, cov[:count, :count])


def subgrid(spatial: tuple[int, ...]) -> tuple[tuple[slice, ...], float]:
    """Every m-th frequency along each axis (at most `FREQUENCIES`), and ``m**d``.

    Where a stride down to half the least divides every axis, that one (`dividing_stride`): the
    transforms are then read from the images `folded`.
    """
    step = transforms.dividing_stride(spatial, strided(spatial, FREQUENCIES)[0].step)
    return (slice(None, None, step),) * len(spatial), float(step ** len(spatial))


def kernel_spectrum(kernel: np.ndarray, spatial: tuple[int, ...], picked) -> np.ndarray:
    """The Fourier transform of a centred kernel on the image's frequency grid, on ``picked``.

    A matrix DFT per axis over the kernel's own support: no image-sized array (an FFT of the
    kernel padded to a 128 x 256 x 256 volume took four times the inputs' memory, per column).
    """
    out = np.asarray(kernel, dtype=np.complex128)
    for axis, (n, chosen) in enumerate(zip(spatial, picked)):
        size = kernel.shape[axis]
        phase = np.outer(np.arange(n)[chosen], np.arange(size) - size // 2)
        dft = np.exp(-2j * np.pi * phase / n)
        out = np.moveaxis(np.tensordot(dft, np.moveaxis(out, axis, 0), axes=(1, 0)), 0, axis)
    return out


def _reference_terms(reference: transforms.HalfSpectrum, residual: transforms.HalfSpectrum, picked):
    """``sum_f |A_hat_f|**2 / n`` and ``sum_f A_hat_f conj(R_hat_f) / n`` on ``picked``, over frames."""
    n = float(np.prod(reference.spatial))
    a_hat, r_hat = reference.picked(picked), residual.picked(picked)
    frames = tuple(range(a_hat.ndim - len(picked)))
    return (np.sum(np.abs(a_hat) ** 2, axis=frames) / n,
            np.sum(a_hat * np.conj(r_hat), axis=frames) / n)
