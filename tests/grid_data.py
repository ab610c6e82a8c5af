"""Image pairs on different grids with a known blur (issue 24), made by the brute-force model.

Each `Case` holds a reference, a target, both grids (plain dicts), the true kernel and gain/
offset, and the `fit_blur` options that fit it. Targets carry 0.2 % Gaussian noise (of their
range); pixels the reference did not see get unrelated texture, as a real camera would record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grid_brute as gb
import numpy as np
from scipy import ndimage
from skimage import data
from volumes import textured

NOISE = 0.002  # of the target's range


def photo(name: str, size: int, y0: int | None = None, x0: int | None = None) -> np.ndarray:
    """A ``size`` x ``size`` window (default central) of a scikit-image photograph, grey float64."""
    img = np.asarray(getattr(data, name)(), dtype=np.float64)
    if img.ndim == 3:
        img = img[..., 1]
    y0 = (img.shape[0] - size) // 2 if y0 is None else y0
    x0 = (img.shape[1] - size) // 2 if x0 is None else x0
    return np.ascontiguousarray(img[y0 : y0 + size, x0 : x0 + size])


@dataclass
class Case:
    """A pair with its truth. ``reverse``: the sharper image is the target (the fit's source)."""

    name: str
    reference: np.ndarray
    reference_grid: dict
    target: np.ndarray
    target_grid: dict
    covariance: np.ndarray  # true kernel, in the source's pixels
    shift: np.ndarray
    gain: float = 1.0
    offset: float = 0.0
    options: dict = field(default_factory=dict)  # fit_blur options
    sigma_tol: float = 0.01  # relative, along every direction
    shift_tol: float = 0.03  # source px

    @property
    def d(self) -> int:
        return len(self.covariance)

    @property
    def sigma(self) -> np.ndarray:
        return np.sqrt(np.diag(self.covariance))

    def roles(self):
        """(source, source grid, goal, goal grid): the kernel blurs the source into the goal."""
        if self.options.get("reverse"):
            return self.target, self.target_grid, self.reference, self.reference_grid
        return self.reference, self.reference_grid, self.target, self.target_grid

    def grids(self) -> dict:
        return {"reference_grid": self.reference_grid, "target_grid": self.target_grid}

    def problem(self) -> gb.Problem:
        """The brute-force loss of this pair (over the goal pixels seen, and the mask)."""
        source, source_grid, goal, goal_grid = self.roles()
        return gb.Problem(source, source_grid, goal, goal_grid, d=self.d,
                          mask=self.options.get("mask"))


def observe(source, source_grid, goal_shape, goal_grid, covariance, shift=None, gain=1.0,
            offset=0.0, *, seed=0, noise=NOISE) -> np.ndarray:
    """The goal image: the model, 0.2 % noise, unrelated texture where the source saw nothing."""
    rng = np.random.default_rng(seed)
    image = gb.model(source, source_grid, goal_shape, goal_grid, covariance, shift, gain, offset)
    seen = np.isfinite(image)
    span = np.nanmax(image) - np.nanmin(image)
    image = image + rng.normal(0.0, noise * span, image.shape)
    unseen = np.nanmin(image) + span * rng.random(image.shape)
    return np.where(seen, image, ndimage.gaussian_filter(unseen, 1.0))


def per_axis(sigmas) -> np.ndarray:
    return np.diag(np.square(np.asarray(sigmas, float)))


ALL = {"per_axis": True, "shift": True, "gain_offset": True}


def binned(name, factor, sigmas, shift, *, size=120, seed=0) -> Case:
    """Reference at 0.1 units/px; the target its ``factor`` x block average (aligned grids)."""
    ref = gb.grid(0.1, (3.0, -2.0))
    half = 0.05 * (factor - 1)  # a block's centre: the first pixel's centre plus half a block
    tgt = gb.grid(0.1 * factor, (3.0 + half, -2.0 + half), "area")
    reference = photo(name, size)
    cov = per_axis(sigmas)
    target = observe(reference, ref, (size // factor,) * 2, tgt, cov, shift, 1.3, -12.0, seed=seed)
    return Case(f"{name}-area-{factor}x", reference, ref, target, tgt, cov, np.array(shift), 1.3,
                -12.0, dict(ALL))


def decimated(name, factor, sigmas, shift, *, size=120, seed=0) -> Case:
    """Target: every ``factor``-th pixel of the blurred reference, sampled at its centre."""
    ref = gb.grid(0.1, (3.0, -2.0))
    tgt = gb.grid(0.1 * factor, (3.1, -1.9), "point")  # centres on reference pixels 1, 1+f, ...
    reference = photo(name, size)
    cov = per_axis(sigmas)
    target = observe(reference, ref, ((size - 2) // factor,) * 2, tgt, cov, shift, 0.8, 7.0,
                     seed=seed)
    return Case(f"{name}-point-{factor}x", reference, ref, target, tgt, cov, np.array(shift), 0.8,
                7.0, dict(ALL))


def volume_binned(*, seed=0) -> Case:
    """3D: reference voxels (0.2, 0.05, 0.05) um, the target binned 2x2x2."""
    ref = gb.grid((0.2, 0.05, 0.05), (0.0, 0.0, 0.0), ndim=3)
    tgt = gb.grid((0.4, 0.1, 0.1), (0.1, 0.025, 0.025), "area", ndim=3)
    reference = 1000.0 * textured((24, 48, 48), seed=seed)
    cov = per_axis((1.5, 2.4, 2.0))
    shift = np.array([0.3, -0.4, 0.5])
    target = observe(reference, ref, (12, 24, 24), tgt, cov, shift, 1.1, 20.0, seed=seed)
    return Case("volume-area-2x", reference, ref, target, tgt, cov, shift, 1.1, 20.0, dict(ALL))


def microscopes(*, seed=0) -> Case:
    """0.065 um/px against 0.108 um/px (ratio 1.66), grids offset by a fraction of a pixel."""
    ref = gb.grid(0.065, (0.0, 0.0))
    tgt = gb.grid(0.108, (0.071, 0.113), "area")
    reference = photo("brick", 128)
    cov = per_axis((0.15 / 0.065, 0.12 / 0.065))
    shift = np.array([0.25, -0.35])
    target = observe(reference, ref, (74, 74), tgt, cov, shift, 0.9, 5.0, seed=seed)
    return Case("0.065-vs-0.108um", reference, ref, target, tgt, cov, shift, 0.9, 5.0, dict(ALL),
                sigma_tol=0.02)


def sub_region(*, overhang=False, seed=0) -> Case:
    """The target covers a shifted sub-region (translate (37.3, 52.1)); ``overhang``: part of it
    lies beyond the reference's edge and must be left out."""
    ref = gb.grid(1.0, (0.0, 0.0))
    tgt = gb.grid(2.0, (37.3, 52.1), "area")
    reference = photo("camera", 128, 200, 180)
    shape = (38, 42) if overhang else (30, 28)
    cov = per_axis((2.2, 1.8))
    target = observe(reference, ref, shape, tgt, cov, None, 1.0, 0.0, seed=seed)
    name = "overhanging-region" if overhang else "sub-region"
    return Case(name, reference, ref, target, tgt, cov, np.zeros(2), options={"per_axis": True},
                sigma_tol=0.02)


def finer_truth(*, seed=0) -> Case:
    """Issue 24's 2x/3x pair of one truth: the truth binned 2x is the reference, the truth
    blurred by 3.0 reference px (6 truth px) and binned 3x is the target (ratio 1.5)."""
    truth = photo("camera", 300, 120, 110)
    blurred = ndimage.gaussian_filter(truth, 6.0)
    inner = (slice(24, 276), slice(24, 276))  # 252 px, clear of the filter's reflected border
    reference = gb.block_mean(truth[inner], (2, 2))
    target = gb.block_mean(blurred[inner], (3, 3))
    target = target + np.random.default_rng(seed).normal(0, NOISE * np.ptp(target), target.shape)
    ref = gb.grid(2.0, (0.5, 0.5))  # truth pixel i's centre at i: 2k, 2k+1 average to 2k + 0.5
    tgt = gb.grid(3.0, (1.0, 1.0), "area")
    return Case("finer-truth-1.5x", reference, ref, target, tgt, per_axis((3.0, 3.0)),
                np.zeros(2), options={}, sigma_tol=0.04)


def rotated(*, seed=0) -> Case:
    """A rotated elliptical kernel, principal sigmas (3.0, 1.5) at 30 degrees, 2x area."""
    ref = gb.grid(0.1, (3.0, -2.0))
    tgt = gb.grid(0.2, (3.05, -1.95), "area")
    reference = photo("brick", 120)
    cov = gb.rotated_covariance((3.0, 1.5), 30.0)
    shift = np.array([0.35, -0.25])
    target = observe(reference, ref, (60, 60), tgt, cov, shift, 1.2, 3.0, seed=seed)
    return Case("rotated-area-2x", reference, ref, target, tgt, cov, shift, 1.2, 3.0,
                {"full_covariance": True, "shift": True, "gain_offset": True})


def with_outliers(loss: str, *, seed=0) -> Case:
    """2x area with 1 % of the target's pixels hit by outliers, for a robust loss."""
    case = binned("camera", 2, (1.6, 2.2), (0.0, 0.0), seed=seed)
    rng = np.random.default_rng(seed + 1)
    hit = rng.random(case.target.shape) < 0.01
    case.target = np.where(hit, case.target + 80.0 * rng.standard_normal(case.target.shape),
                           case.target)
    case.name = f"camera-area-2x-{loss}"
    case.options = {"loss": loss, "per_axis": True, "gain_offset": True}
    if loss == "huber":
        case.options["huber_delta"] = 2.0
    return case


def masked(*, seed=0) -> Case:
    """2x area; a bright patch in the target the reference does not have, masked out."""
    case = binned("brick", 2, (1.8, 1.5), (0.0, 0.0), seed=seed)
    mask = np.ones(case.target.shape, bool)
    mask[10:30, 25:50] = False
    case.target = np.where(mask, case.target, case.target + 150.0)
    case.name = "brick-area-2x-masked"
    case.options = {"per_axis": True, "gain_offset": True, "mask": mask}
    return case


def reversed_pair(*, seed=0) -> Case:
    """The sharper, finer image passed as the target: the kernel is in the target's pixels."""
    case = binned("grass", 3, (2.4, 2.8), (0.3, -0.2), seed=seed)
    return Case("grass-area-3x-reversed", case.target, case.target_grid, case.reference,
                case.reference_grid, case.covariance, case.shift, case.gain, case.offset,
                dict(ALL, reverse=True))


def reversed_point(*, seed=0) -> Case:
    """Reversed with a decimated reference: the reference grid's sampling ("point") is used."""
    case = decimated("camera", 2, (1.7, 1.3), (0.25, -0.2), seed=seed)
    return Case("camera-point-2x-reversed", case.target, case.target_grid, case.reference,
                case.reference_grid, case.covariance, case.shift, case.gain, case.offset,
                dict(ALL, reverse=True))


def everything(*, seed=0) -> Case:
    """Reverse, Huber, full covariance, shift, gain/offset and a mask (on the reference's grid,
    where a reversed fit measures its loss), with outliers and a masked bright patch."""
    case = rotated(seed=seed)
    rng = np.random.default_rng(seed + 2)
    coarse = case.target.copy()
    hit = rng.random(coarse.shape) < 0.01
    coarse[hit] += 60.0 * rng.standard_normal(int(hit.sum()))
    mask = np.ones(coarse.shape, bool)
    mask[35:50, 5:25] = False
    coarse[~mask] += 200.0
    return Case("everything-reversed", coarse, case.target_grid, case.reference,
                case.reference_grid, case.covariance, case.shift, case.gain, case.offset,
                {"reverse": True, "loss": "huber", "huber_delta": 1.0, "full_covariance": True,
                 "shift": True, "gain_offset": True, "mask": mask})


def stack(*, seed=0) -> Case:
    """Three frames (camera, brick, moon) sharing one kernel, each binned 2x."""
    ref = gb.grid(0.5, (1.0, 1.0))
    tgt = gb.grid(1.0, (1.25, 1.25), "area")
    reference = np.stack([photo(name, 96) for name in ("camera", "brick", "moon")])
    cov = per_axis((1.7, 2.1))
    target = observe(reference, ref, (48, 48), tgt, cov, None, 1.1, -4.0, seed=seed)
    return Case("stack-area-2x", reference, ref, target, tgt, cov, np.zeros(2), 1.1, -4.0,
                {"per_axis": True, "gain_offset": True, "spatial_axes": (-2, -1)})


def cropped(*, seed=0) -> Case:
    """Same pixel size, the target cropped 3 px on each side (90 beside 96), as a deconvolved
    image beside its raw one."""
    ref = gb.grid(0.1, (0.0, 0.0))
    tgt = gb.grid(0.1, (0.3, 0.3), "area")
    reference = photo("moon", 96)
    cov, shift = per_axis((1.4, 1.9)), np.array([0.2, -0.3])
    target = observe(reference, ref, (90, 90), tgt, cov, shift, 1.0, 2.0, seed=seed)
    return Case("cropped-3px", reference, ref, target, tgt, cov, shift, 1.0, 2.0, dict(ALL))


def anisotropic_ratio(*, seed=0) -> Case:
    """Pixels 2.5x larger along y and 1.7x along x, grids offset (non-integer on both axes)."""
    ref = gb.grid(0.1, (0.0, 0.0))
    tgt = gb.grid((0.25, 0.17), (0.13, 0.07), "area")
    reference = photo("gravel", 120)
    cov, shift = per_axis((2.2, 1.6)), np.array([-0.3, 0.2])
    target = observe(reference, ref, (46, 68), tgt, cov, shift, 1.1, -3.0, seed=seed)
    return Case("anisotropic-2.5x-1.7x", reference, ref, target, tgt, cov, shift, 1.1, -3.0,
                dict(ALL), sigma_tol=0.02)


def volume_rotated(*, seed=0) -> Case:
    """3D: a rotated kernel (full covariance) across a 2x2x2 binning of anisotropic voxels."""
    case = volume_binned(seed=seed)
    cov = np.array([[1.5**2, 0.6, 0.3], [0.6, 2.4**2, 1.2], [0.3, 1.2, 2.0**2]])
    case.covariance = cov
    case.target = observe(case.reference, case.reference_grid, (12, 24, 24), case.target_grid,
                          cov, case.shift, 1.1, 20.0, seed=seed)
    case.name = "volume-rotated-2x"
    case.options = {"full_covariance": True, "shift": True, "gain_offset": True}
    return case


# Issue 24 item 1 ("Exact"), by name; builders are called lazily by the tests.
EXACT = {
    "camera-area-2x": lambda: binned("camera", 2, (1.6, 2.2), (0.4, -0.3)),
    "brick-area-3x": lambda: binned("brick", 3, (2.5, 2.5), (0.2, 0.6)),
    "grass-area-4x": lambda: binned("grass", 4, (3.0, 3.4), (-0.5, 0.35)),
    "moon-point-2x": lambda: decimated("moon", 2, (1.8, 1.4), (0.3, 0.3)),
    "brick-point-3x": lambda: decimated("brick", 3, (2.6, 3.0), (-0.2, 0.4)),
    "0.065-vs-0.108um": microscopes,
    "sub-region": sub_region,
    "overhanging-region": lambda: sub_region(overhang=True),
    "finer-truth-1.5x": finer_truth,
    "volume-area-2x": volume_binned,
    "cropped-3px": cropped,
    "anisotropic-2.5x-1.7x": anisotropic_ratio,
}

# Every option of `fit_blur` combined with grids (issue 24: "every option combines").
OPTIONS = {
    "rotated-area-2x": rotated,
    "camera-area-2x-l1": lambda: with_outliers("l1"),
    "camera-area-2x-huber": lambda: with_outliers("huber"),
    "brick-area-2x-masked": masked,
    "grass-area-3x-reversed": reversed_pair,
    "camera-point-2x-reversed": reversed_point,
    "stack-area-2x": stack,
    "everything-reversed": everything,
    "volume-rotated-2x": volume_rotated,
}


def brute_fit(case: Case) -> gb.BruteFit:
    """The brute-force optimum of ``case`` under its options, started near the truth."""
    source, source_grid, goal, goal_grid = case.roles()
    o = case.options
    return gb.fit(source, source_grid, goal, goal_grid, start_covariance=1.1 * case.covariance,
                  start_shift=np.zeros(case.d), start_gain=0.9 * case.gain, start_offset=0.0,
                  loss=o.get("loss", "l2"), per_axis=o.get("per_axis", False),
                  full_covariance=o.get("full_covariance", False), shift=o.get("shift", False),
                  gain_offset=o.get("gain_offset", False), mask=o.get("mask"),
                  huber_delta=o.get("huber_delta"))
