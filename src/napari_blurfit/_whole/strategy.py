"""How a whole-kernel fit is run: starts, crops, the chord method, a problem built ahead.

Multi-start and most iterations run on a central crop with the exact Hessian at every step; the
full image is then polished with that matrix held fixed (the chord method: every step still
follows the exact gradient, and every step is accepted only if the true loss decreases). L1 and
Huber take only their start from an L2 multi-start. docs/design.md ("The whole Gaussian") gives
the reasons and the measurements behind each constant.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .. import _transforms as transforms
from .._gain_offset import best_gain_offset
from .._gaussian import GaussianKernel, GaussianModel
from .._losses import FLOAT32_LOSS_JITTER, L2, get_loss
from .._shift import Frames, as_frames, central, estimate_shift
from .kernel_space import KernelSpace
from .problem import Point, Problem, Settings, check_radius, fits
from .solver import Solved, Status, levenberg_marquardt
from .spectrum import transform_dtype

T = TypeVar("T")

CROP_EDGE = {2: 384, 3: 64}  # smallest edge of the central crop used for the multi-start stage
MIDDLE_EDGE = {2: 1024, 3: 128}  # smallest edge of the crop that rehearses the full image's chord steps
# a crop spans at least this many kernel radii per axis (or the whole axis): its solution starts
# the full image only if the crop holds content well inside the kernel's reach (a 64^3 crop held
# a few beads of a bead slide, or none, and a sigma-9 kernel not at all)
CROP_RADII = 4
CHORD_GROWTH = 1.15  # a full-image problem's padding, in kernel radii (`chord_radius`)
STATISTICS_REACH = 8  # KernelSpace's matrix serves axes at least this many kernel radii long
# solver steps from each start before the best start is solved to the end (3D: 7 starts, and a step
# with the exact matrix costs 27 FFTs of the crop: 2 steps already rank them)
SCOUT_STEPS = {2: 4, 3: 2}
SCOUT_WITHIN = 2.0  # starts scouted: those whose loss is at most this many times the lowest, ...
SCOUT_MOST = 3  # ... and of those the lowest this many
# a crop solved only for a start stops at this relative decrease: the full image moves the
# solution by more than a tighter tolerance would gain
START_RTOL = 1e-4
# L1/Huber Newton steps on the crop when it is only a start: each recomputes the matrix (in 3D six
# Jacobian images of the crop), and the middle crop's chord steps carry on for a sixteenth of that
CROP_NEWTON_STEPS = 1
# 3D: a middle crop whose chord took this many steps or more had a matrix that fits it poorly; the
# loss's own matrix is taken at its end for the full volume (`rehearse`). Not in 2D, where it cost
# the rows without gain/offset more full-image evaluations than it saved
REMATRIX_STEPS = {3: 4}
CURVATURE_AGREES = 1.3  # a robust loss's crop Hessian within this factor of mean curvature x J^T J
EXACT_MATRIX_PIXELS = 2**18  # up to this many pixels the exact L2 polish recomputes the exact matrix
FLOAT32_PIXELS = 2**20  # above this many pixels the full-image stage runs its FFTs in float32
L1_WINDOW_PIXELS = 2**18  # the exact L1 gain/offset's first window: as sure as a start from this many


@dataclass(frozen=True, eq=False)
class FullFit:
    """Result of `fit_whole_gaussian`.

    Attributes
    ----------
    kernel : GaussianKernel
        Fitted covariance (px^2) and shift (px).
    gain, offset : float
        ``target ~ gain * kernel.apply(reference) + offset`` (1 and 0 without ``gain_offset``).
    loss_sum : float
        Sum of the loss over the pixels used; ``loss_name`` says which loss.
    rss : float
        Sum of squared residuals over the pixels used.
    n_used : int
        Pixels that counted.
    evaluations, iterations : int
        Model evaluations (inverse FFTs of the full problem) and accepted solver steps.
    status : Status
        Why the last solve stopped (converged, no descent, or the step budget).
    covariance_stderr, shift_stderr : ndarray
        Gauss-Newton standard errors (delta method for the covariance entries); NaN where unknown.
    gain_stderr, offset_stderr : float
        Likewise (NaN when gain/offset were not fitted).
    delta : float or None
        Huber threshold used.
    residual : ndarray
        ``gain * kernel.apply(reference) + offset - target`` at every pixel (used or not), frames
        first, in the dtype the fit ran in. `fit_blur`'s checks turn it into the fitted image in
        place (the fit is done with it by then).
    """

    kernel: GaussianKernel
    gain: float
    offset: float
    loss_sum: float
    loss_name: str
    rss: float
    n_used: int
    evaluations: int
    iterations: int
    status: Status
    covariance_stderr: np.ndarray
    shift_stderr: np.ndarray
    gain_stderr: float
    offset_stderr: float
    delta: float | None
    residual: np.ndarray

    @property
    def loss(self) -> float:
        """Mean loss per pixel used."""
        return self.loss_sum / max(self.n_used, 1)


def fit_whole_gaussian(reference, target, used=None, *, loss: str = "l2", gain_offset: bool = False,
                       full_covariance: bool = False, shift: bool = True, isotropic: bool = False,
                       start_sigma, delta: float | None = None, truncate: float = 4.0,
                       workers: int | None = None, callback=None,
                       centred_loss: float | None = None, noise: float = 0.0) -> FullFit:
    """Fit ``target ~ gain * K * reference + offset`` with a Gaussian ``K`` of full covariance and shift.

    Parameters
    ----------
    reference, target : array_like
        Same shape ``(frames..., *spatial)``; ``d = len(start_sigma)`` spatial axes last. One kernel,
        gain and offset for all frames.
    used : array_like of bool, optional
        True where a pixel counts (mask, border band); broadcast to the images. NaN/inf pixels are
        left out as well.
    loss : {"l2", "l1", "huber"}
        Pixel loss.
    gain_offset : bool
        Fit a gain and an offset too.
    full_covariance : bool
        Rotated ellipse (all covariance entries); else one sigma per axis.
    shift : bool
        Fit the kernel's centre; else it stays at 0.
    isotropic : bool
        One sigma for every axis (a round kernel; with ``shift``, a round kernel moved).
        Excludes ``full_covariance``.
    start_sigma : sequence of float
        Per-axis start (px), e.g. the spectral fit's sigma.
    delta : float, optional
        Huber threshold; default 1.345 noise sigmas, noise from the L2 fit's residual.
    truncate : float
        Kernel truncation in standard deviations (plus the shift).
    workers : int, optional
        FFT threads (default all cores). With more than one, the full image's problem is built on
        a thread of its own while the crops are solved (`prefetch`).
    callback : callable, optional
        Called with a short text before each solver step; an exception in it stops the fit.
    centred_loss : float, optional
        L2 without a mask: the loss of the centred kernel of ``start_sigma`` where known (the
        spectral fit's). The fit never ends above the centred kernel's loss; known, it is not
        evaluated again.
    noise : float
        The reference's noise variance per pixel that an L2 fit is corrected for (`Settings`).

    Returns
    -------
    FullFit

    Raises
    ------
    ValueError
        Unknown loss, shapes differ, a spatial axis shorter than 8 px, a kernel too large for the
        image, or no pixel used.
    """
    objective = get_loss(loss)
    d = len(start_sigma)
    frames = as_frames(reference, target, used, d)
    model = GaussianModel(d, float(truncate), full_covariance, shift, isotropic)
    settings = Settings(model, objective, gain_offset, noise)
    centred = model.starts(start_sigma, np.zeros(d))[0]  # the axis-aligned, centred fit's kernel
    check_holds(model, centred, frames.target.shape[1:])
    starts = model.starts(start_sigma, shift_start(frames, settings, centred) if shift else np.zeros(d))
    if shift and np.any(starts[0].shift != 0):  # a shift read from sparse or dim content may be wrong
        spatial = frames.target.shape[1:]
        starts = [k for k in starts if fits(model.radius(k), spatial)]
        starts.append(centred)
    if objective.least_squares and frames.used is None:
        problem, solved, jtj = fit_l2(frames, settings, starts, centred, workers, callback,
                                      centred_loss=centred_loss)
        return result(problem, solved, jtj)
    return fit_general(frames, settings, starts, centred, delta, workers, callback)


def holds(spatial, sigma, truncate: float) -> bool:
    """Whether an image of ``spatial`` shape holds a centred kernel of per-axis ``sigma``."""
    return fits(GaussianKernel.from_sigma(sigma).grid(truncate).radius, spatial)


def check_holds(model: GaussianModel, kernel: GaussianKernel, spatial) -> None:
    """Raise, in the user's terms, unless the image holds ``kernel`` (2 radius + 1 px per axis)."""
    radius = model.radius(kernel)
    if fits(radius, spatial):
        return
    sigma = ", ".join(f"{s:.3g}" for s in kernel.sigma)
    # the longest truncation that holds it, to a tenth below
    shorter = np.floor(10 * min(((n - 1) // 2 - abs(m) - 0.5) / s
                                for n, s, m in zip(spatial, kernel.sigma, kernel.shift))) / 10
    smaller = (f"truncate={shorter:g} (a kernel cut shorter)" if shorter >= 2
               else f"a kernel cut shorter than truncate={model.truncate:g}")
    raise ValueError(
        f"a Gaussian of sigma ({sigma}) px does not fit the image (spatial shape {tuple(spatial)}): "
        f"cut at truncate={model.truncate:g} (sigmas) it reaches {tuple(radius)} px from its "
        "centre, and a shift or a rotation needs the whole kernel inside the image (2 radius + 1 px "
        f"per axis). Use a larger image, {smaller}, or the axis-aligned, centred fit "
        "(shift=False, full_covariance=False), which has no such limit")


def crop_edges(settings: Settings, kernels, spatial, base: int) -> tuple[int, ...]:
    """Per-axis edge of a central crop for ``kernels``: `CROP_RADII` radii, at least ``base``."""
    radius = np.max([settings.model.radius(k) for k in kernels], axis=0)
    return tuple(int(min(n, max(base, CROP_RADII * r + 1))) for n, r in zip(spatial, radius))


def start_crop(frames: Frames, settings: Settings, starts) -> tuple[Frames, bool]:
    """The multi-start's central crop (`crop_edges`, up to 4 frames), and whether it is wide.

    Wide: `KernelSpace`'s statistics would not serve it (the kernel spans much of an axis). A band
    of the kernel's radius along the faces it cut is then left out of the loss (`cut_band`): its
    answer is then the image's, not one biased by the faces.
    """
    spatial = frames.target.shape[1:]
    edges = crop_edges(settings, starts, spatial, CROP_EDGE.get(settings.ndim, 64))
    wide = not statistics_serve(settings, starts, tuple(min(n, e) for n, e in zip(spatial, edges)))
    band = np.max([settings.model.radius(k) for k in starts], axis=0) if wide else None
    return central(frames, edges, 4, band=band), wide


def shift_start(frames: Frames, settings: Settings, centred: GaussianKernel) -> np.ndarray:
    """The shift's start: the cross-correlation of a crop sized for the kernel (the fit refines it)."""
    edges = crop_edges(settings, [centred], frames.target.shape[1:], CROP_EDGE.get(settings.ndim, 64))
    crop = central(frames, edges, 2)
    return estimate_shift(crop.reference, crop.target, ndim=settings.ndim,
                          max_pixels=crop.target[0].size)


def settle(problem: Problem, solved: Solved, callback) -> Solved:
    """``solved``, or where a held matrix's chord ran out of steps still descending, finished.

    The problem's own matrix there (a Jacobian image per parameter), then chord steps with it,
    secant-updated: a crop that misleads the start (a small one with a band, hot pixels, a misfit)
    leaves a chord short of the minimum. A new matrix at every step converges no faster and costs
    the Jacobian images each time (27 s of them on a misfit 128 x 256 x 256, against 9 s).
    """
    if solved.status is not Status.MAX_ITERATIONS:
        return solved
    precision = FLOAT32_LOSS_JITTER if problem.spectrum.dtype == np.float32 else 0.0
    return levenberg_marquardt(problem, solved.point, refresh=False, max_iter=12, rtol=1e-7,
                               callback=callback, precision=precision)


def not_worse_than(problem: Problem, solved: Solved, kernel: GaussianKernel, callback,
                   loss: float | None = None) -> Solved:
    """``solved``, or where ``kernel`` (the centred, axis-aligned fit) beats it, a solve from there.

    A whole-Gaussian fit contains that kernel: ending above its loss means a start in the wrong
    basin (a crop without content, a shift read from noise), never a better answer. ``loss``:
    the kernel's loss where known already (an unmasked L2 fit's spectral start): no evaluation.
    """
    point = solved.point
    if loss is not None and point.loss <= loss:
        return solved
    base = problem.evaluate(problem.model.params(kernel), point.gain, point.offset)
    if base.loss >= point.loss:
        return solved
    precision = FLOAT32_LOSS_JITTER if problem.spectrum.dtype == np.float32 else 0.0
    return levenberg_marquardt(problem, base, refresh=False, matrix=solved.matrix, max_iter=12,
                               rtol=1e-7, callback=callback, precision=precision)


def check_starts(starts: list, settings: Settings, crop: Frames) -> None:
    """Raise unless every start kernel fits the crop it is solved on."""
    for kernel in starts:
        check_radius(settings.model.radius(kernel), crop.target.shape[1:])


def best_start(problem: Problem, starts, callback, *, max_iter: int, rtol: float, scout: int,
               statistics: KernelSpace | None = None) -> Solved:
    """A few steps from each start decide the basin; the best one goes on to the end.

    The first matrix, at the lowest start, is the exact one, or where ``statistics`` are given
    their ``J^T J``. Only the `SCOUT_MOST` lowest starts within `SCOUT_WITHIN` of the lowest are
    scouted: a start that far above (the centred one beside a shift read clearly) costs steps and
    never won. Each start is evaluated once: the scouted ones' points are kept for their steps.
    """
    points = [problem.evaluate(problem.model.params(kernel), 1.0, 0.0) for kernel in starts]
    if len(points) > 1:
        losses = np.array([point.loss for point in points])
        order = [i for i in np.argsort(losses, kind="stable")[:SCOUT_MOST]
                 if losses[i] - losses.min() <= (SCOUT_WITHIN - 1) * abs(losses.min())]
        points = [points[i] for i in order]
    best, matrix = None, None
    precision = FLOAT32_LOSS_JITTER if problem.spectrum.dtype == np.float32 else 0.0
    for point in points:
        if matrix is None and statistics is not None:
            matrix = L2.constant_curvature * statistics.matrix_at(point.kernel, point.gain)
        steps = max_iter if len(points) == 1 else scout
        # one matrix (the exact one or the statistics'), at the lowest start, serves every start
        # (the solver's secant updates and its fallback to the problem's own keep the steps honest)
        solved = levenberg_marquardt(problem, point, refresh=False, matrix=matrix, max_iter=steps,
                                     rtol=rtol, callback=callback, precision=precision)
        matrix = solved.matrix if matrix is None else matrix
        if best is None or solved.point.loss < best.point.loss:
            best = solved
    if len(points) > 1:
        best = levenberg_marquardt(problem, best.point, refresh=False, matrix=best.matrix,
                                   max_iter=max_iter, rtol=rtol, callback=callback, precision=precision)
    return best


def multistart(frames: Frames, settings: Settings, starts, workers, callback, *, max_iter: int = 40,
               rtol: float = 1e-10, exact: bool = True, dtype=np.float64) -> tuple[Problem, Solved]:
    """Best L2 solution over the start kernels.

    The matrix is exact, or without ``exact`` (a crop that only finds a start, a probe) one from
    statistics: kernel-sized products instead of three image FFTs per parameter (in 3D, 27 FFTs
    of the crop per step). Unmasked, `KernelSpace`'s at every step; with a band along the cut
    faces (a wide kernel, `start_crop`), the crop grid's own (`KernelSpace.on_grid`) to begin
    with, which the solver's secant updates correct. ``dtype``: of the FFTs (float32 for a crop
    that only finds a start). Returns the crop's problem (to evaluate other kernels on it) and
    the solution.
    """
    l2 = settings.with_loss(L2())
    check_starts(starts, settings, frames)
    radius = settings.model.pad_radius(starts)
    dtype = transform_dtype(dtype, frames.reference, frames.target)
    from_statistics = not exact and frames.used is None
    space = KernelSpace(frames, l2, radius, workers, dtype) if from_statistics else None
    problem = Problem(*frames, l2, radius, workers, space=space, dtype=dtype)
    on_grid = None if exact or from_statistics else KernelSpace.on_grid(problem, starts[0])
    solved = best_start(problem, starts, callback, max_iter=max_iter, rtol=rtol,
                        scout=SCOUT_STEPS.get(settings.ndim, 2), statistics=on_grid)
    return problem, solved


def fit_l2(frames: Frames, settings: Settings, starts, centred: GaussianKernel, workers, callback, *,
           centred_loss: float | None = None, max_iter: int | None = None,
           rtol: float = 1e-9) -> tuple[Problem, Solved, np.ndarray]:
    """L2 without a mask: multi-start on a central crop, then the exact loss of the whole image.

    Images of at most `EXACT_MATRIX_PIXELS` are solved directly with the exact matrix at each step.
    Larger ones start from the crop's solution and keep one matrix, the whole image's Gauss-Newton
    matrix from `KernelSpace` where it serves (`statistics_serve`), else from the image problem's
    own grid (`KernelSpace.on_grid`), at the start, also for the errors (the chord method: each
    step follows the exact gradient and must lower the exact loss), in float32 above
    `FLOAT32_PIXELS`. The solution is never worse than the ``centred`` kernel (`not_worse_than`).
    Also returns ``J^T J`` at the solution, for the standard errors.
    """
    size, model, curvature = frames.target.size, settings.model, L2.constant_curvature
    if size <= EXACT_MATRIX_PIXELS:
        _, scout = multistart(frames, settings, starts, workers, callback, max_iter=max_iter or 40)
        problem = Problem(*frames, settings, model.pad_radius([scout.point.kernel]), workers)
        point = problem.evaluate(scout.point.x, scout.point.gain, scout.point.offset)
        solved = levenberg_marquardt(problem, point, refresh=True, max_iter=max_iter or 40, rtol=rtol,
                                     callback=callback)
        checked = not_worse_than(problem, solved, centred, callback, centred_loss)
        jtj = solved.matrix / curvature if checked is solved else problem.gauss_newton(checked.point)
        return problem, checked, jtj
    crop, _ = start_crop(frames, settings, starts)
    # in float32: a start needs no more than the loss's float32 resolution (START_RTOL is above it)
    local, scout = multistart(crop, settings, starts, workers, callback, rtol=START_RTOL, exact=False,
                              dtype=np.float32)
    start = scout.point.without_arrays()
    del local, scout, crop  # the crop's arrays go before the image's are made
    dtype = transform_dtype(np.float32 if size > FLOAT32_PIXELS else np.float64, frames.reference,
                            frames.target)
    radius = chord_radius(settings, [start.kernel])
    problem = chord_problem(frames, settings, radius, workers, dtype)
    if statistics_serve(settings, [start.kernel], frames.target.shape[1:]):
        gauss_newton = KernelSpace(frames, settings, radius, workers, dtype).matrix_at
    else:  # from the problem's own grid, at the start: the chord moves the kernel little
        held = KernelSpace.on_grid(problem, start.kernel).matrix_at(start.kernel, start.gain)

        def gauss_newton(kernel, gain):
            return held
    # the crop's gain: the matrix only preconditions
    matrix = curvature * gauss_newton(start.kernel, start.gain)
    # float32 losses are exact to ~1e-8: stop at a relative decrease of 1e-7, and do not chase noise
    solved = levenberg_marquardt(problem, problem.evaluate(start.x, start.gain, start.offset),
                                 refresh=False, matrix=matrix, max_iter=max_iter or 12,
                                 rtol=max(rtol, 1e-7), callback=callback,
                                 precision=FLOAT32_LOSS_JITTER if dtype == np.float32 else 0.0)
    checked = not_worse_than(problem, settle(problem, solved, callback), centred, callback, centred_loss)
    if checked is not solved and not statistics_serve(settings, [start.kernel], frames.target.shape[1:]):
        # solved again from the centred kernel, far from the crop's solution: the image's matrix
        return problem, checked, problem.gauss_newton(checked.point)
    return problem, checked, gauss_newton(checked.point.kernel, checked.point.gain)


def statistics_held(settings: Settings, wide: bool, frames: Frames) -> bool:
    """Whether a robust fit's chord steps take the image's grid statistics (`KernelSpace.on_grid`).

    Where the start crop is wide (its used voxels few: its matrix fits the image poorly), the
    loss is not least squares (masked L2 keeps exact matrices) and no mask weighs the voxels.
    """
    return wide and frames.used is None and not settings.loss.least_squares


def curvature_serves(hessian: np.ndarray, scaled: np.ndarray, n_kernel: int) -> bool:
    """Whether a robust loss's Hessian on the crop is its mean curvature times ``J^T J``.

    Compared on the kernel parameters' diagonal, within `CURVATURE_AGREES` either way. It is
    where the residual is noise; where the model misfits (an L1 fit with no gain/offset of a
    target at 0.8 gain), the residual's large values leave the loss flat where the detail is, and
    a chord on the scaled ``J^T J`` ran out of steps (then 44 s of exact Hessians on 128 x 512 x 512).
    """
    ratio = np.diag(hessian)[:n_kernel] / np.maximum(np.diag(scaled)[:n_kernel], 1e-300)
    return bool(np.all(np.abs(np.log(np.maximum(ratio, 1e-300))) <= np.log(CURVATURE_AGREES)))


def statistics_serve(settings: Settings, kernels, spatial) -> bool:
    """Whether `KernelSpace`'s matrix from statistics serves an image of ``spatial`` shape.

    It replaces the reflected image near the faces by the reference's autocorrelation: close where
    the kernel is small beside every axis (`STATISTICS_REACH`), wrong where its edge strips are most
    of the volume (a sigma-6 kernel in a 96-plane volume of beads: shift cross terms 50x the true).
    """
    radius = np.max([settings.model.radius(k) for k in kernels], axis=0)
    return all(STATISTICS_REACH * r <= n for r, n in zip(radius, spatial))


def noise_scale(point: Point, problem: Problem) -> float:
    """Noise sigma of a residual, ``sqrt(pi/2) mean |r|`` over the pixels used (floored)."""
    r = point.residual if problem.used is None else point.residual[problem.used > 0]
    return max(float(np.sqrt(np.pi / 2) * np.mean(np.abs(r))), 1e-12 * float(np.abs(problem.target).max()))


def polish_gain_offset(problem: Problem, point: Point) -> Point:
    """The loss's exact gain and offset at the final kernel (never worse)."""
    keep = slice(None) if problem.used is None else problem.used > 0
    model, target = problem.model_of(point)[keep], problem.target[keep]
    gain, offset, _ = best_gain_offset(problem.loss, model, target, point.gain, point.offset,
                                       n_eff=L1_WINDOW_PIXELS)
    trial = problem.evaluate(point.x, gain, offset)
    return trial if trial.loss < point.loss else point


def fit_general(frames: Frames, settings: Settings, starts, centred: GaussianKernel, threshold, workers,
                callback) -> FullFit:
    """Masked L2, L1 and Huber: multi-start on a central crop, then the full image.

    The crop is solved with the loss's own Hessian at every step: to the end where it is the
    image, else for `CROP_NEWTON_STEPS` (a start, and the matrix at it). The full image then keeps
    the crop's matrix scaled to its pixel count (the chord method: every step follows the exact
    gradient of the true loss and must lower it), so a full-image step costs one model and one
    gradient, not a Jacobian image per parameter; in float32 above `FLOAT32_PIXELS`. Where the
    start crop is wide, nothing is masked (`statistics_held`) and the crop's Hessian is the loss's
    mean curvature times ``J^T J`` (`curvature_serves`), the L1/Huber chord takes the image's own
    ``J^T J`` (`KernelSpace.on_grid`) times that curvature instead, with no middle crop. On a large
    image a middle crop (`MIDDLE_EDGE`) takes those chord steps first: its solution starts the full
    image closer. Meanwhile the full image's problem is built on a thread of its own (`prefetch`).
    ``threshold``: a Huber threshold given by the user. The solution is never worse than the
    ``centred`` kernel (`not_worse_than`).
    """
    model, least_squares = settings.model, settings.loss.least_squares
    crop, wide = start_crop(frames, settings, starts)  # sized to hold the starts
    crop_is_image = crop.reference.shape == frames.reference.shape
    # the full image's problem is built (and paged in) while the crops are solved; not beside a
    # crop solved with exact matrices for a wide kernel (`start_crop`), whose Jacobian images and
    # the image's grid together took 7.8x the inputs (L1, sigma (9, 3, 3) on 128x256x256)
    def build():
        return chord_problem(frames, settings, chord_radius(settings, starts), workers).page_in()

    full_problem = None if crop_is_image else prefetch(build, 1 if wide else workers)
    # L1/Huber take only a start from the L2 multi-start, whose first matrix the crop's statistics
    # serve (the robust Newton step below takes the exact one); masked L2 keeps its exact matrix
    local, solved = multistart(crop, settings, starts, workers, callback, exact=least_squares,
                               rtol=1e-10 if least_squares else START_RTOL,
                               dtype=np.float64 if least_squares or crop_is_image else np.float32)
    if not least_squares:
        local = Problem(*crop, settings, model.pad_radius([solved.point.kernel]), workers)
        point = local.evaluate(solved.point.x, solved.point.gain, solved.point.offset)
        settings = settings.with_loss(settings.loss.for_noise(noise_scale(point, local), threshold))
        # the loss's threshold moves its value, not the residual: no second grid or model
        local = local.with_settings(settings)
        point = point._replace(loss=local.loss_of(point.residual))
    if crop_is_image:  # solved
        if not least_squares:
            solved = levenberg_marquardt(local, point, refresh=True, rtol=1e-6, callback=callback,
                                         max_iter=12)
        problem, jtj = local, None
    else:
        l2_matrix = solved.matrix  # the crop's L2 Hessian at its solution (secant-updated)
        if not least_squares:  # a start, and the loss's Hessian for the chord steps
            residual = point.residual if local.used is None else point.residual[local.used > 0]
            curvature = settings.loss.mean_curvature(residual)
            del residual
            solved = levenberg_marquardt(local, point, refresh=True, rtol=1e-6, callback=callback,
                                         max_iter=CROP_NEWTON_STEPS)
        if statistics_held(settings, wide, frames) and curvature_serves(
                solved.matrix, curvature * l2_matrix / L2.constant_curvature, model.n_params):
            # the loss's Hessian is its mean curvature times J^T J here: the image's own
            # (`KernelSpace.on_grid`), also the errors', where the crop's matrix, its used voxels
            # few, fitted poorly; so close a matrix needs no middle crop's rehearsal (it took as
            # many full-image evaluations, L1 in 3D, and a quarter of a volume's more)
            start = solved.point.without_arrays()
            del local, solved, point  # the crop's arrays go before the image's are made
            problem = full_problem().with_settings(settings)
            jtj = KernelSpace.on_grid(problem, start.kernel).matrix_at(start.kernel, start.gain)
            per_pixel = curvature * jtj / problem.n_used
            problem, solved = chord(frames, settings, start, per_pixel, workers, callback, problem=problem)
        else:
            per_pixel = solved.matrix / max(local.n_used, 1)  # the crop's matrix, per pixel used
            # standard errors need the least-squares matrix, not the loss's: the crop's at its
            # solution, scaled by the content the image holds; then the crop's arrays go
            jtj = local.gauss_newton(solved.point) * (content(frames) / content(local))
            start = solved.point.without_arrays()
            del local, solved
            start, per_pixel = rehearse(frames, settings, start, per_pixel, workers, callback)
            problem, solved = chord(frames, settings, start, per_pixel, workers, callback,
                                    problem=full_problem().with_settings(settings))
    checked = not_worse_than(problem, settle(problem, solved, callback), centred, callback)
    if jtj is None or checked is not solved:  # solved on the image, or again far from the crop's
        jtj = problem.gauss_newton(checked.point)
    # the exact gain/offset at the final kernel, in float64. In float32 (large images) the chord's
    # joint steps already stop at the loss's rounding, and the polish would cost seconds for a
    # change below it
    if settings.gain_offset and not least_squares and problem.spectrum.dtype == np.float64:
        checked = checked._replace(point=polish_gain_offset(problem, checked.point))
    return result(problem, checked, jtj)


def content(frames) -> float:
    """The reference's variance summed over the pixels used (floored above 0), of frames or a problem.

    Scales a crop's ``J^T J`` to the image: a crop of a bead slide holds more or fewer beads than
    its share of the pixels.
    """
    ref = frames.reference
    if frames.used is not None:
        ref = ref[frames.used > 0]
    return max(float(np.var(ref, dtype=np.float64)) * ref.size, 1e-300)


def rehearse(frames: Frames, settings: Settings, start: Point, per_pixel: np.ndarray, workers,
             callback) -> tuple[Point, np.ndarray]:
    """The chord steps on a middle crop (`MIDDLE_EDGE`) first, on images at least 4x larger.

    Returns a start and a matrix per pixel used for the full image. The middle crop's chord steps
    start the full image closer, at a sixteenth of a full step's cost. In 3D, where they took
    `REMATRIX_STEPS` or more, the loss's own matrix at their end (one Jacobian image of the middle
    crop per parameter) replaces the small crop's: within a kernel radius of its faces, where the
    crop's reflection stands in for the image, lie most of a 64^3 crop's voxels (a tenth of a
    384^2 crop's pixels). Only parameters are returned: no crop-sized arrays stay alive during
    the full image's steps.
    """
    middle = central(frames, crop_edges(settings, [start.kernel], frames.target.shape[1:],
                                        MIDDLE_EDGE.get(settings.ndim, 128)), 4)
    if middle.target.size * 4 > frames.target.size:
        return start, per_pixel
    # in float32 whatever its size: a start needs no more than the loss's float32 resolution
    problem, solved = chord(middle, settings, start, per_pixel, workers, callback, dtype=np.float32)
    point = solved.point
    rematrix_from = REMATRIX_STEPS.get(settings.ndim)
    if rematrix_from is None or solved.iterations < rematrix_from:  # the crop's matrix serves
        return point.without_arrays(), per_pixel
    matrix = problem.normal(point, matrix=True).matrix
    return point.without_arrays(), matrix / max(problem.n_used, 1)


def chord_radius(settings: Settings, kernels) -> tuple[int, ...]:
    """The padding of a problem that chord steps polish on: `CHORD_GROWTH` beyond the kernels.

    Its kernel is nearly final (a crop's solution), so it is padded for a small growth, not the
    half a search leaves room for: a sigma-9 axial kernel's grid was 2.7x the volume at 1.5 (a
    kernel that outgrows it rebuilds the grid, `Problem._ensure_radius`).
    """
    radius = np.max([settings.model.radius(k) for k in kernels], axis=0)
    return tuple(int(np.ceil(r * CHORD_GROWTH)) + 2 for r in radius)


def chord_problem(frames: Frames, settings: Settings, radius, workers, dtype=None) -> Problem:
    """The problem chord steps run on: no models kept; FFTs in ``dtype``.

    By default float32 above `FLOAT32_PIXELS`, else float64.
    """
    if dtype is None:
        dtype = np.float32 if frames.target.size > FLOAT32_PIXELS else np.float64
    return Problem(*frames, settings, radius, workers, dtype=dtype, keep_models=False)


def chord(frames: Frames, settings: Settings, start: Point, per_pixel: np.ndarray, workers,
          callback, dtype=None, problem: Problem | None = None) -> tuple[Problem, Solved]:
    """Chord steps on ``frames`` from ``start``, with the crop's matrix scaled to the pixels used.

    ``problem``: one built for ``frames`` already (`chord_problem`), else one is built with FFTs
    in ``dtype``.
    """
    if problem is None:
        problem = chord_problem(frames, settings, chord_radius(settings, [start.kernel]), workers, dtype)
    matrix = per_pixel * problem.n_used
    # float32 losses are exact to ~1e-7 of themselves: no decrease below that is chased.
    # (The start point is not held here: its arrays go as soon as the solver leaves it.)
    precision = FLOAT32_LOSS_JITTER if problem.spectrum.dtype == np.float32 else 0.0
    return problem, levenberg_marquardt(problem, problem.evaluate(start.x, start.gain, start.offset),
                                        refresh=False, matrix=matrix, max_iter=12, rtol=1e-7,
                                        callback=callback, precision=precision)


def prefetch(build: Callable[[], T], workers) -> Callable[[], T]:
    """``build()`` started now on a thread of its own; the returned function waits for its result.

    With one core allowed (``workers``) nothing runs ahead: the function calls ``build`` itself.
    The thread's work is mostly paging in fresh memory (`Problem.page_in`), which the solver on
    the crops, largely single-threaded, leaves a core for. Should the fit stop first (an error,
    a cancel), the thread finishes its build alone and the result is dropped.
    """
    if transforms.threads(-1 if workers is None else workers) < 2:
        return build
    pool = ThreadPoolExecutor(1, thread_name_prefix="blurfit-prefetch")
    future = pool.submit(build)
    pool.shutdown(wait=False)  # the thread ends with its one task
    return future.result


def result(problem: Problem, solved: Solved, jtj: np.ndarray) -> FullFit:
    """Pack the solution with Gauss-Newton standard errors from ``jtj`` (``J^T J`` at it)."""
    point, settings = solved.point, problem.settings
    rss = problem.rss(point)
    p = len(jtj)
    s2 = rss / max(problem.n_used - p, 1)
    cov = problem.parameter_covariance(jtj, s2, point)
    k = len(point.x)
    errors = settings.model.standard_errors(point.kernel, cov[:k, :k])
    go = settings.gain_offset
    return FullFit(
        kernel=point.kernel, gain=float(point.gain), offset=float(point.offset),
        loss_sum=float(point.loss), loss_name=settings.loss.name, rss=rss, n_used=problem.n_used,
        evaluations=problem.evaluations, iterations=solved.iterations, status=solved.status,
        covariance_stderr=errors["covariance"], shift_stderr=errors["shift"],
        gain_stderr=float(np.sqrt(abs(cov[k, k]))) if go else float("nan"),
        offset_stderr=float(np.sqrt(abs(cov[k + 1, k + 1]))) if go else float("nan"),
        delta=settings.loss.delta if settings.loss.has_threshold else None, residual=point.residual,
    )
