"""The layer bridge without a viewer: real napari layers in, fit and output layer tuples out."""

import numpy as np
import pytest
from napari.layers import Image, Labels, Shapes
from scipy import ndimage

from napari_blurfit import BlurFitWarning, fit_blur
from napari_blurfit.layers import run_layer_fit


@pytest.fixture
def layers(cell):
    ref = Image(cell, name="ref", scale=(0.5, 0.25), translate=(3, 4), units=("um", "um"))
    tgt = Image(2 * ndimage.gaussian_filter(cell, (1.5, 3.0)) + 5, name="tgt", scale=(0.5, 0.25),
                translate=(3, 4), units=("um", "um"))
    return ref, tgt


def test_outputs_and_world_units(layers):
    ref, tgt = layers
    before = ref.data.copy(), tgt.data.copy()
    result = run_layer_fit(ref, tgt, per_axis=True, gain_offset=True)
    np.testing.assert_allclose(result.fit.sigma, (1.5, 3.0), rtol=1e-3)
    np.testing.assert_allclose(result.sigma_world, (0.75, 0.75), rtol=1e-3)
    assert result.units == ("micrometer", "micrometer")
    (fitted, fkw, ftype), (resid, rkw, rtype) = result.layers
    assert (fkw["name"], rkw["name"]) == ("tgt fit", "tgt residual")
    assert ftype == rtype == "image"
    assert fkw["scale"] == rkw["scale"] == (0.5, 0.25) and rkw["translate"] == (3.0, 4.0)
    lo, hi = rkw["contrast_limits"]
    assert lo == -hi and hi > 0 and rkw["colormap"] == "bwr"
    np.testing.assert_allclose(fitted + resid, tgt.data, atol=1e-3)
    assert rkw["metadata"]["blurfit"]["sigma"] == list(result.fit.sigma)
    assert rkw["metadata"]["blurfit"]["reference"] == "ref"
    np.testing.assert_array_equal(ref.data, before[0])
    np.testing.assert_array_equal(tgt.data, before[1])


def test_same_as_core(layers):
    ref, tgt = layers
    # (round fits of an elliptical blur: the note saying so is not what this test is about)
    core = fit_blur(ref.data, tgt.data, loss="l1", gain_offset=True, warn=False)
    assert run_layer_fit(ref, tgt, loss="l1", gain_offset=True, warn=False).fit.sigma == core.sigma


def test_masks_from_labels_and_shapes(layers, cell):
    ref, tgt = layers
    data = tgt.data.copy()
    data[:, :100] = 0  # garbage outside the mask
    bad = Image(data, name="bad")
    lab = np.zeros(cell.shape, int)
    lab[:, 120:] = 1
    ref = Image(ref.data, name="ref")  # on the pixels of `bad` (other grids: test_widget_grids.py)
    fit = run_layer_fit(ref, bad, mask_layer=Labels(lab), per_axis=True, gain_offset=True).fit
    np.testing.assert_allclose(fit.sigma, (1.5, 3.0), rtol=1e-3)
    shapes = Shapes([np.array([[0, 120], [0, 255], [255, 255], [255, 120]])], shape_type="polygon")
    fit2 = run_layer_fit(ref, bad, mask_layer=shapes, per_axis=True, gain_offset=True).fit
    np.testing.assert_allclose(fit2.sigma, (1.5, 3.0), rtol=1e-3)


def test_bad_layers(layers, cell):
    ref, tgt = layers
    with pytest.raises(TypeError, match="target must be an image layer; got Labels"):
        run_layer_fit(ref, Labels(np.zeros((4, 4), int)))
    with pytest.raises(ValueError, match="same layer 'ref'"):
        run_layer_fit(ref, ref)
    msg = r"reference 'ref' \(256, 256\) and target 'small' \(2, 10, 10\) differ in shape"
    with pytest.raises(ValueError, match=msg):
        run_layer_fit(ref, Image(np.ones((2, 10, 10)), name="small"))
    rgb = Image(np.zeros((32, 32, 3), np.uint8), rgb=True, name="rgb")
    with pytest.raises(ValueError, match="'rgb' is RGB"):
        run_layer_fit(rgb, rgb)
    with pytest.raises(ValueError, match="target is constant"):
        run_layer_fit(ref, Image(np.ones_like(cell), name="flat"))


@pytest.fixture
def time_series(camera):
    ref = np.stack([camera[i * 20 : i * 20 + 96, i * 20 : i * 20 + 96] for i in range(5)])
    sigmas = [1.0, 1.5, 2.0, 2.5, 3.0]
    tgt = np.stack([ndimage.gaussian_filter(f, s) for f, s in zip(ref, sigmas)])
    return Image(ref, name="ref t", scale=(1, 0.5, 0.5)), Image(tgt, name="tgt t",
                                                             scale=(1, 0.5, 0.5)), sigmas


def test_modes_on_a_time_series(time_series):
    ref, tgt, sigmas = time_series
    one = run_layer_fit(ref, tgt, mode="current slice", world_point=(3, 0, 0))
    assert one.fit.sigma[0] == pytest.approx(2.5, rel=1e-3)
    assert one.layers[0][0].shape == (96, 96) and one.layers[0][1]["scale"] == (0.5, 0.5)
    with pytest.warns(BlurFitWarning, match="one sigma does not describe these frames"):
        joint = run_layer_fit(ref, tgt, mode="frames jointly")  # they are blurred differently
    assert 1.0 < joint.fit.sigma[0] < 3.0 and joint.layers[0][0].shape == (5, 96, 96)
    assert [f.code for f in joint.fit.findings] == ["joint_spread"]
    assert joint.sigma_world == pytest.approx(tuple(0.5 * s for s in joint.fit.sigma))
    per = run_layer_fit(ref, tgt, mode="per frame")
    np.testing.assert_allclose([f.sigma[0] for f in per.frames], sigmas, rtol=1e-3)
    with pytest.raises(ValueError, match="must be a 2D or 3D image; got a 4-D"):
        run_layer_fit(Image(np.zeros((2, 2, 8, 8))), Image(np.ones((2, 2, 8, 8))))


def test_lazy_layers_give_numpy_answers_and_lazy_outputs(time_series):
    """napari's lazy (dask) layers: same fits as in memory; a joint fit's outputs stay lazy."""
    import dask.array as da

    ref, tgt, sigmas = time_series
    lazy_ref = Image(da.from_array(ref.data, chunks=(1, 96, 96)), name="ref t", scale=(1, 0.5, 0.5))
    lazy_tgt = Image(da.from_array(tgt.data, chunks=(1, 96, 96)), name="tgt t", scale=(1, 0.5, 0.5))
    with pytest.warns(BlurFitWarning, match="one sigma does not describe these frames"):
        joint = run_layer_fit(ref, tgt, mode="frames jointly")
    lazy = run_layer_fit(lazy_ref, lazy_tgt, mode="frames jointly")  # lazy frames are not compared
    assert lazy.fit.sigma == pytest.approx(joint.fit.sigma, rel=1e-6)
    for (want, want_kw, _), (got, got_kw, _) in zip(joint.layers, lazy.layers):
        assert isinstance(got, da.Array) and got.shape == want.shape
        assert got_kw["name"] == want_kw["name"] and got_kw["scale"] == want_kw["scale"]
        np.testing.assert_allclose(got.compute(), want, rtol=1e-5, atol=1e-4)
        assert np.all(np.isfinite(got_kw["contrast_limits"]))
    per = run_layer_fit(lazy_ref, lazy_tgt, mode="per frame")
    np.testing.assert_allclose([f.sigma[0] for f in per.frames], sigmas, rtol=1e-3)
    one = run_layer_fit(lazy_ref, lazy_tgt, mode="current slice", world_point=(3, 0, 0))
    assert one.fit.sigma[0] == pytest.approx(2.5, rel=1e-3)
    assert isinstance(one.layers[0][0], np.ndarray)


@pytest.mark.slow
def test_blur_map_mode_layer(cell):
    ref = Image(cell, name="c", scale=(0.1, 0.1))
    tgt = Image(ndimage.gaussian_filter(cell, 2.0), name="c blurred", scale=(0.1, 0.1))
    out = run_layer_fit(ref, tgt, mode="blur map", tile=64)
    data, kwargs, kind = out.layers[0]
    assert kind == "image" and kwargs["name"] == "c blurred blur map"
    assert data.shape == cell.shape and kwargs["colormap"] == "viridis"
    np.testing.assert_allclose(data, 2.0, rtol=1e-3)
    assert kwargs["scale"] == (0.1, 0.1)


def test_slice_mode_follows_world_coordinates(time_series):
    ref, tgt, sigmas = time_series
    ref.scale, tgt.scale = (2.0, 0.5, 0.5), (2.0, 0.5, 0.5)  # frame 2 sits at world t = 4
    one = run_layer_fit(ref, tgt, mode="current slice", world_point=(4.0, 10.0, 10.0))
    assert one.fit.sigma[0] == pytest.approx(sigmas[2], rel=1e-3)


# --- masks in the target's own pixels (issue 11) -------------------------------------------------
def _world(layer, pixels):
    """World coordinates of the target's pixel positions (rows of (row, col))."""
    return np.array([layer.data_to_world(p) for p in pixels])


def test_shapes_mask_follows_both_layers_transforms(cell):
    from napari_blurfit.layers import mask_data

    tgt = Image(cell, name="tgt", scale=(0.107, 0.107), translate=(3.0, -2.0), units=("um", "um"))
    corners = [(20, 20), (20, 200), (200, 200), (200, 20)]  # target pixels
    drawn = Shapes([_world(tgt, corners)], shape_type="rectangle")  # drawn in the viewer (scale 1)
    mask = mask_data(drawn, tgt)
    assert mask.sum() == 180 * 180  # not the 361 pixels of the shapes layer's own grid
    assert mask[20, 20] and mask[199, 199] and not mask[19, 100] and not mask[200, 100]
    # a shapes layer with its own scale and translate, same region of the world
    scaled = Shapes([(_world(tgt, corners) - (1.0, 1.0)) / 0.5], shape_type="polygon",
                    scale=(0.5, 0.5), translate=(1.0, 1.0))
    np.testing.assert_array_equal(mask_data(scaled, tgt), mask)


def test_rotated_shapes_and_ellipses(cell):
    from napari.utils.transforms import Affine

    from napari_blurfit.layers import mask_data

    tgt = Image(cell, name="tgt", scale=(2.0, 2.0), translate=(-150.0, -150.0))
    # a square of side 200 around the world origin, turned 45 degrees by the shapes layer's affine:
    # a diamond around target pixel (75, 75) reaching 70.7 px along the axes
    square = Shapes([np.array([[-100, -100], [-100, 100], [100, 100], [100, -100]])],
                    shape_type="polygon", affine=Affine(rotate=45))
    mask = mask_data(square, tgt)
    assert int(mask.sum()) == pytest.approx(100 * 100, rel=0.01)
    assert mask[75, 75] and mask[75, 140] and not mask[115, 115]  # a diamond, not the square
    disc = Shapes([np.array([[128, 128], [100, 100]])], shape_type="ellipse", scale=(0.5, 0.5))
    area = mask_data(disc, Image(cell, name="t1")).sum()  # radius 100 data = 50 world = 50 px
    assert area == pytest.approx(np.pi * 50**2, rel=0.02)


def test_labels_mask_on_the_pixel_grid_or_refused(cell):
    from napari_blurfit.layers import mask_data

    tgt = Image(cell, name="tgt", scale=(0.5, 0.5), translate=(10.0, 10.0))
    lab = np.zeros((100, 100), int)
    lab[:50, :50] = 3
    shifted = Labels(lab, scale=(0.5, 0.5), translate=(20.0, 15.0))  # +20, +10 target pixels
    mask = mask_data(shifted, tgt)
    assert mask.sum() == 2500 and mask[20, 10] and mask[69, 59] and not mask[70, 59]
    with pytest.raises(ValueError, match="would need interpolation"):
        mask_data(Labels(lab, scale=(1.0, 1.0)), tgt)
    with pytest.raises(ValueError, match="would need interpolation"):
        mask_data(Labels(lab, scale=(0.5, 0.5), translate=(10.25, 10.0)), tgt)
    with pytest.raises(ValueError, match="selects no pixel"):
        mask_data(Labels(lab, scale=(0.5, 0.5), translate=(1000.0, 0.0)), tgt)
    with pytest.raises(ValueError, match="has no inside"):
        mask_data(Shapes([np.array([[0, 0], [50, 50]])], shape_type="line"), tgt)


def test_scaled_mask_gives_the_right_fit(cell):
    ref = Image(cell, name="ref", scale=(0.107, 0.107), translate=(5.0, 5.0))
    data = ndimage.gaussian_filter(cell, 2.0)
    data[:, 150:] = np.random.default_rng(1).random((256, 106)) * 500  # garbage right of the mask
    tgt = Image(data, name="tgt", scale=(0.107, 0.107), translate=(5.0, 5.0))
    box = Shapes([_world(tgt, [(10, 10), (10, 140), (246, 140), (246, 10)])], shape_type="polygon")
    result = run_layer_fit(ref, tgt, mask_layer=box)
    assert result.mask_pixels == 236 * 130
    assert result.fit.sigma[0] == pytest.approx(2.0, rel=1e-3)


# --- every option reaches every mode (issue 12) --------------------------------------------------
@pytest.fixture
def stack_pair(camera):
    """Three 96 x 96 frames, target = frame blurred by sigma 2, plus a garbage version of each."""
    ref = np.stack([camera[i * 30 : i * 30 + 96, 40 : 136] for i in range(3)])
    tgt = np.stack([ndimage.gaussian_filter(f, 2.0) for f in ref])
    return ref, tgt


MODE_CASES = ["whole image/volume", "current slice", "frames jointly", "per frame", "blur map"]


def _fit_sigmas(result):
    if result.frames is not None:
        return np.array([f.sigma[0] for f in result.frames])
    if result.blur_map is not None:
        return result.blur_map.sigma[..., 0].ravel()
    return np.array(result.fit.sigma[:1])


def _pair_for(mode, ref, tgt):
    two_d = mode in ("whole image/volume", "blur map")
    return (ref[1], tgt[1]) if two_d else (ref, tgt)


@pytest.mark.parametrize("mode", MODE_CASES)
def test_every_mode_honours_mask(stack_pair, mode):
    ref, tgt = _pair_for(mode, *stack_pair)
    bad = tgt.copy()
    bad[..., :, 60:] = np.random.default_rng(2).random(bad[..., :, 60:].shape) * 1000
    keep = np.zeros(ref.shape[-2:], int)
    keep[:, :52] = 1
    result = run_layer_fit(Image(ref, name="r"), Image(bad, name="t"), mask_layer=Labels(keep), mode=mode,
                           tile=48, world_point=(1, 0, 0))
    sig = _fit_sigmas(result)
    sig = sig[np.isfinite(sig)]
    assert sig.size and np.allclose(sig, 2.0, rtol=0.02)
    assert result.mask_pixels == keep.sum() * (ref.size // keep.size if mode != "current slice" else 1)


@pytest.mark.parametrize("mode", MODE_CASES)
def test_every_mode_honours_reverse(stack_pair, mode):
    ref, tgt = _pair_for(mode, *stack_pair)
    result = run_layer_fit(Image(tgt, name="r"), Image(ref, name="t"), reverse=True, mode=mode,
                           tile=48, world_point=(1, 0, 0))  # the reference is the blurred one
    sig = _fit_sigmas(result)
    assert np.all(np.isfinite(sig)) and np.allclose(sig, 2.0, rtol=0.02)
    if result.fit is not None:
        assert result.fit.reverse and result.layers[0][1]["name"] == "r fit"


@pytest.mark.parametrize("mode", MODE_CASES)
def test_every_mode_honours_exclude_border(stack_pair, mode):
    ref, tgt = _pair_for(mode, *stack_pair)
    bad = tgt.copy()
    bad[..., :6, :] = 1000.0  # a bright band along the top edge
    result = run_layer_fit(Image(ref, name="r"), Image(bad, name="t"), exclude_border=12, mode=mode,
                           tile=48, world_point=(1, 0, 0))
    sig = _fit_sigmas(result)
    sig = sig[np.isfinite(sig)]
    assert sig.size and np.allclose(sig, 2.0, rtol=0.02)


def test_axis_hint_for_time_series(time_series):
    from napari_blurfit.layers import axis_hint

    ref, tgt, _ = time_series
    assert "frames jointly" in axis_hint(tgt, "whole image/volume")
    assert axis_hint(tgt, "per frame") == ""
    vol = Image(np.zeros((40, 64, 64)), name="vol")
    assert axis_hint(vol, "whole image/volume") == ""
    labelled = Image(np.zeros((40, 64, 64)), name="movie", axis_labels=("t", "y", "x"))
    assert "labelled 't'" in axis_hint(labelled, "whole image/volume")


def test_current_slice_reports_the_plane(time_series):
    ref, tgt, _ = time_series
    one = run_layer_fit(ref, tgt, mode="current slice", world_point=(3, 0, 0))
    assert one.plane == (3,)


# --- issue 8: the kernel choice and the shift reach every mode -----------------------------------
def test_kernel_shape_labels_and_options():
    from napari_blurfit.layers import KernelShape

    assert [k.value for k in KernelShape] == ["round", "per axis", "rotated"]
    assert KernelShape.ROUND.options == {"per_axis": False, "full_covariance": False}
    assert KernelShape.PER_AXIS.options == {"per_axis": True, "full_covariance": False}
    assert KernelShape.ROTATED.options == {"per_axis": False, "full_covariance": True}


SHIFT = (0.5, -0.3)


@pytest.mark.parametrize("mode", MODE_CASES)
def test_every_mode_honours_shift(stack_pair, mode):
    from napari_blurfit._gaussian import GaussianKernel

    ref, _ = stack_pair
    moved = np.stack([GaussianKernel.from_sigma((2.0, 2.0), shift=SHIFT).apply(f) for f in ref])
    ref, tgt = _pair_for(mode, ref, moved)
    result = run_layer_fit(Image(ref, name="r"), Image(tgt, name="t"), per_axis=True, shift=True,
                           mode=mode, tile=48, world_point=(1, 0, 0))
    if result.frames is not None:
        shifts = np.array([f.shift for f in result.frames])
    elif result.blur_map is not None:
        shifts = result.blur_map.shift.reshape(-1, 2)
    else:
        shifts = np.array([result.fit.shift])
        residual = result.layers[1][0]
        assert np.abs(residual).max() < 1e-3 * np.ptp(tgt)  # the shifted kernel made the images
    np.testing.assert_allclose(shifts, np.broadcast_to(SHIFT, shifts.shape), atol=0.02)


def test_blur_map_shift_arrows_layer(cell):
    from napari_blurfit._gaussian import GaussianKernel
    from napari_blurfit._report import describe

    kernel = GaussianKernel.from_basicsr(2.5, 1.2, 0.5, shift=(0.4, -0.6))
    ref = Image(cell[:128, :128], name="c", scale=(0.1, 0.1), units=("um", "um"))
    tgt = Image(kernel.apply(cell[:128, :128]), name="c moved", scale=(0.1, 0.1), units=("um", "um"))
    out = run_layer_fit(ref, tgt, mode="blur map", tile=64, full_covariance=True, shift=True)
    (sigma_img, _, kind), (arrows, akw, akind) = out.layers
    assert (kind, akind) == ("image", "vectors") and akw["name"] == "c moved shift map"
    assert arrows.shape == (9, 2, 2) and akw["scale"] == (0.1, 0.1)
    np.testing.assert_allclose(arrows[:, 0], out.blur_map.centers.reshape(-1, 2))
    np.testing.assert_allclose(arrows[:, 1], np.broadcast_to((0.4, -0.6), (9, 2)), atol=0.02)
    assert out.arrow_scale == akw["length"] == 20  # the longest (0.72 px) drawn ~ half a 32 px step
    text = describe(out)
    principal = np.linalg.eigvalsh(out.blur_map.covariance.reshape(-1, 2, 2)) ** 0.5
    np.testing.assert_allclose(principal, np.broadcast_to((1.2, 2.5), (9, 2)), rtol=0.02)
    lo, hi = principal[:, 1].min(), principal[:, 1].max()
    assert (f"Principal sigmas per tile: major {lo:.3g} to {hi:.3g} px = {lo * 0.1:.3g} to "
            f"{hi * 0.1:.3g} µm") in text
    lo, hi = arrows[:, 1, 0].min(), arrows[:, 1, 0].max()
    assert (f"Shift per tile: y {lo:.3g} to {hi:.3g} px = {lo * 0.1:.3g} to {hi * 0.1:.3g} µm; "
            "x ") in text  # axes named as the CLI names them
    assert "The arrows of 'c moved shift map' show each tile's shift 20 times enlarged." in text


def test_shift_arrows_skip_unmeasured_tiles():
    from types import SimpleNamespace

    from napari_blurfit.layers import shift_arrows

    centers = np.array([[[16, 16], [16, 48]], [[48, 16], [48, 48]]], float)
    shift = np.array([[[0.1, 0.0], [np.nan, np.nan]], [[0.0, -2.0], [0.3, 0.3]]])
    data, factor = shift_arrows(SimpleNamespace(centers=centers, shift=shift, step=(32, 32)))
    assert data.shape == (3, 2, 2) and factor == 5  # 16 px / 2 px = 8 -> 5
    assert shift_arrows(SimpleNamespace(centers=centers, shift=shift * np.nan, step=(32, 32))) is None


@pytest.mark.gui
@pytest.mark.slow
def test_blur_map_rerun_without_shift_removes_its_old_arrows(make_napari_viewer, cell):
    from napari_blurfit._gaussian import GaussianKernel
    from napari_blurfit.layers import show_layers

    viewer = make_napari_viewer()
    kernel = GaussianKernel.from_basicsr(2.5, 1.2, 0.5, shift=(0.4, -0.6))
    ref = viewer.add_image(cell[:128, :128], name="c")
    tgt = viewer.add_image(kernel.apply(cell[:128, :128]), name="c moved")
    show_layers(viewer, run_layer_fit(ref, tgt, mode="blur map", tile=64, shift=True))
    assert "c moved shift map" in viewer.layers
    viewer.add_image(np.zeros((4, 4)), name="c moved shift map ours")  # not ours to remove
    show_layers(viewer, run_layer_fit(ref, tgt, mode="blur map", tile=64, warn=False))
    assert "c moved shift map" not in viewer.layers and "c moved blur map" in viewer.layers
    assert "c moved shift map ours" in viewer.layers
