"""The layer bridge without a viewer: real napari layers in, fit and output layer tuples out."""

import numpy as np
import pytest
from napari.layers import Image, Labels, Shapes
from scipy import ndimage

from napari_blurfit import fit_blur
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
    core = fit_blur(ref.data, tgt.data, loss="l1", gain_offset=True)
    assert run_layer_fit(ref, tgt, loss="l1", gain_offset=True).fit.sigma == core.sigma


def test_masks_from_labels_and_shapes(layers, cell):
    ref, tgt = layers
    data = tgt.data.copy()
    data[:, :100] = 0  # garbage outside the mask
    bad = Image(data, name="bad")
    lab = np.zeros(cell.shape, int)
    lab[:, 120:] = 1
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
    msg = r"reference 'ref' \(256, 256\) and target 'small' \(10, 10\) differ"
    with pytest.raises(ValueError, match=msg):
        run_layer_fit(ref, Image(np.ones((10, 10)), name="small"))
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
    joint = run_layer_fit(ref, tgt, mode="frames jointly")
    assert 1.0 < joint.fit.sigma[0] < 3.0 and joint.layers[0][0].shape == (5, 96, 96)
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
    joint, lazy = (run_layer_fit(r, t, mode="frames jointly") for r, t in
                   ((ref, tgt), (lazy_ref, lazy_tgt)))
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
