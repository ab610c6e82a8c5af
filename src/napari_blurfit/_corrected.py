"""Fits corrected for the reference's noise (docs/design.md section 16): the steps of a fit.

`noise_aware_fit` is the spectral L2 fit under ``reference_noise``: the noise level enters the
objective only through a cheap share of ``P_AA``'s contraction
(`napari_blurfit._spectral.Tabulated`), so the refits of the estimate's rounds
(`napari_blurfit._noise.estimate_reference_noise`), which change only the noise, re-read grids
contracted once (`CorrectedSearch`). `noise_penalty` corrects an image-space L2 loss,
`whole_noise_rounds` a rotated/shifted kernel, `coloured_errors` its standard errors.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ._findings import brightness_rss, brightness_sigmas
from ._gaussian import GaussianModel
from ._kernels import half_kernels
from ._noise import (
    CORRECTED_MISFIT,
    WHOLE_SAMPLE,
    edge_band,
    estimate_noise,
    estimate_reference_noise,
    estimate_whole_noise,
    half_sample,
    off_band,
)
from ._spectral import SpectralStats, Tabulated, tabulate
from ._stages import SEARCH_FLOOR, Data, NoiseCorrection, Problem, Solution, spread
from ._transforms import HalfSpectrum
from ._whole.sandwich import sandwich_errors, subgrid

# a whole-Gaussian fit refits with the noise read from its own residual: at most this many times,
# until the variance moves by less than this share
WHOLE_NOISE_ROUNDS, WHOLE_SETTLED = 2, 0.05
# the local grid, in log-sigma about the plain fit's sigma (a correction moves sigma down)
NEAR_BELOW, NEAR_ABOVE, COARSE = -0.7, 0.2, 17
FINE = 13  # points of the zoom about the coarse grid's best, two coarse spacings each way
# the corrected fit's RSS at its sigma is read off the zoom's table through this many points:
# their polynomial gives the contraction's value to 1e-11 where the answer lies mid-grid (seven
# points: 1e-11 - 3e-10 on the bench texture and camera at sigma 0.7-2), to 1e-6 near the grid's
# end; it is kept where the polynomial through one point fewer agrees to this share, else the RSS
# is contracted
RSS_POINTS, RSS_AGREE = 8, 1e-10
ZOOM = (FINE - 1) // 4  # fine spacings per coarse one


def solution_at(stats: SpectralStats, problem: Problem, sigma: np.ndarray, profile=None,
                table: Tabulated | None = None) -> Solution:
    """The spectral L2 solution at ``sigma``: best gain/offset, and the images' own RSS.

    Corrected for ``stats.noise``, the gain and offset are the corrected objective's, the RSS the
    residual's as the images have it (the noise's share is not taken out). ``table``: the
    contraction at ``sigma``, where made already.
    """
    if table is None:
        table = tabulate(stats, [[s] for s in sigma], joint=True, truncate=problem.options.truncate)
    rss, gain, offset = (float(x[0]) for x in table.project(stats, gain_offset=problem.options.gain_offset))
    if stats.noise:
        rss = float(table.residual_ss(stats, gain, offset)[0])
    return Solution(sigma, gain, offset, rss, rss, profile or {}, sst=spread(stats))


def profile_of(stats: SpectralStats, sigma: np.ndarray, values: np.ndarray) -> dict:
    """The loss profile of a grid: mean loss per sigma; per axis the minimum over the others."""
    n = stats.n_frames * stats.n_pixels
    rows = [values.min(axis=tuple(j for j in range(values.ndim) if j != i)) / n
            for i in range(values.ndim)]
    return {"sigma": sigma, "loss": np.array(rows), "objective": "l2"}


def corrected_profile(stats: SpectralStats, problem: Problem, plain: Solution) -> dict:
    """The profile of corrected statistics on the plain fit's global grid (its search was local)."""
    values = plain.grid.project(stats, gain_offset=problem.options.gain_offset)[0]
    return profile_of(stats, plain.profile["sigma"], values)


def noise_aware_fit(data: Data, problem: Problem, *, start_only: bool,
                    spectral_fit) -> tuple[Solution, Data]:
    """The spectral L2 fit under ``reference_noise``, and the data with the correction in force.

    ``0``: the noise-free model. A number: corrected for that noise. ``"auto"``: estimated from
    the pair at the fit's kernel and corrected when measurable, in a few rounds (the estimate is
    best at the true kernel, which the correction moves towards); not with a mask or NaN pixels,
    whose excluded pixels are in the statistics too (reported as 0). Later steps (the checks, a
    whole-Gaussian fit) take the statistics with the correction in force. ``spectral_fit``:
    the global spectral L2 fit of statistics (`napari_blurfit.fit`'s).
    """
    setting, opt = problem.options.reference_noise, problem.options
    # with "auto" and no gain/offset, the pair's brightness check is made here, once (the findings
    # and a whole fit read it too): its contraction holds the plain fit's column, solved from it
    checked = isinstance(setting, str) and not opt.gain_offset
    plain = spectral_fit(data.stats, problem, start_only=start_only, solve=not checked)
    refit = CorrectedSearch(spectral_fit)
    # the statistics hold the excluded pixels too (garbage, maybe, or NaNs filled): they cannot
    # tell the reference's noise; a border band alone excludes real pixels
    readable = isinstance(setting, str) and opt.mask is None and not data.n_nonfinite
    first = estimate_noise(data.stats, plain.sigma, plain.gain, opt.truncate) if readable else None
    if checked:
        coming = first.reference if first is not None and first.significant else None
        plain = _solved_with_brightness(data.stats, problem, plain, refit, coming)
    if isinstance(setting, str) and (not readable or _gain_missing(plain, problem)):
        # a gain the model lacks leaves residual power in |K_hat|^2 as noise does: none is read
        return replace(plain, noise=NoiseCorrection(0.0, False, plain.sigma, plain.sigma, True)), data
    if isinstance(setting, str):
        reading = estimate_reference_noise(data.stats, plain, problem, refit=refit, first=first)
        sol, sd = reading.solution, float(np.sqrt(reading.variance))
        corrected, error = sol is not plain, reading.stderr
        loop = (reading.amplification, reading.sensitivity)
    elif setting == 0:
        return plain, data
    else:
        sd, corrected, error, loop = float(setting), True, 0.0, (1.0, None)
        sol = refit(data.stats.with_noise(sd**2), problem, start_only=start_only, near=plain.sigma)
    stats = data.stats.with_noise(sd**2 if corrected else 0.0)
    sol = _corrected_solution(stats, problem, sol, refit) if corrected else sol  # the refits' were rough
    noise = NoiseCorrection(sd, corrected, plain.sigma, sol.sigma, isinstance(setting, str), error,
                            *loop)
    return replace(sol, profile=corrected_profile(stats, problem, plain) if corrected else plain.profile,
                   noise=noise, brightness=plain.brightness), data._replace(stats=stats)


def _corrected_solution(stats: SpectralStats, problem: Problem, sol: Solution,
                        search: CorrectedSearch) -> Solution:
    """The corrected fit's exact solution at its sigma (``sol``: the search's answer).

    Without a gain/offset its RSS is all there is to it, read off the search's own tables
    (`CorrectedSearch.residual_at`); else, or where they do not hold it, one contraction.
    """
    rss = search.residual_at(stats, problem, sol.sigma)
    if rss is None:
        return solution_at(stats, problem, sol.sigma)
    return Solution(sol.sigma, 1.0, 0.0, rss, rss, {}, sst=spread(stats))


def _solved_with_brightness(stats: SpectralStats, problem: Problem, plain: Solution,
                            search: CorrectedSearch, variance: float | None) -> Solution:
    """The plain fit (``plain``: its sigma found, unsolved) solved, with the pair's brightness check.

    One contraction at `brightness_sigmas`, whose last column is the plain fit's own sigma (a
    factor of 1): its solution and `brightness_rss` read it. Where a correction for ``variance``
    is coming, the first columns of its ``search`` ride on it too (`CorrectedSearch.prefetch`).
    """
    sigmas, truncate, table = brightness_sigmas(plain.sigma), problem.options.truncate, None
    if variance is not None:  # None back where the search is its fallback's (sigmas per axis)
        table = search.prefetch(stats, problem, plain.sigma, sigmas,
                                expect=_expected(stats, problem, plain, variance))
    if table is None:
        table = tabulate(stats, sigmas, joint=True, truncate=truncate)
    own = all(s[-1] == p for s, p in zip(sigmas, plain.sigma))
    solved = solution_at(stats, problem, plain.sigma, plain.profile,
                         table=table.columns(slice(-1, None)) if own else None)
    brightness = brightness_rss(stats, plain.sigma, truncate, plain_rss=solved.rss, table=table)
    return replace(solved, grid=plain.grid, brightness=brightness)


def _expected(stats: SpectralStats, problem: Problem, plain: Solution, variance: float) -> float | None:
    """The log-sigma of the fit corrected for ``variance``, roughly: no contraction, a guess.

    The vertex of the plain fit's first (global) grid, its values corrected.
    """
    if plain.grid is None or problem.options.sigma_per_axis:
        return None
    values = plain.grid.project(stats.with_noise(variance), gain_offset=problem.options.gain_offset)[0]
    return _vertex(np.log(plain.profile["sigma"]), values)


def _gain_missing(plain: Solution, problem: Problem) -> bool:
    """Whether a fit without a gain/offset misses one: it would halve the L2 loss.

    ``plain.brightness`` holds the two losses (`brightness_rss`).

    Read as noise, such a misfit moved a 3D per-axis fit's sigma from (1.42, 2.17, ...) to
    (1.43, 1.08, ...) on a target that was 0.8 G * A + 0.05.
    """
    if problem.options.gain_offset:
        return False
    plain_rss, with_gain_offset = plain.brightness
    return with_gain_offset < 0.5 * plain_rss


def noise_penalty(problem: Problem, data: Data, start: Solution):
    """The reference noise's expected share of an image-space L2 loss, as a function of sigma.

    ``penalty(sigma) -> (share, d share / d sigma per axis)``: ``n_used * s_A**2 * sum K**2``, with
    ``sum K**2`` of scipy's separable kernel. None where the fit is not corrected: no correction in
    force, a loss other than L2, or a gain/offset (the image-space gain is the noisy model's).
    """
    opt, noise = problem.options, start.noise
    if noise is None or not noise.corrected or not opt.objective.least_squares or opt.gain_offset:
        return None
    scale = data.n_used * noise.sd**2

    def penalty(sigma):
        g, dg = half_kernels(sigma, opt.truncate, derivative=True)
        squares = g[:, 0] ** 2 + 2.0 * (g[:, 1:] ** 2).sum(axis=1)
        slopes = 2.0 * (g[:, 0] * dg[:, 0] + 2.0 * (g[:, 1:] * dg[:, 1:]).sum(axis=1))
        others = [np.prod(np.delete(squares, i)) for i in range(len(squares))]
        return scale * float(np.prod(squares)), scale * slopes * np.array(others)

    return penalty


def whole_noise_rounds(problem: Problem, data: Data, start: Solution, fit_whole):
    """The whole-Gaussian fit, corrected for noise read from its own residual; and the noise.

    ``fit_whole(problem, data, start, variance)`` fits the kernel corrected for ``variance``. A
    given noise is corrected from the first fit; with ``"auto"`` the first fit is plain and the
    noise is read from the kernel's own residual (`estimate_whole_noise`: the DCT's line sees a
    shift as misfit) and the kernel refitted, at most `WHOLE_NOISE_ROUNDS` times. L2 fits get
    coloured-residual errors.
    """
    opt, pair = problem.options, data.pair
    noise = start.noise
    # as for the spectral estimate: not from a residual that holds excluded pixels
    rounds = (noise is not None and noise.estimated and opt.objective.least_squares
              and pair.used is None)
    # an estimated noise is read again from the whole kernel's own residual, from a plain fit:
    # the centred, axis-aligned start reads a shift or a rotation it lacks as noise
    # (docs/design.md section 16)
    variance = noise.sd**2 if noise is not None and noise.corrected and not rounds else 0.0
    whole = fit_whole(problem, data, start, variance)
    spectra = WholeSpectra(pair.reference, problem.d)
    if rounds:
        plain, fits = whole.kernel.sigma, {0.0: whole}  # a round that reads no noise goes back to it
        for _ in range(WHOLE_NOISE_ROUNDS):  # the residual of the kernel itself tells best
            sampled = whole.kernel.sampled(opt.truncate)
            interior, kept = spectra.interior(whole, sampled.shape)
            found = estimate_whole_noise(spectra.reference(whole), interior, sampled, whole.gain, kept=kept)
            if found is None:
                break
            new = found.reference if found.significant and found.misfit < CORRECTED_MISFIT else 0.0
            # a gain missing from the model leaves residual power in |K_hat|^2 too, not noise:
            # where a gain/offset would halve the loss (the brightness finding's rule), none is read
            if start.brightness is not None and start.brightness[1] < 0.5 * start.brightness[0]:
                new = 0.0
            if abs(new - variance) <= WHOLE_SETTLED * max(new, variance):
                break
            spectra.drop_residual()  # before a refit's arrays are made
            variance, whole = new, fits[new] if new in fits else fit_whole(problem, data, start, new)
        reading = found.reading if found is not None else noise.sd**2
        noise = noise._replace(sd=float(np.sqrt(variance if variance else reading)),
                               corrected=variance > 0, plain_sigma=plain,
                               corrected_sigma=whole.kernel.sigma,
                               variance_stderr=found.stderr if found is not None else 0.0)
    elif noise is not None and not opt.objective.least_squares:
        noise = noise._replace(corrected=False)
    if noise is not None and opt.objective.least_squares and pair.used is None:
        whole = coloured_errors(problem, spectra, whole, noise.sd**2 if noise.corrected else 0.0)
    return whole, noise


class WholeSpectra:
    """The transforms the noise rounds and the standard errors read: each made once.

    The reference's, and one of the last whole fit asked about (a refit replaces it): its
    residual's, or that of its residual off the edge band (`interior`).
    """

    def __init__(self, reference: np.ndarray, d: int):
        self.source, self.d = reference, d
        self._reference = self._residual = None
        self._of = None  # the whole fit whose residual `_residual` holds ...
        self._band: tuple[int, ...] | None = None  # ... off this edge band
        self._kept = 1.0  # the share of pixels `_residual` holds

    def reference(self, whole) -> HalfSpectrum:
        if self._reference is None:
            self._reference = self._transform(self.source.reshape(whole.residual.shape))
        return self._reference

    def residual(self, whole) -> HalfSpectrum:
        if self._of is not whole or self._band is not None:
            self.drop_residual()  # the old transform goes before the new is made
            self._residual, self._of = self._transform(whole.residual), whole
        return self._residual

    def _transform(self, a: np.ndarray) -> HalfSpectrum:
        """``a``'s transform at the frequencies both readers sample (`half_sample`, `subgrid`).

        Their strides' common divisor, where it divides every axis: the transform of ``a``
        `folded` by it (in 3D three whole transforms took 0.5 filter passes).
        """
        spatial = a.shape[a.ndim - self.d:]
        step = math.gcd(half_sample(spatial, WHOLE_SAMPLE)[0].step, subgrid(spatial)[0][0].step)
        return HalfSpectrum(a, self.d, step=step if all(n % step == 0 for n in spatial) else 1)

    def interior(self, whole, kernel_shape: tuple[int, ...]) -> tuple[HalfSpectrum, float]:
        """The transform of ``whole``'s residual off its edge band, and the share of pixels kept.

        The band is where a kernel of ``kernel_shape`` reaches past the edge (`edge_band`); where
        it would leave too few pixels, the whole residual's transform, share 1.
        """
        band = edge_band(whole.residual.shape[whole.residual.ndim - self.d:], kernel_shape)
        if band is None:
            return self.residual(whole), 1.0
        if self._of is not whole or self._band != band:
            self.drop_residual()
            inner, self._kept = off_band(whole.residual, band)
            self._residual, self._of, self._band = self._transform(inner), whole, band
        return self._residual, self._kept

    def drop_residual(self) -> None:
        self._residual = self._of = self._band = None
        self._kept = 1.0


def coloured_errors(problem: Problem, spectra: WholeSpectra, whole, noise: float):
    """``whole`` with standard errors that hold for coloured residuals (`sandwich_errors`)."""
    opt, d = problem.options, problem.d
    model = GaussianModel(d, float(opt.truncate), opt.full_covariance, opt.shift, not opt.sigma_per_axis)
    errors = sandwich_errors(model, whole.kernel, spectra.reference(whole), spectra.residual(whole),
                             whole.gain, gain_offset=opt.gain_offset, noise=noise)
    if errors is None:
        return whole
    return replace(whole, covariance_stderr=errors["covariance"], shift_stderr=errors["shift"])


class CorrectedSearch:
    """The refits of one fit's noise rounds (``refit`` of `estimate_reference_noise`).

    One shared sigma: a grid of `COARSE` points about the first sigma given and a `FINE` one
    about its best point, both `Tabulated`; later rounds re-read them while the best point stays
    inside. The answer is the vertex of a parabola through the fine grid's best three points.
    Sigmas per axis go to ``fallback`` (a local grid search over them).
    """

    def __init__(self, fallback):
        self.fallback = fallback
        self._coarse: tuple[np.ndarray, Tabulated] | None = None
        self._fine: dict[int, tuple[np.ndarray, Tabulated]] = {}
        # zoom columns contracted ahead (`prefetch`): their indices on the coarse grid refined
        # `ZOOM` times, and their table
        self._spare: tuple[np.ndarray, Tabulated] | None = None
        self._read: dict[float, tuple[np.ndarray, Tabulated]] = {}  # each answer's fine grid and table

    def __call__(self, stats: SpectralStats, problem: Problem, *, start_only: bool = False,
                 near=None) -> Solution:
        if problem.options.sigma_per_axis or near is None:
            return self.fallback(stats, problem, start_only=start_only, near=near)
        problem.tick("correcting for the reference's noise")
        t, gain, offset, fine = self._best(stats, problem, float(np.log(max(near[0], SEARCH_FLOOR))))
        sigma = np.full(problem.d, np.exp(t))
        self._read[float(sigma[0])] = fine
        # enough for the next estimate; `noise_aware_fit` makes the answer's exact solution
        return Solution(sigma, gain, offset, np.nan, np.nan, {})

    def residual_at(self, stats: SpectralStats, problem: Problem, sigma) -> float | None:
        """The images' own RSS at ``sigma`` (gain 1, no offset), one of this search's answers.

        Interpolated in log-sigma through the `RSS_POINTS` points of the fine grid it was read
        from nearest to it (that grid's table re-projected for ``stats``: a pass over the
        statistics saved). None with a gain/offset (then the gain and offset need the
        contraction too) or where the search did not give ``sigma``.
        """
        fine = self._read.get(float(sigma[0]))
        if fine is None or problem.options.gain_offset:
            return None
        grid, table = fine
        values = table.residual_ss(stats, np.ones(len(grid)), np.zeros(len(grid)))
        return _interpolated(grid, values, float(np.log(sigma[0])))

    def prefetch(self, stats: SpectralStats, problem: Problem, near, extra: list[np.ndarray], *,
                 expect: float | None = None):
        """The first (coarse) grid about ``near``, contracted with the joint columns ``extra``.

        One pass over the statistics for all: returns ``extra``'s `Tabulated`, and keeps the
        grid's for the first call; with ``expect`` (the log-sigma the answer is expected at,
        roughly) also the columns of the zooms about the three coarse points nearest it
        (`_zoom_points`), which the zoom then reads instead of contracting. None where the
        search is the fallback's (sigmas per axis).
        """
        if problem.options.sigma_per_axis:
            return None
        grid = _coarse_grid(problem, float(np.log(max(near[0], SEARCH_FLOOR))))
        spare, spare_t = _zoom_points(grid, expect)
        table = tabulate(stats, [np.concatenate([np.exp(grid), np.exp(spare_t), e]) for e in extra],
                         joint=True, truncate=problem.options.truncate)
        m, k = len(grid), len(spare)
        self._coarse, self._fine = (grid, table.columns(slice(None, m))), {}
        self._spare = spare, table.columns(slice(m, m + k))
        return table.columns(slice(m + k, None))

    def _grid(self, stats, problem, grid: np.ndarray) -> tuple[np.ndarray, Tabulated]:
        sigmas = [np.exp(grid)] * problem.d
        return grid, tabulate(stats, sigmas, joint=True, truncate=problem.options.truncate)

    def _values(self, table: Tabulated, stats, problem) -> np.ndarray:
        return table.project(stats, gain_offset=problem.options.gain_offset)[0]

    def _at_best(self, table: Tabulated, grid: np.ndarray, stats, problem) -> tuple[float, float, float]:
        """``(log-sigma, gain, offset)``: the vertex, with the gain/offset of the nearest point."""
        rss, gain, offset = table.project(stats, gain_offset=problem.options.gain_offset)
        j = int(np.argmin(rss))
        return _vertex(grid, rss), float(gain[j]), float(offset[j])

    def _best(self, stats, problem, t: float) -> tuple[float, float, float, tuple[np.ndarray, Tabulated]]:
        """The corrected objective's best log-sigma, gain and offset, and the fine grid they came from.

        The tables are made when first needed and kept while the best point stays inside.
        """
        box = _log_box(problem)
        for _ in range(4):  # a best point on an inner edge of the coarse grid moves it there
            if self._coarse is None:
                self._coarse, self._fine = self._grid(stats, problem, _coarse_grid(problem, t)), {}
            grid, table = self._coarse
            i = int(np.argmin(self._values(table, stats, problem)))
            inner_edge = (i == 0 and grid[0] > box[0]) or (i == len(grid) - 1 and grid[-1] < box[1])
            if not inner_edge:
                break
            self._coarse, self._spare, t = None, None, float(grid[i])
        if i not in self._fine:
            self._fine[i] = self._zoom(stats, problem, i, box)
        fine, table = self._fine[i]
        return (*self._at_best(table, fine, stats, problem), self._fine[i])

    def _zoom(self, stats, problem, i: int, box) -> tuple[np.ndarray, Tabulated]:
        """The `FINE` grid about the coarse grid's point ``i``, two coarse spacings each way.

        Unclipped, every `ZOOM`-th of its points is a coarse one: those columns are re-read from
        the coarse table, and only the others contracted.
        """
        grid, coarse = self._coarse
        step = grid[1] - grid[0] if len(grid) > 1 else 0.0
        want = (grid[i] - 2 * step, grid[i] + 2 * step)
        lo, hi = max(box[0], want[0]), min(box[1], want[1])
        fine = np.linspace(lo, hi, FINE)
        if not (step > 0 and (lo, hi) == want and 2 <= i <= len(grid) - 3):
            return self._grid(stats, problem, fine)
        on_coarse = np.arange(FINE) % ZOOM == 0
        new = self._spared(ZOOM * (i - 2) + np.flatnonzero(~on_coarse))
        if new is None:
            new = tabulate(stats, [np.exp(fine[~on_coarse])] * problem.d, joint=True,
                           truncate=problem.options.truncate)
        return fine, _interleaved(coarse, slice(i - 2, i + 3), new, on_coarse)

    def _spared(self, wanted: np.ndarray) -> Tabulated | None:
        """The columns at refined indices ``wanted``, where `prefetch` contracted them all."""
        if self._spare is None or not np.isin(wanted, self._spare[0]).all():
            return None
        return self._spare[1].columns(np.searchsorted(self._spare[0], wanted))


def _log_box(problem: Problem) -> tuple[float, float]:
    """The bounds of one shared sigma, in log-sigma."""
    return float(np.log(max(problem.lower.max(), SEARCH_FLOOR))), float(np.log(problem.upper.min()))


def _coarse_grid(problem: Problem, t: float) -> np.ndarray:
    """`CorrectedSearch`'s coarse grid about log-sigma ``t``, within the bounds."""
    box = _log_box(problem)
    lo, hi = max(box[0], min(t + NEAR_BELOW, box[1])), min(box[1], max(t + NEAR_ABOVE, box[0]))
    return np.linspace(lo, hi, COARSE)


def _zoom_points(grid: np.ndarray, expect: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The points of the zooms about the three coarse points nearest ``expect``, off ``grid``.

    Their indices on ``grid`` refined `ZOOM` times, and their log-sigmas (none without
    ``expect``).
    """
    if expect is None or not np.isfinite(expect) or len(grid) < 7 or not grid[-1] > grid[0]:
        return np.zeros(0, dtype=int), np.zeros(0)
    i = int(np.clip(np.rint((expect - grid[0]) / (grid[1] - grid[0])), 3, len(grid) - 4))
    k = np.arange(ZOOM * (i - 3), ZOOM * (i + 3) + 1)
    k = k[k % ZOOM != 0]
    return k, np.linspace(grid[0], grid[-1], ZOOM * (len(grid) - 1) + 1)[k]


def _interleaved(coarse: Tabulated, columns: slice, new: Tabulated, on_coarse: np.ndarray) -> Tabulated:
    """A joint grid's table: ``coarse``'s ``columns`` where ``on_coarse``, ``new``'s elsewhere."""
    shared, parts = coarse.columns(columns), {}
    for name in ("qaa", "qab", "share"):
        out = np.empty(len(on_coarse))
        out[on_coarse], out[~on_coarse] = getattr(shared, name), getattr(new, name)
        parts[name] = out
    return Tabulated(**parts)


def _interpolated(grid: np.ndarray, values: np.ndarray, t: float) -> float | None:
    """``values`` on ``grid`` at ``t``: the polynomial through the `RSS_POINTS` points nearest.

    None where the grid has fewer, where a value is not positive (an RSS clamped at 0 is not
    smooth), or where the polynomial through one point fewer differs by more than `RSS_AGREE`.
    """
    if len(grid) < RSS_POINTS:
        return None
    near = np.argsort(np.abs(grid - t))[:RSS_POINTS]  # nearest first
    x, y = grid[near] - t, values[near]
    if not np.all(y > 0.0):
        return None
    if np.any(x == 0.0):
        return float(y[x == 0.0][0])
    value, fewer = (_at_zero(x[:k], y[:k]) for k in (RSS_POINTS, RSS_POINTS - 1))
    return value if abs(value - fewer) <= RSS_AGREE * abs(value) else None


def _at_zero(x: np.ndarray, y: np.ndarray) -> float:
    """The polynomial through ``(x, y)`` at 0 (Lagrange: weight j the product of x_m / (x_m - x_j))."""
    gaps = x[None, :] - x[:, None]
    np.fill_diagonal(gaps, 1.0)
    return float((np.prod(x[None, :] / gaps, axis=1) / x) @ y)


def _vertex(grid: np.ndarray, values: np.ndarray) -> float:
    """The least point of ``values`` on ``grid``, refined by a parabola through its neighbours."""
    j = int(np.argmin(values))
    if j == 0 or j == len(grid) - 1:
        return float(grid[j])
    a, b, c = values[j - 1 : j + 2]
    curvature = a - 2.0 * b + c
    if curvature <= 0:
        return float(grid[j])
    step = grid[1] - grid[0]
    return float(grid[j] - 0.5 * step * np.clip((c - a) / curvature, -1.0, 1.0))
