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
from .problem import Point, Problem, Settings, check_radius
from .solver import Solved, Status, levenberg_marquardt

T = TypeVar("T")

CROP_EDGE = {2: 384, 3: 64}  # edge of the central crop used for the multi-start stage
MIDDLE_EDGE = {2: 1024, 3: 128}  # edge of the crop that rehearses the full image's chord steps
# solver steps from each start before the best start is solved to the end (3D: 7 starts, and a step
# with the exact matrix costs 27 FFTs of the crop: 2 steps already rank them)
SCOUT_STEPS = {2: 4, 3: 2}
# a crop solved only for a start stops at this relative decrease: the full image moves the
# solution by more than a tighter tolerance would gain
START_RTOL = 1e-6
# L1/Huber Newton steps on the crop when it is only a start: each recomputes the matrix (in 3D six
# Jacobian images of the crop), and the middle crop's chord steps carry on for a sixteenth of that
CROP_NEWTON_STEPS = 1
# 3D: a middle crop whose chord took this many steps or more had a matrix that fits it poorly; the
# loss's own matrix is taken at its end for the full volume (`rehearse`). Not in 2D, where it cost
# the rows without gain/offset more full-image evaluations than it saved
REMATRIX_STEPS = {3: 4}
EXACT_MATRIX_PIXELS = 2**18  # up to this many pixels the exact L2 polish recomputes the exact matrix
FLOAT32_PIXELS = 2**20  # above this many pixels the full-image stage runs its FFTs in float32
SHIFT_START_PIXELS = 2**16  # crop of the shift's start estimate in a fit (the fit refines it)
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
                       workers: int | None = None, callback=None, noise: float = 0.0) -> FullFit:
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
    shift0 = (estimate_shift(frames.reference, frames.target, ndim=d, max_pixels=SHIFT_START_PIXELS)
              if shift else np.zeros(d))
    model = GaussianModel(d, float(truncate), full_covariance, shift, isotropic)
    settings = Settings(model, objective, gain_offset, noise)
    starts = model.starts(start_sigma, shift0)
    if objective.least_squares and frames.used is None:
        problem, solved, jtj = fit_l2(frames, settings, starts, workers, callback)
        return result(problem, solved, jtj)
    return fit_general(frames, settings, starts, delta, workers, callback)


def check_starts(starts: list, settings: Settings, crop: Frames) -> None:
    """Raise unless every start kernel fits the crop it is solved on."""
    for kernel in starts:
        check_radius(settings.model.radius(kernel), crop.target.shape[1:])


def best_start(problem: Problem, starts, callback, *, max_iter: int, rtol: float, scout: int) -> Solved:
    """A few exact-matrix steps from each start decide the basin; the best one goes on to the end."""
    best = None
    for kernel in starts:
        point = problem.evaluate(problem.model.params(kernel), 1.0, 0.0)
        steps = max_iter if len(starts) == 1 else scout
        solved = levenberg_marquardt(problem, point, refresh=True, max_iter=steps, rtol=rtol,
                                     callback=callback)
        if best is None or solved.point.loss < best.point.loss:
            best = solved
    if len(starts) > 1:
        best = levenberg_marquardt(problem, best.point, refresh=True, max_iter=max_iter, rtol=rtol,
                                   callback=callback)
    return best


def multistart(frames: Frames, settings: Settings, starts, workers, callback, *, max_iter: int = 40,
               rtol: float = 1e-10, exact: bool = True) -> tuple[Problem, Solved]:
    """Best L2 solution over the start kernels, each solved with a fresh matrix at every step.

    The matrix is exact, or without ``exact`` (a crop that only finds the start; no mask) the one
    `KernelSpace` makes from statistics: kernel-sized convolutions instead of three image FFTs per
    parameter (in 3D, 27 FFTs of the crop per step). Returns the crop's problem (to evaluate other
    kernels on it) and the solution.
    """
    l2 = settings.with_loss(L2())
    check_starts(starts, settings, frames)
    radius = settings.model.pad_radius(starts)
    space = None if exact or frames.used is not None else KernelSpace(frames, l2, radius, workers, np.float64)
    problem = Problem(*frames, l2, radius, workers, space=space)
    solved = best_start(problem, starts, callback, max_iter=max_iter, rtol=rtol,
                        scout=SCOUT_STEPS.get(settings.ndim, 2))
    return problem, solved


def fit_l2(frames: Frames, settings: Settings, starts, workers, callback, *, max_iter: int | None = None,
           rtol: float = 1e-9) -> tuple[Problem, Solved, np.ndarray]:
    """L2 without a mask: multi-start on a central crop, then the exact loss of the whole image.

    Images of at most `EXACT_MATRIX_PIXELS` are solved directly with the exact matrix at each step.
    Larger ones start from the crop's solution and keep one matrix, the whole image's Gauss-Newton
    matrix from `KernelSpace` (the chord method: each step follows the exact gradient and must lower
    the exact loss; that matrix is off by the crop's edge strips only), in float32 above
    `FLOAT32_PIXELS`. Also returns ``J^T J`` at the solution, for the standard errors.
    """
    size, model, curvature = frames.target.size, settings.model, L2.constant_curvature
    if size <= EXACT_MATRIX_PIXELS:
        _, scout = multistart(frames, settings, starts, workers, callback, max_iter=max_iter or 40)
        problem = Problem(*frames, settings, model.pad_radius([scout.point.kernel]), workers)
        point = problem.evaluate(scout.point.x, scout.point.gain, scout.point.offset)
        solved = levenberg_marquardt(problem, point, refresh=True, max_iter=max_iter or 40, rtol=rtol,
                                     callback=callback)
        return problem, solved, solved.matrix / curvature
    crop = central(frames, CROP_EDGE.get(settings.ndim, 64), 4)
    _, scout = multistart(crop, settings, starts, workers, callback, exact=False, rtol=START_RTOL)
    start = scout.point
    dtype = np.float32 if size > FLOAT32_PIXELS else np.float64
    radius = model.pad_radius([start.kernel])
    space = KernelSpace(frames, settings, radius, workers, dtype)
    problem = chord_problem(frames, settings, radius, workers, dtype)
    # the crop's gain: the matrix only preconditions
    matrix = curvature * space.matrix_at(start.kernel, start.gain)
    # float32 losses are exact to ~1e-8: stop at a relative decrease of 1e-7, and do not chase noise
    # (the start point is not held here: its arrays go as soon as the solver leaves it)
    solved = levenberg_marquardt(problem, problem.evaluate(start.x, start.gain, start.offset),
                                 refresh=False, matrix=matrix, max_iter=max_iter or 12,
                                 rtol=max(rtol, 1e-7), callback=callback,
                                 precision=FLOAT32_LOSS_JITTER if dtype == np.float32 else 0.0)
    return problem, solved, space.matrix_at(solved.point.kernel, solved.point.gain)


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


def fit_general(frames: Frames, settings: Settings, starts, threshold, workers, callback) -> FullFit:
    """Masked L2, L1 and Huber: multi-start on a central crop, then the full image.

    The crop is solved with the loss's own Hessian at every step: to the end where it is the
    image, else for `CROP_NEWTON_STEPS` (a start, and the matrix at it). The full image then keeps
    the crop's matrix scaled to its pixel count (the chord method: every step follows the exact
    gradient of the true loss and must lower it), so a full-image step costs one model and one
    gradient, not a Jacobian image per parameter; in float32 above `FLOAT32_PIXELS`. On a large
    image a middle crop (`MIDDLE_EDGE`) takes those chord steps first: its solution starts the full
    image closer. Meanwhile the full image's problem is built on a thread of its own (`prefetch`).
    ``threshold``: a Huber threshold given by the user.
    """
    model, least_squares = settings.model, settings.loss.least_squares
    crop = central(frames, CROP_EDGE.get(settings.ndim, 64), 4)
    crop_is_image = crop.reference.shape == frames.reference.shape
    check_starts(starts, settings, crop)  # before anything is built for kernels too large for it
    # the full image's problem is built (and paged in) while the crops are solved
    full_problem = None if crop_is_image else prefetch(
        lambda: chord_problem(frames, settings, model.pad_radius(starts), workers).page_in(), workers)
    # L1/Huber take only a start from the L2 multi-start; masked L2 keeps its matrix (exact)
    local, solved = multistart(crop, settings, starts, workers, callback, exact=least_squares,
                               rtol=1e-10 if least_squares else START_RTOL)
    if not least_squares:
        local = Problem(*crop, settings, model.pad_radius([solved.point.kernel]), workers)
        point = local.evaluate(solved.point.x, solved.point.gain, solved.point.offset)
        settings = settings.with_loss(settings.loss.for_noise(noise_scale(point, local), threshold))
        local = Problem(*crop, settings, model.pad_radius([solved.point.kernel]), workers)
        point = local.evaluate(solved.point.x, solved.point.gain, solved.point.offset)
        # solved to the end if the crop is the image; else a start and the loss's Hessian for the
        # chord steps (`CROP_NEWTON_STEPS`)
        solved = levenberg_marquardt(local, point, refresh=True, rtol=1e-6, callback=callback,
                                     max_iter=12 if crop_is_image else CROP_NEWTON_STEPS)
    if crop_is_image:  # solved
        problem = local
    else:
        per_pixel = solved.matrix / max(local.n_used, 1)  # the crop's matrix, per pixel used
        start, per_pixel = rehearse(frames, settings, solved.point, per_pixel, workers, callback)
        problem, solved = chord(frames, settings, start, per_pixel, workers, callback,
                                problem=full_problem().with_settings(settings))
    # the exact gain/offset at the final kernel, in float64. In float32 (large images) the chord's
    # joint steps already stop at the loss's rounding, and the polish would cost seconds for a
    # change below it
    if settings.gain_offset and not least_squares and problem.spectrum.dtype == np.float64:
        solved = solved._replace(point=polish_gain_offset(problem, solved.point))
    # standard errors need the least-squares matrix, not the loss's: the crop's, scaled
    point = solved.point
    jtj = local.gauss_newton(local.evaluate(point.x, point.gain, point.offset))
    return result(problem, solved, jtj * (problem.n_used / max(local.n_used, 1)))


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
    middle = central(frames, MIDDLE_EDGE.get(settings.ndim, 128), 4)
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
        problem = chord_problem(frames, settings, settings.model.pad_radius([start.kernel]), workers, dtype)
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
