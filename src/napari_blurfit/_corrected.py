"""Spectral L2 fits corrected for reference noise: the rounds of an estimate, on tabulated grids.

The noise level enters the L2 objective only through a cheap share of ``P_AA``'s contraction
(`napari_blurfit._spectral.Tabulated`), so the refits of the estimate's rounds
(`napari_blurfit._noise.estimate_reference_noise`), which change only the noise, re-read grids
contracted once instead of searching again: most of a fit's time is in its contractions.
"""

from __future__ import annotations

import numpy as np

from ._spectral import SpectralStats, Tabulated, tabulate
from ._stages import SEARCH_FLOOR, Problem, Solution, spread

# the local grid, in log-sigma about the plain fit's sigma (a correction moves sigma down)
NEAR_BELOW, NEAR_ABOVE, COARSE = -0.7, 0.2, 33
FINE = 17  # points of the zoom about the coarse grid's best, two coarse spacings each way


def solution_at(stats: SpectralStats, problem: Problem, sigma: np.ndarray, profile=None) -> Solution:
    """The spectral L2 solution at ``sigma``: best gain/offset, and the images' own RSS.

    Corrected for ``stats.noise``, the gain and offset are the corrected objective's, the RSS the
    residual's as the images have it (the noise's share is not taken out).
    """
    table = tabulate(stats, [[s] for s in sigma], joint=True, truncate=problem.options.truncate)
    rss, gain, offset = (float(x[0]) for x in table.project(stats, gain_offset=problem.options.gain_offset))
    if stats.noise:
        rss = float(table.residual_ss(stats, gain, offset)[0])
    return Solution(sigma, gain, offset, rss, rss, profile or {}, sst=spread(stats))


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

    def __call__(self, stats: SpectralStats, problem: Problem, *, start_only: bool = False,
                 near=None) -> Solution:
        if problem.options.sigma_per_axis or near is None:
            return self.fallback(stats, problem, start_only=start_only, near=near)
        problem.tick("correcting for the reference's noise")
        t = self._best(stats, problem, float(np.log(max(near[0], SEARCH_FLOOR))))
        return solution_at(stats, problem, np.full(problem.d, np.exp(t)))

    def _grid(self, stats, problem, lo: float, hi: float, points: int) -> tuple[np.ndarray, Tabulated]:
        grid = np.linspace(lo, hi, points)
        sigmas = [np.exp(grid)] * problem.d
        return grid, tabulate(stats, sigmas, joint=True, truncate=problem.options.truncate)

    def _values(self, table: Tabulated, stats, problem) -> np.ndarray:
        return table.project(stats, gain_offset=problem.options.gain_offset)[0]

    def _best(self, stats, problem, t: float) -> float:
        """The corrected objective's best log-sigma, from the tables (made when first needed)."""
        box = (float(np.log(max(problem.lower.max(), SEARCH_FLOOR))), float(np.log(problem.upper.min())))
        for _ in range(4):  # a best point on an inner edge of the coarse grid moves it there
            if self._coarse is None:
                lo, hi = max(box[0], min(t + NEAR_BELOW, box[1])), min(box[1], max(t + NEAR_ABOVE, box[0]))
                self._coarse, self._fine = self._grid(stats, problem, lo, hi, COARSE), {}
            grid, table = self._coarse
            i = int(np.argmin(self._values(table, stats, problem)))
            inner_edge = (i == 0 and grid[0] > box[0]) or (i == len(grid) - 1 and grid[-1] < box[1])
            if not inner_edge:
                break
            self._coarse, t = None, float(grid[i])
        if i not in self._fine:
            step = grid[1] - grid[0] if len(grid) > 1 else 0.0
            self._fine[i] = self._grid(stats, problem, max(box[0], grid[i] - 2 * step),
                                       min(box[1], grid[i] + 2 * step), FINE)
        fine, table = self._fine[i]
        return _vertex(fine, self._values(table, stats, problem))


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
