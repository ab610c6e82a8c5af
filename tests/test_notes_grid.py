"""Notes are few and true: exactly which findings a grid of clean and defective pairs gets.

Each pair is a real photograph (scikit-image's camera, 256^2 crop) through a known degradation;
a finding appears only for the defect the pair has, once, and the most actionable first.
"""

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from napari_blurfit import fit_blur
from napari_blurfit._gaussian import GaussianKernel

IMAGE = data.camera()[128:384, 128:384].astype(np.float64) / 255


def _noisy(x, sd=0.002, seed=0):
    return x + np.random.default_rng(seed).normal(0, sd, x.shape)


def _convolved(kernel):
    return ndimage.convolve(IMAGE, kernel / kernel.sum(), mode="reflect")


YY, XX = np.mgrid[-4:5, -4:5]
G2 = ndimage.gaussian_filter(IMAGE, 2.0)
PAIRS = {
    "clean": _noisy(G2),
    "clean, 1% noise": _noisy(G2, 0.01),
    "clean, 5% noise": _noisy(G2, 0.05),
    "noise-free": G2,
    "shifted": _noisy(GaussianKernel.from_sigma((2.0, 2.0), (0.7, -1.3)).apply(IMAGE)),
    "spline-shifted, noise-free": ndimage.shift(G2, (0.7, -1.3), order=3, mode="reflect"),
    "elliptical": _noisy(ndimage.gaussian_filter(IMAGE, (1.2, 3.0))),
    "rotated": _noisy(GaussianKernel.from_basicsr(3.0, 1.0, np.pi / 4).apply(IMAGE)),
    "gain and offset": _noisy(0.6 * G2 + 0.2),
    "gain": _noisy(0.7 * ndimage.gaussian_filter(IMAGE, 2.5) + 0.1),
    "disk": _noisy(_convolved((YY**2 + XX**2 <= 16).astype(float))),
    "box": _noisy(_convolved(np.ones((5, 5)))),
}

# (pair, options) -> the finding codes, in order
EXPECTED = [
    ("clean", {}, []),
    ("clean", {"shift": True}, []),
    ("clean", {"gain_offset": True}, []),
    ("clean, 1% noise", {}, []),
    ("clean, 5% noise", {"gain_offset": True}, []),
    ("noise-free", {}, []),
    ("noise-free", {"full_covariance": True}, []),
    ("shifted", {}, ["misaligned"]),
    ("shifted", {"gain_offset": True}, ["misaligned"]),
    ("shifted", {"shift": True}, []),
    ("spline-shifted, noise-free", {"shift": True}, []),  # its residual is at the rounding floor
    ("elliptical", {}, ["elliptical"]),
    ("elliptical", {"per_axis": True}, []),
    ("rotated", {}, ["rotated"]),
    ("rotated", {"full_covariance": True}, []),
    ("gain and offset", {}, ["brightness"]),  # not also "not Gaussian": the brightness explains it
    ("gain and offset", {"shift": True}, ["brightness"]),  # sigma ran away: still said
    ("gain and offset", {"gain_offset": True}, []),
    ("gain", {}, ["brightness"]),
    ("disk", {}, ["not_gaussian"]),
    ("disk", {"gain_offset": True}, ["not_gaussian"]),
    ("box", {}, ["not_gaussian"]),
]


@pytest.mark.parametrize("pair, options, codes", EXPECTED,
                         ids=[f"{p} {sorted(o)}" for p, o, _ in EXPECTED])
def test_exactly_these_findings(pair, options, codes):
    fit = fit_blur(IMAGE, PAIRS[pair], warn=False, **options)
    assert [f.code for f in fit.findings] == codes, fit.notes


def test_a_sharper_target_is_the_one_cause_given():
    fit = fit_blur(G2, IMAGE, warn=False)
    assert [f.code for f in fit.findings] == ["target_sharper"]
    assert fit.findings[0].suggestion == {"reverse": True}


def test_findings_come_most_actionable_first_one_per_cause():
    """A shifted pair that also needs a gain/offset: the switch to flip first, each cause once."""
    target = _noisy(0.6 * GaussianKernel.from_sigma((2.0, 2.0), (1.5, -1.0)).apply(IMAGE) + 0.2)
    codes = [f.code for f in fit_blur(IMAGE, target, warn=False).findings]
    assert codes[0] == "brightness" and len(codes) == len(set(codes))
    assert "not_gaussian" not in codes


def test_a_short_first_axis_may_hold_channels():
    """Three different crops stacked as (3, Y, X): read as z unless told; the finding says how."""
    from skimage import data as skdata

    cam = skdata.camera().astype(np.float64) / 255
    channels = np.stack([cam[i * 100 : i * 100 + 200, 50:250] for i in range(3)])
    blurred = _noisy(ndimage.gaussian_filter(channels, (0, 2.0, 2.0)))
    fit = fit_blur(channels, blurred, warn=False)
    assert [f.code for f in fit.findings] == ["channels"]  # not also "not Gaussian": same cause
    (finding,) = fit.findings
    assert finding.suggestion == {"spatial_axes": (-2, -1)} and finding.values == {"planes": 3}
    refit = fit_blur(channels, blurred, warn=False, **finding.suggestion)
    assert refit.findings == () and refit.sigma == pytest.approx((2.0, 2.0), rel=2e-3)


def test_frames_one_joint_sigma_does_not_describe_are_named_and_widen_its_error_bar():
    from skimage import data as skdata

    cam = skdata.camera().astype(np.float64) / 255
    frames = np.stack([cam[i * 60 : i * 60 + 192, 40:232] for i in range(6)])
    sigmas = np.linspace(1.0, 2.2, 6)
    differ = _noisy(np.stack([ndimage.gaussian_filter(f, s) for f, s in zip(frames, sigmas)]))
    fit = fit_blur(frames, differ, spatial_axes=(-2, -1), warn=False)
    (finding,) = fit.findings
    assert finding.code == "joint_spread"
    np.testing.assert_allclose(finding.values["sigma_range"], (1.0, 2.2), atol=0.02)
    spread = np.std(sigmas, ddof=1)
    assert finding.values["spread"][0] == pytest.approx(spread, rel=0.05)
    assert fit.sigma_stderr[0] >= spread / np.sqrt(6) * 0.95  # the spread is in the error bar
    same = _noisy(np.stack([ndimage.gaussian_filter(f, 1.6) for f in frames]))
    agree = fit_blur(frames, same, spatial_axes=(-2, -1), warn=False)
    assert agree.findings == () and agree.sigma_stderr[0] < 0.01


@pytest.mark.parametrize("sigma, rounded_by", [(0.7, "scipy"), (0.7, "round"), (1.0, "round")])
def test_a_target_whose_rounding_decides_sigma_is_said_to_be_undetermined(sigma, rounded_by):
    """The bundled uint8 reference has little detail at these scales: under a grey level (rms)."""
    from napari_blurfit.sample_data import load_sample_pair

    reference = load_sample_pair()[0]
    if rounded_by == "scipy":  # scipy's integer output truncates
        target = ndimage.gaussian_filter(reference, sigma)
    else:
        target = np.round(ndimage.gaussian_filter(reference.astype(np.float64), sigma))
    fit = fit_blur(reference, target, warn=False)
    assert [f.code for f in fit.findings] == ["lacks_detail"]
    assert fit.findings[0].values["quantum"] == 1.0 and fit.findings[0].values["change"] < 1.0
    assert "sigma is not determined by this pair" in fit.notes[0]
    wide = np.round(ndimage.gaussian_filter(reference.astype(np.float64), 2.5))  # 1.7 grey levels
    assert fit_blur(reference, wide, warn=False).findings == ()
