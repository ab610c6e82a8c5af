"""The typed stages of a fit (`Problem` -> `Data` -> `Solution`), shared by `fit` and `_findings`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ._gaussian import IDENTIFIABLE_FROM, IDENTITY_BELOW
from ._options import FitOptions
from ._spectral import SpectralStats, Tabulated
from ._validate import Pair

if TYPE_CHECKING:
    from ._whole import FullFit

__all__ = [
    "IDENTIFIABLE_FROM", "IDENTITY_BELOW", "SEARCH_FLOOR", "Data", "NoiseCorrection", "Problem",
    "Solution", "each_axis", "spread",
]

SEARCH_FLOOR = 0.1  # the log-sigma search starts here; everything below is the identity


@dataclass(frozen=True)
class Problem:
    """One validated fit: the pair (roles already swapped for ``reverse``), options and bounds."""

    pair: Pair
    options: FitOptions
    lower: np.ndarray  # sigma bounds: one entry per axis (per_axis) or one shared entry
    upper: np.ndarray
    workers: int
    reference: Any  # the caller's arrays (swapped for reverse), to re-read with NaN filling
    target: Any

    def tick(self, stage: str) -> None:
        """Report progress; the callback may raise to cancel."""
        if self.options.callback is not None:
            self.options.callback(stage)

    @property
    def d(self) -> int:
        """Number of spatial axes."""
        return self.pair.ndim


class Data(NamedTuple):
    """What one pass over the pair gives: statistics and pixel counts."""

    pair: Pair  # NaN/inf pixels filled (and excluded by ``used``) where there were any
    stats: SpectralStats
    ref_hat: np.ndarray | None  # the reference's DCT (single in-memory frame only)
    n_nonfinite: int
    n_used: int
    n_total: int

    @property
    def all_pixels(self) -> bool:
        """Every pixel counts: the spectral L2 is the exact loss."""
        return self.n_used == self.n_total


class NoiseCorrection(NamedTuple):
    """The reference's noise and what the fit did about it (`napari_blurfit._noise`)."""

    sd: float  # s_A: estimated from the pair ("auto") or given
    corrected: bool  # the fit's objective was corrected for it
    plain_sigma: np.ndarray  # the spectral L2 sigma of the noise-free model (the bias it has)
    corrected_sigma: np.ndarray  # the spectral L2 sigma corrected for ``sd``
    estimated: bool  # read from the pair, not given
    variance_stderr: float = 0.0  # standard error of the estimated sd**2 (0 when given)
    amplification: float = 1.0  # of the errors by the loop of estimate and fit (`_noise.loop_gain`)
    sensitivity: np.ndarray | None = None  # d sigma / d sd**2 where corrected (px per variance)


@dataclass(frozen=True)
class Solution:
    """The fitted parameters and how they were found."""

    sigma: np.ndarray
    gain: float
    offset: float
    rss: float  # sum of squared residuals over the pixels used
    loss_sum: float  # the fitted loss summed over the pixels used
    profile: dict
    huber_delta: float | None = None
    sst: float | None = None  # target's sum of squares about its mean over the pixels used
    whole: FullFit | None = None  # the rotated/shifted kernel, when one was fitted
    # (L2 without, least L2 with a gain/offset) of centred, axis-aligned kernels, from the whole
    # image's statistics: taken before a rotated/shifted fit lets them go (`brightness_rss`)
    brightness: tuple[float, float] | None = None
    noise: NoiseCorrection | None = None  # None: reference_noise=0, the noise-free model
    # the global search's first grid, contracted: the profile corrected for noise re-reads it
    grid: Tabulated | None = field(default=None, repr=False)


def each_axis(values: np.ndarray, ndim: int) -> np.ndarray:
    """Bounds with one shared entry spread over ``ndim`` axes (per-axis ones as they are)."""
    return np.broadcast_to(values, (ndim,)) if values.size == 1 else values


def spread(stats: SpectralStats) -> float:
    """The target's sum of squares about its mean (all pixels, all frames)."""
    return max(stats.cbb - float(stats.dc_b.sum()) ** 2 / stats.n_frames, 0.0)
