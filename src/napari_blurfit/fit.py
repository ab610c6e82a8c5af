"""`fit_blur`: the Gaussian blur that best turns a reference image into a target image."""

from __future__ import annotations

import warnings

import numpy as np

from ._engine import SpatialObjective, compute_stats
from ._losses import LOSSES
from ._result import BlurFit, BlurFitWarning
from ._search import grid_brent, grid_zoom, local_minimize
from ._spectral import l2_at, l2_grid, normal_matrix
from ._validate import Pair, prepare_pair

# scipy's kernel is exactly the identity below 0.125 px and within 1e-8 of it below 0.165 px
# (side weight exp(-1 / (2 sigma^2))): such a fit is reported as sigma 0
IDENTITY_BELOW = 0.165
IDENTIFIABLE_FROM = 0.3  # below this the sampled kernel is nearly [0, 1, 0] (DESIGN.md section 7)
SEARCH_FLOOR = 0.1  # the log-sigma search starts here; everything below is the identity
SPATIAL_SCAN = 16  # coarse grid points of a masked fit's image-space search
HUBER_K = 1.345  # default Huber threshold in units of the L2 fit's residual noise scale


def fit_blur(
    reference,
    target,
    *,
    loss: str = "l2",
    per_axis: bool = False,
    gain_offset: bool = False,
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
        arrays, one per dask task (dask runs the tasks in parallel).
    warn : bool
        Emit a `BlurFitWarning` for findings that need care (also listed in ``notes``).
    callback : callable, optional
        Called as ``callback(stage)`` with a short text before each step (transform, grid level,
        filter pass). An exception raised in it stops the fit and propagates: this is how the
        napari widget cancels a running fit.

    Returns
    -------
    BlurFit
        ``sigma`` (tuple, one per spatial axis, in pixels), ``sigma_stderr``, ``gain``,
        ``offset``, ``loss`` (mean over pixels used), flags ``at_bound``, ``identifiable``,
        ``target_sharper``, ``notes``, and ``fitted()``/``residual()`` to make the images.

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
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}; got {loss!r}")
    if not (isinstance(truncate, (int, float)) and truncate > 0):
        raise ValueError(f"truncate must be a positive number, got {truncate!r}")
    if huber_delta is not None and not (np.isfinite(huber_delta) and huber_delta > 0):
        raise ValueError(f"huber_delta must be a positive number, got {huber_delta!r}")
    tick = callback if callback is not None else _no_callback
    if reverse:
        reference, target = target, reference
    tick("checking inputs")
    options = dict(spatial_axes=spatial_axes, mask=mask, exclude_border=exclude_border)
    # NaN/inf pixels are looked for only when the statistics show some: saves a pass over the data
    pair = prepare_pair(reference, target, check_finite=False, **options)
    lower, upper = _bounds(sigma_bounds, pair.spatial_shape, per_axis)
    if workers is None:
        workers = 1 if pair.dask else -1
    tick("transforming")
    stats, ref_hat, n_nonfinite, n_used = compute_stats(pair, workers=workers)
    if not stats.finite and not pair.dask:  # dask blocks are checked and filled one by one
        pair = prepare_pair(reference, target, **options)
        stats, ref_hat, n_nonfinite, n_used = compute_stats(pair, workers=workers)
    if not stats.finite:  # every pixel is finite, yet the transform overflowed
        raise ValueError(f"pixel values are too large for a {pair.reference.dtype} transform (it "
                         "overflows); rescale the images or pass them as float64")
    _check_not_constant(stats, reverse)

    sigma, models, profile = _spectral_fit(stats, lower, upper, per_axis, gain_offset, truncate,
                                           tick)
    rss, gain, offset = models[gain_offset]
    notes: list[str] = []
    if not gain_offset:
        rss_go = models[True][0]
        structure = stats.cbb - float(stats.dc_b.sum()) ** 2 / stats.n_frames
        if rss_go < 0.5 * rss and rss - rss_go > 1e-3 * structure:
            notes.append("a gain/offset would more than halve the L2 loss: the images differ in "
                         "brightness or background; consider gain_offset=True")
    target_sharper = False
    if max(sigma) < IDENTIFIABLE_FROM and lower.max() < IDENTIFIABLE_FROM:
        tick("checking the reverse direction")
        target_sharper = _looks_sharper(pair, stats, rss, lower, upper, per_axis, gain_offset,
                                        truncate, workers, notes, reverse, tick)

    n_total = int(np.prod(pair.reference.shape))
    scale = np.sqrt(max(stats.cbb - stats.dc_b @ stats.dc_b, 0.0) / n_total)
    delta = None
    spatial = loss != "l2" or n_used < n_total  # a mask, border or NaNs: not diagonal
    if spatial:
        objective = SpatialObjective(
            pair, ref_hat, loss=loss, gain_offset=gain_offset, delta=1e-9 * scale,
            truncate=truncate, workers=workers, n_used=n_used, start=(gain, offset),
            callback=tick,
        )
        if loss == "huber":
            delta = huber_delta
            if delta is None:  # noise scale of the L2 fit's residuals
                delta = HUBER_K * objective.robust_scale(sigma, gain, offset)
            objective.delta = delta = max(float(delta), 1e-9 * scale)
        sigma, value, gain, offset = _spatial_fit(objective, sigma, lower, upper, per_axis,
                                                  scan=mask is not None or n_nonfinite > 0)
        mean_loss = value / n_used
        rss = objective.sum_squares(sigma, gain, offset) if loss != "l2" else value
        order = sorted(objective.trace, key=lambda t: float(np.prod(t[0])))
        profile = {"sigma": np.array([float(np.exp(np.mean(np.log(t[0])))) for t in order]),
                   "loss": np.array([[t[1] for t in order]]), "objective": loss}
    else:
        mean_loss = rss / n_total

    stderr = _stderr(stats, sigma, gain, rss, n_used, n_total, per_axis, gain_offset, truncate)
    at_bound = _at_bound(sigma, lower, upper, per_axis)
    sigma = tuple(0.0 if s < IDENTITY_BELOW and lower_i < IDENTITY_BELOW else s
                  for s, lower_i in zip(sigma, _per_axis(lower, pair.ndim)))
    identifiable = min(sigma) >= IDENTIFIABLE_FROM
    if not identifiable and not target_sharper:
        notes.append(f"sigma below {IDENTIFIABLE_FROM} px is not identifiable: the sampled kernel "
                     "is nearly the identity there, so any value this small fits about as well")
    if at_bound:
        notes.append("the optimum lies on a sigma bound; the best blur may lie beyond it "
                     "(widen sigma_bounds)")
    if n_nonfinite:
        notes.append(f"{n_nonfinite} pixel(s) with NaN/inf were excluded from the loss")
    if warn:
        for note in notes:
            warnings.warn(note, BlurFitWarning, stacklevel=2)
    return BlurFit(
        sigma=tuple(float(s) for s in sigma),
        sigma_stderr=tuple(float(s) for s in stderr),
        gain=float(gain), offset=float(offset), loss=float(mean_loss), loss_name=loss,
        per_axis=per_axis, gain_offset=gain_offset, reverse=reverse,
        spatial_axes=pair.spatial_axes,
        sigma_bounds=tuple((float(lo), float(hi)) for lo, hi in
                           zip(_per_axis(lower, pair.ndim), _per_axis(upper, pair.ndim))),
        n_pixels=int(n_used), n_excluded=int(n_total - n_used), n_nonfinite=int(n_nonfinite),
        at_bound=bool(at_bound), identifiable=bool(identifiable),
        target_sharper=bool(target_sharper), huber_delta=delta, truncate=float(truncate),
        notes=tuple(notes), profile=profile,
    )


def _no_callback(stage: str) -> None:
    pass


def _per_axis(values: np.ndarray, ndim: int) -> np.ndarray:
    return np.broadcast_to(values, (ndim,)) if values.size == 1 else values


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


def _spectral_fit(stats, lower, upper, per_axis, gain_offset, truncate, tick=_no_callback):
    """Global L2 optimum from the spectral statistics.

    Returns sigma, ``{gain_offset: (rss, gain, offset)}`` for both models at that sigma, and the
    profile: the mean loss on the first (global) grid, per axis the minimum over the other axes.
    """
    d = len(stats.shape)

    def evaluate(axes):
        tick("searching sigma (L2 grid)")
        sig = [np.exp(a) for a in axes]
        if per_axis:
            return l2_grid(stats, sig, joint=False, gain_offset=gain_offset, truncate=truncate)[0]
        return l2_grid(stats, sig * d, joint=True, gain_offset=gain_offset, truncate=truncate)[0]

    lo, hi = _log_box(lower, upper)
    if per_axis:
        best_t, _, grids = grid_zoom(evaluate, lo, hi, first=40 if d == 2 else 24,
                                     points=17 if d == 2 else 11, tol=1e-6)
        sigma = np.exp(best_t)
    else:
        best_t, _, grids = grid_brent(evaluate, lo[0], hi[0])
        sigma = np.full(d, np.exp(best_t[0]))
    axes, values = grids[0]
    n = stats.n_frames * stats.n_pixels
    rows = [values.min(axis=tuple(j for j in range(values.ndim) if j != i)) / n
            for i in range(values.ndim)]
    profile = {"sigma": np.exp(axes[0]), "loss": np.array(rows), "objective": "l2"}
    return sigma, l2_at(stats, sigma, truncate=truncate), profile


def _spatial_fit(objective: SpatialObjective, sigma, lower, upper, per_axis, scan: bool):
    """Polish the loss in image space from the L2 optimum.

    With ``scan`` (a mask or NaNs can make the whole-image L2 optimum a poor guide: the excluded
    pixels may be garbage) a coarse log-grid of one shared sigma is evaluated first and the search
    starts from its best point. A border band alone needs no scan.
    """
    d = len(sigma)
    lo, hi = _log_box(lower, upper)

    def f(t):
        s = np.exp(t) if per_axis else np.full(d, np.exp(t[0]))
        return objective.evaluate(s)[0]

    start = np.log(np.maximum(sigma if per_axis else sigma[:1], SEARCH_FLOOR))
    if scan:
        shared = np.linspace(lo.max(), hi.min(), SPATIAL_SCAN)
        tries = [np.full(start.shape, t) for t in shared] + [start]
        values = [f(t) for t in tries]
        start = tries[int(np.argmin(values))]
    best_t, _ = local_minimize(f, start, lo, hi)
    best = np.exp(best_t) if per_axis else np.full(d, np.exp(best_t[0]))
    value, gain, offset = objective.evaluate(best)
    return best, value, gain, offset


def _stderr(stats, sigma, gain, rss, n_used, n_total, per_axis, gain_offset, truncate):
    """Gauss-Newton standard error per spatial axis (NaN where the sigma has no leverage)."""
    d = len(sigma)
    p = (d if per_axis else 1) + (2 if gain_offset else 0)
    if n_used <= p:
        return np.full(d, np.nan)
    jtj = normal_matrix(stats, np.maximum(sigma, IDENTITY_BELOW), gain, per_axis=per_axis,
                        gain_offset=gain_offset, truncate=truncate) * (n_used / n_total)
    s2 = rss / (n_used - p)
    k = d if per_axis else 1
    with np.errstate(all="ignore"):
        try:
            cov = s2 * np.linalg.inv(jtj)
            var = np.diag(cov)[:k]
        except np.linalg.LinAlgError:
            var = np.full(k, np.nan)
    se = np.where(var >= 0, np.sqrt(np.abs(var)), np.nan)
    return se if per_axis else np.full(d, se[0])


def _at_bound(sigma, lower, upper, per_axis) -> bool:
    d = len(sigma)
    lo, hi = _per_axis(lower, d), _per_axis(upper, d)
    at_hi = sigma >= hi * (1 - 1e-3)
    at_lo = (lo > 0) & (sigma <= np.maximum(lo, SEARCH_FLOOR) * (1 + 1e-3))
    return bool(np.any(at_hi | at_lo))


def _check_not_constant(stats, reverse):
    """A constant image has all its energy in the DC coefficients: no blur can be measured."""
    names = ("target", "reference") if reverse else ("reference", "target")
    energy_a = float(stats.paa.sum())
    structure_a = energy_a - float(stats.dc_a @ stats.dc_a)
    structure_b = stats.cbb - float(stats.dc_b @ stats.dc_b)
    if structure_a <= 1e-12 * max(energy_a, 1e-300):
        raise ValueError(f"{names[0]} is constant: a blur cannot be measured from a flat image")
    if structure_b <= 1e-12 * max(stats.cbb, 1e-300):
        raise ValueError(f"{names[1]} is constant: a blur cannot be measured from a flat image")


def _looks_sharper(pair: Pair, stats, rss, lower, upper, per_axis, gain_offset, truncate,
                   workers, notes, reverse, tick) -> bool:
    """Check whether the other direction finds a real blur that fits better (sigma collapsed)."""
    back = compute_stats(pair, swap=True, workers=workers)[0]
    sigma_b, models_b, _ = _spectral_fit(back, lower, upper, per_axis, gain_offset, truncate, tick)
    rss_b = models_b[gain_offset][0]
    # compare goodness relative to each direction's own target energy
    rel = rss / max(stats.cbb - (stats.dc_b @ stats.dc_b if gain_offset else 0.0), 1e-300)
    rel_b = rss_b / max(back.cbb - (back.dc_b @ back.dc_b if gain_offset else 0.0), 1e-300)
    if max(sigma_b) >= 0.5 and rel_b < rel:
        which = "reference" if reverse else "target"
        other = "reverse=False" if reverse else "reverse=True"
        notes.append(f"the {which} looks sharper than the image it should be a blur of: the other "
                     f"direction fits sigma ~ {max(sigma_b):.3g} px; refit with {other}")
        return True
    return False
