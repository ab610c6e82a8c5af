"""Issue 24 "Everywhere": stacks and blur maps across grids."""

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from napari_blurfit import Grid, blur_map, fit_blur, fit_blur_stack

CAMERA = data.camera().astype(np.float64) / 255.0
HALF = Grid(2.0, translate=0.5)  # 2x2 blocks of unit reference pixels, centred on them


def _block(image, f=2):
    *lead, ny, nx = image.shape
    return image.reshape(*lead, ny // f, f, nx // f, f).mean(axis=(-3, -1))


def test_stack_per_frame_and_joint_across_grids():
    frames = np.stack([CAMERA, CAMERA[::-1], CAMERA[:, ::-1]])
    targets = _block(np.stack([ndimage.gaussian_filter(f, s) for f, s in zip(frames, (1.0, 2.0, 3.0))]))
    fits = fit_blur_stack(frames, targets, target_grid=HALF, warn=False)
    assert [f.sigma[0] for f in fits] == pytest.approx([1.0, 2.0, 3.0], rel=1e-3)
    assert all(f.grids["target"] == HALF.__class__.of(HALF, 2, "t") for f in fits)
    same = _block(np.stack([ndimage.gaussian_filter(f, 1.5) for f in frames]))
    joint = fit_blur(frames, same, spatial_axes=(-2, -1), target_grid=HALF, warn=False)
    assert joint.sigma[0] == pytest.approx(1.5, rel=1e-3)
    assert joint.fitted(frames).shape == same.shape


def test_stack_with_a_mask_on_the_targets_grid_and_frames_that_differ():
    frames = np.stack([CAMERA, CAMERA.T])
    targets = _block(np.stack([ndimage.gaussian_filter(f, 2.0) for f in frames]))
    mask = np.zeros(targets.shape[1:], dtype=bool)
    mask[40:200, 30:220] = True
    fits = fit_blur_stack(frames, targets, target_grid=HALF, mask=mask, warn=False)
    assert [f.n_pixels for f in fits] == [int(mask.sum())] * 2
    assert [f.sigma[0] for f in fits] == pytest.approx([2.0, 2.0], rel=1e-3)
    with pytest.raises(ValueError, match=r"^reference and target must have the same frames"):
        fit_blur_stack(frames, targets[:1], target_grid=HALF)


def test_blur_map_across_grids_recovers_a_ramp_on_the_targets_grid():
    """Left half blurred by 1.5, right half by 3 (reference px); target 2x binned."""
    left, right = ndimage.gaussian_filter(CAMERA, 1.5), ndimage.gaussian_filter(CAMERA, 3.0)
    blurred = np.where(np.arange(512)[None, :] < 256, left, right)
    target = _block(blurred)
    m = blur_map(CAMERA, target, tile=64, overlap=0.0, target_grid=HALF, warn=False)
    assert m.shape == target.shape and m.sigma.shape == (4, 4, 2)
    assert m.grids["target"].scale == (2.0, 2.0)
    assert np.nanmedian(m.sigma[:, :2, 0]) == pytest.approx(1.5, rel=0.01)
    assert np.nanmedian(m.sigma[:, 2:, 0]) == pytest.approx(3.0, rel=0.01)
    assert m.to_dict()["grids"]["target"]["translate"] == [0.5, 0.5]


def test_blur_map_tiles_outside_the_reference_are_said():
    """A target twice the reference's field: the tiles it never saw are NaN with reason 'outside'."""
    target = np.zeros((512, 256))
    target[:256] = _block(ndimage.gaussian_filter(CAMERA, 2.0))
    target[256:] = _block(ndimage.gaussian_filter(CAMERA[::-1], 2.0))
    m = blur_map(CAMERA, target, tile=128, overlap=0.0, target_grid=HALF, warn=False)
    assert list(m.reason[2:].ravel()) == ["outside"] * 4
    assert np.all(np.isnan(m.sigma[2:]))
    assert m.sigma[:2, :, 0] == pytest.approx(np.full((2, 2), 2.0), rel=0.01)
    assert any(f.code == "unmeasured_tiles" and f.values["reasons"] == {"outside": 4} for f in m.findings)


def test_blur_map_with_equal_grids_is_the_plain_map():
    target = ndimage.gaussian_filter(CAMERA, 2.0)
    plain = blur_map(CAMERA, target, tile=128, warn=False)
    same = blur_map(CAMERA, target, tile=128, warn=False, reference_grid=Grid(0.1), target_grid=Grid(0.1))
    np.testing.assert_array_equal(plain.sigma, same.sigma)
    assert same.grids["reference"].scale == (0.1, 0.1)
