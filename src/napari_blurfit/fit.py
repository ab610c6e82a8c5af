"""`fit_blur`: the Gaussian blur that best turns a reference image into a target image."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from ._corrected import noise_aware_fit, noise_penalty, profile_of, solution_at, whole_noise_rounds
from ._engine import (
    SpatialObjective,
    compute_stats,
    l2_model_blocks,
    l2_model_hessian,
    target_spread,
)
from ._findings import Findings, brightness_rss, findings_for
from ._grid_fit import fit_across_grids
from ._grid_pair import grid_pair, grids_given, prepare_grid_pair, same_grids
from ._losses import HUBER_K
from ._options import FitOptions
from ._result import BlurFit, BlurFitWarning
from ._search import grid_brent, grid_zoom, local_minimize
from ._spectral import SpectralStats, Tabulated, tabulate
from ._stages import (
    IDENTIFIABLE_FROM,
    SEARCH_FLOOR,
    Data,
    Problem,
    Solution,
    each_axis,
)
from ._stages import IDENTITY_BELOW as IDENTITY_BELOW  # a threshold of the results, importable here
from ._validate import as_image, normalize_spatial_axes, prepare_pair
from ._whole import fit_whole_gaussian, holds

START_TOL = 0.05  # log-sigma: the spectral start of a whole-Gaussian fit (the fit moves on from it)
SPATIAL_SCAN = 16  # coarse grid points of a masked fit's image-space search
# a local search (a refit corrected for reference noise): this far below and above the last sigma
# in log-sigma, on a grid of this many points, then Brent
NEAR_BELOW, NEAR_ABOVE, NEAR_GRID = -0.7, 0.2, 8


def fit_blur(
    reference,
    target,
    *,
    loss: str = "l2",
    per_axis: bool = False,
    gain_offset: bool = False,
    full_covariance: bool = False,
    shift: bool = False,
    mask=None,
    spatial_axes=None,
    sigma_bounds=(0.0, None),
    exclude_border=0,
    reverse: bool = False,
    huber_delta: float | None = None,
    truncate: float = 4.0,
    workers: int | None = None,
    warn: bool = True,
    callback=None,
    reference_noise: float | str = "auto",
    reference_grid=None,
    target_grid=None,
) -> BlurFit:
    """Fit the Gaussian blur that turns ``reference`` into ``target``.

    Finds ``sigma`` (and optionally ``gain``, ``offset``) minimising the loss of
    ``gain * scipy.ndimage.gaussian_filter(reference, sigma) + offset - target`` over the pixels
    used. The search is global over the sigma bounds: L2 is evaluated exactly in the DCT domain on
    dense, then shrinking, grids; L1, Huber and masked fits are polished in image space from the
    L2 optimum.

    Parameters
    ----------
    reference, target : array_like
        Images of equal shape: 2D or 3D with every axis spatial, or any shape with
        ``spatial_axes`` naming the spatial ones (the rest are frames or channels fitted jointly
        with one sigma). Integer, float16/32/64 and dask arrays are accepted; inputs are never
        modified. NaN/inf pixels are excluded from the loss (counted in ``n_nonfinite``).
    loss : {"l2", "l1", "huber"}
        Squared error, absolute error, or `scipy.special.huber` with threshold ``huber_delta``.
    per_axis : bool
        One sigma per spatial axis instead of one shared sigma.
    gain_offset : bool
        Also fit ``target ~ gain * blurred + offset`` (brightness and background differences).
    full_covariance : bool
        Fit a rotated, elliptical Gaussian: the whole covariance matrix (``fit.covariance``),
        not one sigma per axis. The kernel is ``exp(-1/2 (n - mu)^T C^-1 (n - mu))`` sampled at
        integer offsets, normalised, truncated at ``truncate`` sigmas (plus the shift) per axis,
        with reflect borders; diagonal and centred it is exactly `gaussian_filter`.
    shift : bool
        Also fit a sub-pixel shift ``mu`` of the kernel (``fit.shift``, px): the target is the
        reference moved by ``+mu``, as `scipy.ndimage.shift` moves it. Independent of
        ``full_covariance``; with neither, a default fit still checks the pair for a shift and
        an elliptical or rotated blur and says so in ``notes``.
    mask : array_like of bool, optional
        True where a pixel counts in the loss; the images' shape or their spatial shape.
    spatial_axes : sequence of int, optional
        The 2 or 3 spatial axes; default all axes of a 2D/3D image.
    sigma_bounds : (float, float or None) or sequence of them
        Search bounds in pixels, shared or one pair per spatial axis. The default upper bound is
        half the axis length.
    exclude_border : int or sequence of int
        Width of a band along the image edges left out of the loss (per axis if a sequence).
    reverse : bool
        Fit the other direction, ``reference ~ G_sigma * target``; use it when the target is the
        sharper image.
    huber_delta : float, optional
        Huber threshold in intensity units. Default: 1.345 times the noise scale of the L2
        fit's residuals, estimated as ``sqrt(pi/2) * mean|r|``; stored in ``huber_delta``.
    truncate : float
        Kernel truncation in sigmas, as in `scipy.ndimage.gaussian_filter`.
    workers : int, optional
        Threads for the FFTs (`scipy.fft` ``workers``). Default: all cores for in-memory
        arrays, one per dask task (dask runs the tasks in parallel). With more than one, a large
        rotated/shifted fit also builds the full image's transforms on a thread of its own
        while it solves crops; ``workers=1`` keeps a fit on one thread.
    warn : bool
        Emit a `BlurFitWarning` for findings that need care (also listed in ``notes``).
    callback : callable, optional
        Called as ``callback(stage)`` with a short text before each step (transform, grid level,
        filter pass). An exception raised in it stops the fit and propagates: this is how the
        napari widget cancels a running fit.
    reference_noise : "auto" or float
        White noise in the reference (the image the kernel is applied to: the ``target`` with
        ``reverse=True``), as a standard deviation in its intensity units. Blurred by the model,
        such noise makes a plain fit overstate sigma. ``"auto"`` estimates it from the pair and
        corrects the L2 fit when the estimate is measurably above zero; a number is a known
        noise level, corrected for; ``0`` is the noise-free model of earlier versions, exactly.
        The value estimated or given is ``fit.reference_noise``. ``"auto"`` makes no estimate
        with a ``mask`` or NaN pixels (the excluded pixels would count in it). L1/Huber fits, and
        masked L2 fits with ``gain_offset``, are not corrected: a note gives the bias there.
        Across grids the noise goes through the resampling (docs/design.md section 18).
    reference_grid, target_grid : Grid or mapping, optional
        The images' pixel grids (`napari_blurfit.Grid`: ``scale``, ``translate`` and, for the
        image the loss is measured on, ``sampling``), when they differ: a different pixel size,
        field of view or position. The kernel is fitted on the reference's grid (in its pixels)
        and the model is sampled on the target's, each target pixel the mean of the blurred
        reference over its footprint (``sampling="area"``) or its value at the centre
        (``"point"``); target pixels outside the reference's extent do not count. Shapes may
        then differ; ``mask`` and ``exclude_border`` are on the target's grid. With ``reverse``
        the roles of the grids swap too. A grid not given is unit pixels at the origin; equal
        grids and shapes are exactly the fit without grids. See docs/design.md section 18.

    Returns
    -------
    BlurFit
        ``sigma`` (tuple, one per spatial axis, in pixels), ``sigma_stderr``, ``gain``,
        ``offset``, ``loss`` (mean over pixels used), flags ``at_bound``, ``identifiable``,
        ``target_sharper``, ``notes`` (sentences) and ``findings`` (the same as `Finding` data:
        a code, the options to refit with, the numbers behind it), and ``fitted()``/``residual()``
        to make the images.

    Raises
    ------
    ValueError
        Shapes differ, an image is empty, constant, too small, 1-D/4-D+ without ``spatial_axes``,
        looks like RGB, the mask is the wrong shape or selects nothing, or an option is invalid.
    TypeError
        An input is not a real numeric array.

    Notes
    -----
    The L2 objective is exact in the DCT domain because reflect-mode Gaussian filtering is
    diagonal in the orthonormal DCT-II; gain and offset are projected out in closed form.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from napari_blurfit import fit_blur
    >>> rng = np.random.default_rng(0)
    >>> sharp = ndimage.zoom(rng.random((32, 32)), 4)
    >>> fit = fit_blur(sharp, ndimage.gaussian_filter(sharp, 2.5))
    >>> round(fit.sigma[0], 4)
    2.5
    """
    options = FitOptions(
        loss=loss, per_axis=per_axis, gain_offset=gain_offset, full_covariance=full_covariance,
        shift=shift, mask=mask,
        spatial_axes=spatial_axes, sigma_bounds=sigma_bounds, exclude_border=exclude_border,
        reverse=reverse, huber_delta=huber_delta, truncate=truncate, workers=workers, warn=warn,
        callback=callback, reference_noise=reference_noise, reference_grid=reference_grid,
        target_grid=target_grid,
    )
    if grids_given(options):
        if not same_grids(reference, target, options):
            return _fit_across_grids(reference, target, options)
        plain = options.replace(reference_grid=None, target_grid=None)
        fit = fit_blur(reference, target, **plain.as_kwargs())
        return _with_grids(fit, reference, options)
    problem = _problem(reference, target, options)
    data = _statistics(problem)
    raw = data  # the statistics as read: a second start is corrected afresh from them
    solution, data = noise_aware_fit(raw, problem, start_only=options.whole_gaussian,
                                     spectral_fit=_spectral_fit)
    if options.whole_gaussian and not holds(problem.pair.spatial_shape, solution.sigma, options.truncate):
        # a coarse start can land on a flat landscape's far side (dim, sparse content): the
        # precise centred optimum decides whether the image cannot hold the kernel
        solution, data = noise_aware_fit(raw, problem, start_only=False, spectral_fit=_spectral_fit)
    del raw  # the statistics as read go with the start (a whole fit compacts its own below)
    if options.whole_gaussian:  # rotated or shifted: exact image-space fit from the L2 start
        # after the start only the checks read the statistics: compacted to float32 during the
        # fit. Only a round kernel's check (`_axis_ellipse`) reads the spectra: others let them go
        bright = None if options.gain_offset else (
            solution.brightness or brightness_rss(data.stats, solution.sigma, options.truncate))
        stats = data.stats.without_spectra() if options.sigma_per_axis else data.stats.compact()
        data = data._replace(stats=stats)
        solution = replace(_whole_gaussian(problem, data, replace(solution, brightness=bright)),
                           brightness=bright)
    elif not options.objective.least_squares or not data.all_pixels:  # not a DCT contraction
        solution = _polish(problem, data, solution)
    findings = findings_for(problem, data, solution, refit=_spectral_fit)
    if options.warn:
        for note in findings.notes:
            warnings.warn(note, BlurFitWarning, stacklevel=2)
    return _result(problem, data, solution, findings)


def _fit_across_grids(reference, target, options: FitOptions) -> BlurFit:
    """`fit_blur` for images on different grids (docs/design.md section 18)."""
    if options.callback is not None:
        options.callback("checking inputs")
    pair = prepare_grid_pair(reference, target, options)
    lower, upper = _bounds(options.sigma_bounds, pair.source.shape[1:], options.sigma_per_axis)
    fit = fit_across_grids(pair, options, lower, upper, fit_blur)
    if options.warn:
        for note in fit.notes:
            warnings.warn(note, BlurFitWarning, stacklevel=3)
    return fit


def _with_grids(fit: BlurFit, reference, options: FitOptions) -> BlurFit:
    """A fit on equal grids, recording them (its world units need no scale then)."""
    image = as_image(reference, "reference")
    axes = normalize_spatial_axes(options.spatial_axes, image.ndim, image.shape, "reference")
    reference_grid, target_grid = grid_pair(options, len(axes))
    shape = tuple(int(image.shape[a]) for a in axes)
    return replace(fit, grids={"reference": reference_grid, "target": target_grid},
                   grid_shapes={"reference": shape, "target": shape})


def _problem(reference, target, options: FitOptions) -> Problem:
    """Validate the inputs and options; swap the roles for ``reverse``."""
    if options.reverse:
        reference, target = target, reference
    if options.callback is not None:
        options.callback("checking inputs")
    # NaN/inf pixels are looked for only when the statistics show some: saves a pass over the data
    pair = prepare_pair(reference, target, check_finite=False, **_pair_options(options))
    lower, upper = _bounds(options.sigma_bounds, pair.spatial_shape, options.sigma_per_axis)
    workers = options.workers if options.workers is not None else (1 if pair.dask else -1)
    return Problem(pair, options, lower, upper, workers, reference, target)


def _pair_options(options: FitOptions) -> dict:
    return dict(spatial_axes=options.spatial_axes, mask=options.mask,
                exclude_border=options.exclude_border)


def _statistics(problem: Problem) -> Data:
    """One pass: spectral statistics, refilled if a NaN/inf pixel showed up in them."""
    problem.tick("transforming")
    pair = problem.pair
    # float64 even where they give only a whole-Gaussian fit's start: contracted in float32, a
    # dim bead slide on a background of 100 read sigma (3, 1.2, 1.2) as (27, 10, 7)
    stats, ref_hat, n_nonfinite, n_used = compute_stats(pair, workers=problem.workers)
    if not stats.finite and not pair.dask:  # dask blocks are checked and filled one by one
        pair = prepare_pair(problem.reference, problem.target, **_pair_options(problem.options))
        stats, ref_hat, n_nonfinite, n_used = compute_stats(pair, workers=problem.workers)
    if not stats.finite:  # every pixel is finite, yet the transform overflowed
        raise ValueError(f"pixel values are too large for a {pair.reference.dtype} transform (it "
                         "overflows); rescale the images or pass them as float64")
    _check_not_constant(stats, problem.options.reverse)
    n_total = int(np.prod(pair.reference.shape))
    return Data(pair, stats, ref_hat, n_nonfinite, n_used, n_total)


def _bounds(sigma_bounds, shape, per_axis):
    """Lower/upper sigma bounds: one entry per axis (per_axis) or one shared entry."""
    d = len(shape)
    default_upper = np.array([max(1.0, n / 2.0) for n in shape])
    try:
        b = np.array(sigma_bounds, dtype=object)
        if b.shape == (2,):
            lo = np.full(d, float(b[0]))
            hi = default_upper if b[1] is None else np.full(d, float(b[1]))
        elif b.shape == (d, 2):
            lo = np.array([float(x) for x in b[:, 0]])
            hi = np.array([default_upper[i] if x is None else float(x) for i, x in enumerate(b[:, 1])])
        else:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(
            f"sigma_bounds must be (low, high) or {d} such pairs, got {sigma_bounds!r}"
        ) from None
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo >= 0)
            and np.all(hi > lo) and np.all(hi >= SEARCH_FLOOR)):
        raise ValueError(f"sigma_bounds must satisfy 0 <= low < high (high >= {SEARCH_FLOOR}); "
                         f"got {sigma_bounds!r}")
    if not per_axis:
        lo, hi = np.array([lo.max()]), np.array([hi.min() if b.shape == (d, 2) else hi.max()])
        if hi[0] <= lo[0]:
            raise ValueError(f"sigma_bounds {sigma_bounds!r} leave no common range for one sigma")
    return lo, hi


def _log_box(lower, upper):
    return np.log(np.maximum(lower, SEARCH_FLOOR)), np.log(upper)


def _search_spectral(stats: SpectralStats, problem: Problem, *, start_only: bool = False,
                     near=None):
    """Global L2 search over sigma: ``(sigma, profile)``; to `START_TOL` with ``start_only``.

    The profile is the mean loss on the first (global) grid; per axis the minimum over the others.
    With ``near`` (a sigma), the search is local: a short grid from `NEAR_BELOW` to `NEAR_ABOVE`
    in log-sigma about it, within the bounds (a correction for reference noise moves it down).
    """
    d, opt = len(stats.shape), problem.options
    tables = []

    def evaluate(axes):
        problem.tick("searching sigma (L2 grid)")
        table = _grid_table(stats, problem, [np.exp(a) for a in axes])
        tables.append(table) if not tables else None
        return table.project(stats, gain_offset=opt.gain_offset)[0]

    lo, hi = _log_box(problem.lower, problem.upper)
    first = None
    if near is not None:
        t = np.log(np.maximum(near if opt.sigma_per_axis else near[:1], SEARCH_FLOOR))
        lo, hi = (np.maximum(lo, np.minimum(t + NEAR_BELOW, hi)),
                  np.minimum(hi, np.maximum(t + NEAR_ABOVE, lo)))
        first = NEAR_GRID
    if opt.sigma_per_axis:
        # a start's grids are coarser in 3D, where a point of the first grid costs 24^2 more
        grid = (40, 17) if d == 2 else (12, 7) if start_only else (24, 11)
        best_t, _, grids = grid_zoom(evaluate, lo, hi, first=first or grid[0], points=grid[1],
                                     tol=START_TOL if start_only else 1e-6)
        sigma = np.exp(best_t)
    else:
        best_t, _, grids = grid_brent(evaluate, lo[0], hi[0], first=first or 32,
                                      xtol=START_TOL if start_only else 1e-5)
        sigma = np.full(d, np.exp(best_t[0]))
    axes, values = grids[0]
    return sigma, profile_of(stats, np.exp(axes[0]), values), tables[0]


def _grid_table(stats: SpectralStats, problem: Problem, sigmas: list[np.ndarray]) -> Tabulated:
    """The contractions on a grid: per axis the outer grid of ``sigmas``, else one shared list."""
    opt = problem.options
    if opt.sigma_per_axis:
        return tabulate(stats, sigmas, joint=False, truncate=opt.truncate)
    return tabulate(stats, sigmas * len(stats.shape), joint=True, truncate=opt.truncate)


def _spectral_fit(stats: SpectralStats, problem: Problem, *, start_only: bool = False,
                  near=None, solve: bool = True) -> Solution:
    """The exact global L2 optimum from the statistics (all pixels).

    With ``start_only`` (the start of a whole-Gaussian fit, which moves on from it) to
    `START_TOL` only: each zoom of the per-axis grid costs two passes over the statistics.
    Statistics corrected for reference noise (``stats.noise``) give the corrected optimum, and
    its residual sum of squares as the images have it (the noise's share is not taken out).
    ``near``: a local search (`_search_spectral`). ``solve=False``: the sigma found, with the
    gain 1, the offset 0 and no RSS, for a caller that contracts its column with others.
    """
    sigma, profile, grid = _search_spectral(stats, problem, start_only=start_only, near=near)
    if not solve:
        return Solution(sigma, 1.0, 0.0, np.nan, np.nan, profile, grid=grid)
    return replace(solution_at(stats, problem, sigma, profile), grid=grid)


def _polish(problem: Problem, data: Data, start: Solution) -> Solution:
    """Image-space fit of L1/Huber or of a masked/NaN/border L2, from the spectral optimum."""
    opt = problem.options
    stats = data.stats
    scale = np.sqrt(max(stats.cbb - stats.dc_b @ stats.dc_b, 0.0) / data.n_total)
    loss = opt.objective.with_delta(1e-9 * scale)  # L1: the floor of its IRLS weights
    objective = SpatialObjective(
        data.pair, data.ref_hat, loss=loss, gain_offset=opt.gain_offset,
        truncate=opt.truncate, workers=problem.workers,
        n_used=data.n_used, start=(start.gain, start.offset), callback=problem.options.callback,
    )
    delta = None
    if loss.has_threshold:
        delta = opt.huber_delta
        if delta is None:  # noise scale of the L2 fit's residuals
            delta = HUBER_K * objective.robust_scale(start.sigma, start.gain, start.offset)
        delta = max(float(delta), 1e-9 * scale)
        objective.loss = loss.with_delta(delta)
    common = dict(per_axis=opt.per_axis, truncate=opt.truncate, fraction=data.n_used / data.n_total)

    def hessian(sigma):  # the L2 Gauss-Newton matrix (free from the statistics)
        return l2_model_hessian(stats, sigma, start.gain, gain_offset=opt.gain_offset, **common)

    def blocks(sigma):  # its gain/offset blocks, to correct a sampled gain/offset
        return l2_model_blocks(stats, sigma, start.gain, **common)

    # a mask or NaNs: the whole-image statistics (garbage included) are no guide to the curvature
    # of the pixels used, so those fits keep the bracketing search on values
    scan = opt.mask is not None or data.n_nonfinite > 0
    penalty = noise_penalty(problem, data, start)
    sigma, value, gain, offset = _spatial_fit(
        objective, start.sigma, problem.lower, problem.upper, opt.per_axis, scan=scan,
        hessian=None if scan else hessian, blocks=blocks, penalty=penalty)
    rss = value if loss.least_squares else objective.sum_squares(sigma, gain, offset)
    order = sorted(objective.trace, key=lambda t: float(np.prod(t[0])))
    profile = {"sigma": np.array([float(np.exp(np.mean(np.log(t[0])))) for t in order]),
               "loss": np.array([[t[1] for t in order]]), "objective": loss.name}
    # all pixels count: the target's spread is already in the statistics (saves a pass)
    sst = start.sst if data.all_pixels else objective.target_spread()
    noise = None if start.noise is None else start.noise._replace(corrected=penalty is not None)
    return Solution(sigma, gain, offset, rss, value, profile, delta, sst=sst, noise=noise)


def _spatial_fit(objective: SpatialObjective, sigma, lower, upper, per_axis, scan: bool,
                 hessian=None, blocks=None, penalty=None):
    """Polish the loss in image space from the L2 optimum.

    With ``scan`` (a mask or NaNs can make the whole-image L2 optimum a poor guide: the excluded
    pixels may be garbage) a coarse log-grid of one shared sigma is evaluated first and the search
    starts from its best point. A border band alone needs no scan. In memory, with ``hessian``
    (the L2 Gauss-Newton matrix over log-sigma), the search is quasi-Newton on values and exact
    gradients (a handful of filter passes); dask pairs keep the bracketing search on values.
    ``penalty`` (`noise_penalty`) is taken off the loss the search minimises.
    """
    from ._search import Probe, piecewise_minimize

    d = len(sigma)
    lo, hi = _log_box(lower, upper)

    def sigmas(t):
        return np.exp(t) if per_axis else np.full(d, np.exp(t[0]))

    def share(s):  # the noise's share and its gradient over sigma (none without a penalty)
        return penalty(s) if penalty is not None else (0.0, 0.0)

    def f(t):
        return objective.evaluate(sigmas(t))[0] - share(sigmas(t))[0]

    def probe(t):  # value, gradient over log-sigma (d/dt = sigma d/dsigma), curvature scale
        s = sigmas(t)
        point = objective.point(s, gradient=True)
        taken, slope = share(s)
        grad = s * (point.gradient - slope)
        grad = grad if per_axis else np.array([grad.sum()])
        value, theta = point.value - taken, point.gain_offset_gradient
        if theta is not None:  # gain/offset from a pixel sample: correct to the exact profile
            cross, block = (m * point.curvature for m in blocks(s))
            step = np.linalg.lstsq(block, theta, rcond=None)[0]
            value, grad = value - 0.5 * float(theta @ step), grad - cross @ step
        return Probe(value, grad, point.curvature)

    start = np.log(np.maximum(sigma if per_axis else sigma[:1], SEARCH_FLOOR))
    if scan:
        shared = np.linspace(lo.max(), hi.min(), SPATIAL_SCAN)
        tries = [np.full(start.shape, t) for t in shared] + [start]
        values = [f(t) for t in tries]
        start = tries[int(np.argmin(values))]
    if hessian is not None and objective.has_gradient:
        best_t, value = piecewise_minimize(probe, start, lo, hi, lambda u: hessian(sigmas(u)),
                                           objective.truncate, n_used=objective.n_used,
                                           precision=objective.precision)
        best = sigmas(best_t)
        value, gain, offset = objective.finish(best, value)
        return best, value, gain, offset
    best_t, _ = local_minimize(f, start, lo, hi)
    best = sigmas(best_t)
    value, gain, offset = objective.evaluate(best)
    return best, value, gain, offset


def _whole_gaussian(problem: Problem, data: Data, start: Solution) -> Solution:
    """Exact image-space fit of a rotated and/or shifted kernel from the spectral optimum."""
    pair = data.pair
    if pair.dask:
        raise ValueError("full_covariance and shift fits need images in memory; pass "
                         "numpy arrays (for a dask array, .compute() it first)")
    problem.tick("fitting the whole Gaussian")
    whole, noise = whole_noise_rounds(problem, data, start, _fit_whole)
    profile = {**start.profile, "objective": "l2 (centred, axis-aligned start)"}
    return Solution(whole.kernel.sigma, whole.gain, whole.offset, whole.rss, whole.loss_sum,
                    profile, whole.delta, whole=whole, noise=noise,
                    sst=start.sst if data.all_pixels else target_spread(pair.target, pair.used))


def _fit_whole(problem: Problem, data: Data, start: Solution, noise: float):
    """`fit_whole_gaussian` from the spectral start, corrected for the reference noise ``noise``."""
    opt, pair = problem.options, data.pair
    start_sigma = np.maximum(start.sigma, IDENTIFIABLE_FROM)
    # the spectral start's loss is the centred kernel's exact L2 loss on every pixel (uncorrected:
    # a fit corrected for noise compares corrected losses)
    known = (opt.objective.least_squares and data.all_pixels and not noise
             and np.array_equal(start_sigma, start.sigma))
    return fit_whole_gaussian(
        pair.reference, pair.target, pair.used, loss=opt.loss, gain_offset=opt.gain_offset,
        full_covariance=opt.full_covariance, shift=opt.shift,
        isotropic=not opt.sigma_per_axis, start_sigma=start_sigma,
        delta=opt.huber_delta, truncate=opt.truncate, workers=problem.workers,
        callback=opt.callback, centred_loss=start.rss if known else None, noise=noise)


def _result(problem: Problem, data: Data, sol: Solution, found: Findings) -> BlurFit:
    opt, d = problem.options, problem.d
    return BlurFit(
        sigma=found.sigma, sigma_stderr=found.stderr,
        gain=float(sol.gain), offset=float(sol.offset), loss=float(sol.loss_sum / data.n_used),
        loss_name=opt.loss, per_axis=opt.per_axis, gain_offset=opt.gain_offset,
        reverse=opt.reverse, spatial_axes=problem.pair.spatial_axes,
        sigma_bounds=tuple((float(lo), float(hi)) for lo, hi in
                           zip(each_axis(problem.lower, d), each_axis(problem.upper, d))),
        n_pixels=int(data.n_used), n_excluded=int(data.n_total - data.n_used),
        n_nonfinite=int(data.n_nonfinite), at_bound=found.at_bound,
        identifiable=found.identifiable, target_sharper=found.target_sharper,
        huber_delta=sol.huber_delta, truncate=float(opt.truncate), findings=found.items,
        profile=sol.profile, r2=found.r2, r2_linear=found.r2_linear, transfer=found.transfer,
        reference_noise=0.0 if sol.noise is None else float(sol.noise.sd),
        reference_noise_corrected=sol.noise is not None and sol.noise.corrected,
        **_kernel_fields(sol, found, opt, d),
    )


def _kernel_fields(sol: Solution, found: Findings, opt: FitOptions, d: int) -> dict:
    """Covariance and shift of the result, with their standard errors (diagonal fits too)."""
    if sol.whole is None:
        sigma, se = np.array(found.sigma), np.array(found.stderr)
        return dict(covariance=np.diag(sigma**2), shift=(0.0,) * d,
                    covariance_stderr=np.diag(2.0 * sigma * se), shift_stderr=(float("nan"),) * d,
                    full_covariance=False, shift_fitted=False)
    whole, fitted_shift = sol.whole, sol.whole.kernel.shift
    return dict(covariance=np.array(whole.kernel.covariance),
                shift=tuple(float(s) for s in fitted_shift),
                covariance_stderr=np.array(whole.covariance_stderr),
                shift_stderr=tuple(float(s) for s in whole.shift_stderr),
                full_covariance=opt.full_covariance, shift_fitted=opt.shift)


def _check_not_constant(stats, reverse):
    """A constant image has all its energy in the DC coefficients: no blur can be measured."""
    names = ("target", "reference") if reverse else ("reference", "target")
    # without the DC entry (the frames' summed DC energy) rather than minus it: exact in float32 too
    structure_a = float(stats.paa.reshape(-1)[1:].sum(dtype=np.float64))
    energy_a = structure_a + float(stats.paa.reshape(-1)[0])
    structure_b = stats.cbb - float(stats.dc_b @ stats.dc_b)
    if structure_a <= 1e-12 * max(energy_a, 1e-300):
        raise ValueError(f"{names[0]} is constant: a blur cannot be measured from a flat image")
    if structure_b <= 1e-12 * max(stats.cbb, 1e-300):
        raise ValueError(f"{names[1]} is constant: a blur cannot be measured from a flat image")
