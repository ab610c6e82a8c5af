"""A cheap look at what a centred, axis-aligned fit leaves out: a shift, a rotated ellipse.

Every default fit runs it (docs/design.md, "The whole Gaussian"): a few Levenberg-Marquardt steps
of the full model (covariance and shift, L2 with gain/offset) on a central crop, with a band of
the kernel's radius left out of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._gaussian import IDENTIFIABLE_FROM, GaussianKernel, GaussianModel
from ._losses import L2
from ._shift import Frames, as_frames, cut_band, estimate_shift, raw_crop
from ._whole import Problem, Settings, multistart

PROBE_EDGE = {2: 128, 3: 48}  # smallest crop edge (grown with the kernel)
PROBE_STEPS = 6  # exact Levenberg-Marquardt steps of the probe (a warning needs the basin, not 1e-10)
PROBE_STEPS_FROM_FIT = 3  # ... from a fitted shift (a shifted fit's shape check)
MISALIGNED_PX = 0.5  # a shift this large makes a centred kernel read it as blur
ELLIPTICAL_RATIO = 1.15  # principal sigmas this far apart: elliptical
# removing a real shift or rotation from the fitted kernel raised the crop's L2 loss 10-200x (0.2%
# noise); one fitted to a blur that is not Gaussian, or differs between frames, showed ~0.1x
SIGNIFICANT_LOSS = 0.25
ROTATED_CORRELATION = 0.3  # |off-diagonal correlation| of a clearly rotated ellipse (10 deg, 3:1: 0.4)


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """What `probe_model` saw on a central crop: shift and shape of the blur.

    Attributes
    ----------
    kernel : GaussianKernel
        The fitted kernel (covariance and shift).
    misaligned, elliptical, rotated : bool
        Shift above `MISALIGNED_PX`; principal ratio above `ELLIPTICAL_RATIO`; and, if elliptical,
        an off-diagonal correlation of at least `ROTATED_CORRELATION`.
    """

    kernel: GaussianKernel
    misaligned: bool
    elliptical: bool
    rotated: bool

    @property
    def shift(self) -> np.ndarray:
        """Fitted shift (px, per spatial axis)."""
        return self.kernel.shift

    @property
    def principal_sigmas(self) -> np.ndarray:
        """Principal standard deviations, largest first (px)."""
        return self.kernel.principal[0]

    @property
    def angle(self) -> float | None:
        """2D: angle of the major axis from +x (columns) towards +y (rows), degrees."""
        return float(np.degrees(self.kernel.angle)) if self.kernel.ndim == 2 else None

    @property
    def shift_note(self) -> str:
        """The finding about a shift, in words."""
        shift = ", ".join(f"{s:.2f}" for s in self.shift)
        return (f"the target looks misaligned by {np.linalg.norm(self.shift):.2f} px (shift {shift} "
                "px); a centred kernel reads a shift as extra blur: fit with shift=True")

    @property
    def shape_note(self) -> str:
        """The finding about an elliptical (and rotated) blur, in words."""
        principal = ", ".join(f"{s:.2f}" for s in self.principal_sigmas)
        if self.rotated:
            at = f", major axis at {self.angle:.0f} deg" if self.angle is not None else ""
            return (f"the blur looks elliptical and rotated (principal sigmas {principal} px{at}): "
                    "use full_covariance=True")
        return f"the blur looks elliptical (principal sigmas {principal} px): use per_axis=True"

    @property
    def notes(self) -> tuple[str, ...]:
        """Every finding (empty when a centred, round kernel is adequate)."""
        return ((self.shift_note,) if self.misaligned else ()) + (
            (self.shape_note,) if self.elliptical else ())


def _settings(d: int, truncate: float, *, full_covariance: bool) -> Settings:
    """The probe's model: L2 with gain/offset, a free shift, rotated or along the axes."""
    model = GaussianModel(d, float(truncate), full_covariance=full_covariance, shift=True)
    return Settings(model, L2(), gain_offset=True)


def _coarse_sigma(frames: Frames, d: int, shift: np.ndarray, truncate: float, workers) -> np.ndarray:
    """Best isotropic sigma on a log grid (L2 with gain/offset, at the estimated shift)."""
    top = max(0.6, min(12.0, min(frames.target.shape[1:]) / (2 * truncate + 2) - np.abs(shift).max()))
    grid = np.geomspace(IDENTIFIABLE_FROM, top, 12)
    settings = _settings(d, truncate, full_covariance=False)
    widest = GaussianKernel(np.eye(d) * top**2, shift)
    problem = Problem(*frames, settings, settings.model.radius(widest), workers)
    losses = [problem.loss_at(GaussianKernel(np.eye(d) * s**2, shift), 1.0, 0.0) for s in grid]
    return np.full(d, grid[int(np.argmin(losses))])


def probe_model(reference, target, *, ndim: int | None = None, start_sigma=None, truncate: float = 4.0,
                workers: int | None = None, used=None, start_shift=None) -> ProbeResult:
    """Cheap check of what a per-axis, centred fit leaves out: a shift, an elliptical or rotated blur.

    Fits a shift and a covariance (L2, with gain and offset; rotated in 2D, along the axes in 3D)
    with a few Levenberg-Marquardt steps on a central crop grown with the kernel: the shift to
    0.01 px, where a cross-correlation alone read a 1 px shift as 0.63-1.13 px in 3D (its window
    stays put while the content moves).

    Parameters
    ----------
    reference, target : array_like
        Same shape; the last ``ndim`` axes are spatial.
    ndim : int, optional
        Number of spatial axes (default: ``len(start_sigma)``, else all axes).
    start_sigma : sequence of float, optional
        Per-axis start (e.g. the spectral fit's sigma); default: the best isotropic sigma of a grid.
    truncate : float
        Kernel truncation in standard deviations.
    workers : int, optional
        FFT threads.
    used : array_like of bool, optional
        True where a pixel counts (a mask, a border band), broadcastable to the images.
    start_shift : sequence of float, optional
        A shift fitted already (a shifted fit's): the probe starts there, not at the
        cross-correlation's, and takes `PROBE_STEPS_FROM_FIT` steps (its shape is all it checks).

    Returns
    -------
    ProbeResult
        Shift, principal sigmas, angle (2D), flags and the notes to warn with.
    """
    d = ndim or (len(start_sigma) if start_sigma is not None else np.ndim(reference))
    frames = _probe_frames(reference, target, d, start_sigma, truncate, used)
    if start_shift is None:
        shift0, steps = estimate_shift(frames.reference, frames.target, ndim=d), PROBE_STEPS
    else:
        shift0, steps = np.asarray(start_shift, dtype=np.float64), PROBE_STEPS_FROM_FIT
    if start_sigma is None:
        start_sigma = _coarse_sigma(frames, d, shift0, truncate, workers)
    # 3D: along the axes only. A rotated 3D probe (nine parameters, a Jacobian volume each) cost
    # 5-25 s on a 128^3 crop, more than the fit it checks (fit with full_covariance=True to see it)
    settings = _settings(d, truncate, full_covariance=d == 2)
    start = settings.model.starts(start_sigma, shift0)[:1]  # one start: a warning needs the basin only
    # in float32: a warning needs the basin, and rtol stays above float32's rounding
    problem, solved = multistart(frames, settings, start, workers, None, max_iter=steps, rtol=1e-6,
                                 exact=False, dtype=np.float32)
    return _probe_result(solved.point, problem)


def _probe_frames(reference, target, d: int, start_sigma, truncate: float, used=None) -> Frames:
    """The probe's central crop, with a band of the kernel's radius left out of the loss (`cut_band`).

    The crop grows with the kernel, along each axis with that axis's sigma.
    """
    sigma = np.zeros(d) if start_sigma is None else np.broadcast_to(start_sigma, d)
    radius = [int(truncate * float(s) + 0.5) + 2 for s in sigma]
    base = PROBE_EDGE.get(d, 64)
    edge = [max(base, 4 * r + base // 2) for r in radius]
    ref, tgt = raw_crop(reference, target, d, edge)
    given = None
    if used is not None:
        given = np.broadcast_to(np.asarray(used, dtype=bool), np.shape(reference))
        given = raw_crop(given, given, d, edge)[0]
    keep = cut_band(given, ref.shape, np.asarray(reference).shape[-d:], radius)
    return as_frames(ref, tgt, keep, d)


def _probe_result(point, problem) -> ProbeResult:
    """Flags from the probe's kernel, each checked against the crop's own loss.

    "Rotated" is read from the correlations, not from the principal directions: those of nearly
    equal sigmas are arbitrary, and an ellipse along the axes has no correlation. A shift or a
    rotation is only reported when removing it from the fitted kernel raises the crop's loss by
    `SIGNIFICANT_LOSS` or more, and an ellipse only when a round kernel of the same mean variance
    does: a kernel fitted to a blur that is not Gaussian (or differs between frames) can show any
    of them without it mattering.
    """
    kernel = point.kernel
    sig = kernel.principal[0]
    correlation = float(np.abs(kernel.correlation - np.eye(kernel.ndim)).max())

    def raised_by(covariance, shift) -> float:
        """Relative rise of the crop's loss at a simplified kernel (best gain/offset there)."""
        loss = problem.loss_at(GaussianKernel(covariance, shift), point.gain, point.offset)
        return (loss - point.loss) / max(point.loss, 1e-300)

    misaligned = bool(np.linalg.norm(kernel.shift) > MISALIGNED_PX
                      and raised_by(kernel.covariance, None) >= SIGNIFICANT_LOSS)
    round_ = np.eye(kernel.ndim) * float(np.mean(sig**2))
    elliptical = bool(sig[0] >= 0.5 and sig[0] > ELLIPTICAL_RATIO * sig[-1]
                      and raised_by(round_, kernel.shift) >= SIGNIFICANT_LOSS)
    rotated = bool(elliptical and correlation >= ROTATED_CORRELATION
                   and raised_by(np.diag(np.diag(kernel.covariance)), kernel.shift) >= SIGNIFICANT_LOSS)
    return ProbeResult(kernel, misaligned, elliptical, rotated)
