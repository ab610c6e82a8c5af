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
    with pytest.raises(ValueError, match=r"reference 'ref' \(256, 256\) and target 'small' \(10, 10\) differ"):
        run_layer_fit(ref, Image(np.ones((10, 10)), name="small"))
    rgb = Image(np.zeros((32, 32, 3), np.uint8), rgb=True, name="rgb")
    with pytest.raises(ValueError, match="'rgb' is RGB"):
        run_layer_fit(rgb, rgb)
    with pytest.raises(ValueError, match="target is constant"):
        run_layer_fit(ref, Image(np.ones_like(cell), name="flat"))
