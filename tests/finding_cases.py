"""One real fit per finding the core can give: pairs made from the camera photograph.

`core_findings` maps each case to the `Finding` its fit gives; `CASES` names the code each case
shows. Computed once per test session (a few seconds).
"""

import dataclasses
import functools

import numpy as np
from scipy import ndimage
from skimage import data

from napari_blurfit import fit_blur, fit_blur_stack

TRUE_SHIFT = (1.3, -0.8)  # px, rows and columns: ndimage.shift's convention

CASES = {  # case -> the code its fit gives
    "brightness": "brightness",
    "target sharper": "target_sharper",
    "reference sharper": "target_sharper",
    "identity": "not_identifiable",
    "at a bound": "at_bound",
    "rotated fit at a bound": "at_bound",
    "NaN pixels": "nonfinite_excluded",
    "box blur": "not_gaussian",
    "elliptical": "elliptical",
    "shifted": "misaligned",
    "rotated": "rotated",
    "blank frame": "no_fit",
    "note only": "note",
}


def camera(size=192):
    img = data.camera().astype(np.float64)
    y0, x0 = (np.array(img.shape) - size) // 2
    return np.ascontiguousarray(img[y0 : y0 + size, x0 : x0 + size])


def rotated_kernel(major, minor, theta, radius=12):
    """A normalised Gaussian kernel, major axis ``theta`` from +x (columns) towards +y (rows)."""
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(float)
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    k = np.exp(-0.5 * ((u / major) ** 2 + (v / minor) ** 2))
    return k / k.sum()


def _fits():
    a = camera()
    blurred = ndimage.gaussian_filter(a, 2.0)
    noise = np.random.default_rng(0).normal(0, 0.002 * np.ptp(a), a.shape)
    nan_row = blurred.copy()
    nan_row[5] = np.nan
    quiet = dict(warn=False)
    yield "brightness", fit_blur(a, 0.8 * blurred + 30, **quiet)
    yield "target sharper", fit_blur(blurred, a, **quiet)
    yield "reference sharper", fit_blur(a, blurred, reverse=True, **quiet)
    yield "identity", fit_blur(a, a.copy(), **quiet)
    yield "at a bound", fit_blur(a, blurred, sigma_bounds=(0, 1), **quiet)
    yield "rotated fit at a bound", fit_blur(a, blurred, sigma_bounds=(0, 1), full_covariance=True, **quiet)
    yield "NaN pixels", fit_blur(a, nan_row, **quiet)
    yield "box blur", fit_blur(a, ndimage.uniform_filter(a, 7), **quiet)
    yield "elliptical", fit_blur(a, ndimage.gaussian_filter(a, (1.0, 3.0)) + noise, **quiet)
    yield "shifted", fit_blur(a, ndimage.shift(blurred, TRUE_SHIFT) + noise, **quiet)
    yield "rotated", fit_blur(a, ndimage.convolve(a, rotated_kernel(3.0, 1.0, np.pi / 4)) + noise, **quiet)
    stack = np.stack([a, np.full_like(a, 7.0)])
    yield "blank frame", fit_blur_stack(stack, ndimage.gaussian_filter(stack, (0, 2, 2)), **quiet)[1]
    yield "note only", dataclasses.replace(fit_blur(a, blurred), notes=("checked by hand",), findings=())


@functools.cache
def core_fits() -> dict:
    """Case -> the `BlurFit` of that case's pair."""
    return dict(_fits())


def core_findings() -> dict:
    """Case -> the first finding of its fit with the case's code."""
    return {case: next(f for f in fit.findings if f.code == CASES[case])
            for case, fit in core_fits().items()}
