"""What a fit across grids says besides its numbers: judged in the reference's pixels.

On the target's grid a 2x-binned pair's shift or blur is half as many pixels: a 0.72 px shift is
0.36 target px, below what a one-grid fit calls misaligned there, yet it inflates sigma by a
quarter. The checks ask the exact model instead.
"""

import numpy as np
import pytest
from skimage import data

from napari_blurfit import Grid, fit_blur
from napari_blurfit._gaussian import GaussianKernel

CAMERA = data.camera() / 255.0
HALF = Grid(2.0, translate=0.5)


def _binned(kernel: GaussianKernel, seed=0, target_noise=0.01):
    rng = np.random.default_rng(seed)
    target = kernel.apply(CAMERA).reshape(256, 2, 256, 2).mean(axis=(1, 3))
    return target + target_noise * rng.standard_normal(target.shape)


def _codes(fit):
    return [f.code for f in fit.findings]


def test_a_shift_small_in_target_pixels_is_said_in_reference_pixels():
    target = _binned(GaussianKernel.from_sigma((1.0, 1.0), shift=(0.6, -0.4)))
    fit = fit_blur(CAMERA, target, target_grid=HALF, warn=False)
    assert fit.sigma[0] > 1.1  # the shift read as blur
    finding = next(f for f in fit.findings if f.code == "misaligned")
    assert finding.suggestion == {"shift": True}
    np.testing.assert_allclose(finding.values["shift"], (0.6, -0.4), atol=0.03)
    assert "in the reference's pixels" in finding.text
    refit = fit_blur(CAMERA, target, target_grid=HALF, warn=False, **finding.suggestion)
    assert refit.sigma[0] == pytest.approx(1.0, rel=0.01)
    assert "misaligned" not in _codes(refit)


def test_noise_too_uncertain_to_correct_on_the_target_grid_is_said_with_its_bias():
    """Whether the start calls the reading significant depends on the draw: this one it does not
    (another corrects sigma to 0.98 on its own)."""
    rng = np.random.default_rng(0)
    target = GaussianKernel.from_sigma((1.0, 1.0), shift=(0.6, -0.4)).apply(CAMERA)
    target = target.reshape(256, 2, 256, 2).mean(axis=(1, 3)) + 0.01 * rng.standard_normal((256, 256))
    reference = CAMERA + 0.05 * rng.standard_normal(CAMERA.shape)
    fit = fit_blur(reference, target, target_grid=HALF, shift=True, warn=False)
    finding = next(f for f in fit.findings if f.code == "reference_noise")
    assert not fit.reference_noise_corrected and not finding.values["corrected"]
    assert finding.values["bias"] > 0.1 and "may be noisy" in finding.text
    assert finding.values["reference_noise"] == pytest.approx(0.05, rel=0.2)
    refit = fit_blur(reference, target, target_grid=HALF, shift=True, warn=False, **finding.suggestion)
    assert refit.sigma[0] == pytest.approx(1.0, rel=0.05)  # the read level, 10% off the true one


@pytest.mark.parametrize("options", [{}, {"per_axis": True}, {"shift": True, "gain_offset": True},
                                     {"full_covariance": True}])
@pytest.mark.parametrize("image", ["camera", "brick", "grass"])
def test_clean_pairs_across_grids_get_no_notes(image, options):
    """A clean reference, a Gaussian blur, 2x area binning, 0.2% noise: nothing to say."""
    source = getattr(data, image)() / 255.0
    source = source[:512, :512]
    rng = np.random.default_rng(3)
    target = 1.5 * GaussianKernel.from_sigma((1.6, 1.6)).apply(source) + 0.1 if options.get("gain_offset") \
        else GaussianKernel.from_sigma((1.6, 1.6)).apply(source)
    target = target.reshape(256, 2, 256, 2).mean(axis=(1, 3))
    target = target + 0.002 * target.std() * rng.standard_normal(target.shape)
    fit = fit_blur(source, target, target_grid=HALF, warn=False, **options)
    assert fit.notes == ()
    assert fit.sigma[0] == pytest.approx(1.6, rel=0.01)
