"""The dock widget with layers on different grids (issue 24), in a real napari viewer under Xvfb.

The reference is the cameraman at 0.5 um/px; the target is it blurred by 2 px and block-averaged
2 x 2 (a camera with pixels twice as large), at 1 um/px. Target pixel ``j`` covers reference pixels
``2j`` and ``2j + 1``, so its centre lies half a reference pixel (0.25 um) past reference pixel
``2j``'s: the target's translate is the reference's plus 0.25 um.
"""

import json
import re

import numpy as np
import pytest
from drive import run, widget_for
from scipy import ndimage

from napari_blurfit.layers import run_layer_fit

pytestmark = [pytest.mark.gui, pytest.mark.slow]

SIGMA = 2.0  # reference px
REF = dict(scale=(0.5, 0.5), translate=(10.0, 20.0), units=("um", "um"))
BLOCKS = dict(scale=(1.0, 1.0), translate=(10.25, 20.25), units=("um", "um"))  # 2 x 2 block means
ROTATED = ("target 'tilted' is rotated or sheared; layers on different grids are fitted through "
           "their scale and translate only. Remove its rotation, shear or affine, or give both "
           "layers the same transform and shape")


def block_mean(image, k):
    """Means of ``k x k`` blocks: what a camera with ``k`` times larger pixels records."""
    h, w = (n // k * k for n in image.shape)
    return image[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))


@pytest.fixture
def grid_viewer(make_napari_viewer, camera):
    """A viewer with "ref" (256 x 256 at 0.5 um) and "blocks" (128 x 128 at 1 um, blurred by 2 px)."""
    viewer = make_napari_viewer()
    viewer.add_image(camera, name="ref", **REF)
    viewer.add_image(block_mean(ndimage.gaussian_filter(camera, SIGMA), 2), name="blocks", **BLOCKS)
    return viewer




def shown(widget) -> str:
    return widget.result_text.text().replace("\u00a0", " ")


def sigmas(text) -> tuple[float, float, float]:
    """``(world, reference px, target px)`` from the result's sigma line."""
    found = re.search(r"Blur sigma: ([\d.]+) µm = ([\d.]+) px \(reference\) = ([\d.]+) px \(target\) "
                      r"\(± [\d.e-]+ µm\)", text)
    assert found, text
    return tuple(float(v) for v in found.groups())


def placed(layer):
    return layer.data.shape, tuple(layer.scale), tuple(layer.translate)


def test_layers_on_different_grids_are_fitted_through_their_world_transforms(grid_viewer, qtbot):
    viewer = grid_viewer
    before = {layer.name: layer.data.copy() for layer in viewer.layers}
    widget = widget_for(viewer, "ref", "blocks")
    assert widget.fit_button.enabled and widget.sampling.enabled
    assert widget.status.text() == (
        "The layers lie on different grids (reference 0.5\u00a0µm/px, target 1\u00a0µm/px): the fit "
        "maps one onto the other through their scale and translate, over their overlap.")
    run(widget, qtbot)
    assert widget.status.text() == "", widget.status.text()
    fit = widget.last_result.fit
    np.testing.assert_allclose(fit.sigma, (SIGMA, SIGMA), rtol=0.02)  # in reference px
    assert fit.grids["reference"].scale == (0.5, 0.5) and fit.grids["target"].translate == (10.25, 20.25)
    assert fit.grids["target"].sampling == "area"
    target = viewer.layers["blocks"]
    for name in ("blocks fit", "blocks residual"):
        assert placed(viewer.layers[name]) == placed(target)  # overlays the target
    fitted = viewer.layers["blocks fit"].data
    inside = np.isfinite(fitted)
    assert inside.mean() > 0.9
    misfit = np.abs(viewer.layers["blocks residual"].data[inside]).mean()
    assert misfit < 0.02 * np.abs(target.data[inside] - target.data.mean()).mean()
    text = shown(widget)
    world, ref_px, tgt_px = sigmas(text)
    assert world == pytest.approx(0.5 * SIGMA, rel=0.02) and ref_px == pytest.approx(SIGMA, rel=0.02)
    assert tgt_px == pytest.approx(world, rel=0.01)  # 1 um target pixels
    assert ("Across grids: reference 0.5 µm/px, target 1 µm/px; the target's pixels taken as areas."
            in text)
    saved = json.loads(widget.result_json())
    assert saved["grids"]["target"] == {"scale": [1.0, 1.0], "translate": [10.25, 20.25], "sampling": "area"}
    assert saved["sigma_world"] == pytest.approx([0.5 * SIGMA] * 2, rel=0.02)
    for layer in ("ref", "blocks"):
        np.testing.assert_array_equal(viewer.layers[layer].data, before[layer])  # inputs untouched
    run(widget, qtbot)  # a rerun updates the outputs in place
    assert [layer.name for layer in viewer.layers] == ["ref", "blocks", "blocks fit", "blocks residual"]


def test_point_sampling_is_honoured(make_napari_viewer, qtbot, camera):
    """A decimated target (every other pixel): its pixel j is reference pixel 2j, no area."""
    viewer = make_napari_viewer()
    viewer.add_image(camera, name="ref", **REF)
    viewer.add_image(ndimage.gaussian_filter(camera, SIGMA)[::2, ::2], name="every other",
                     **{**BLOCKS, "translate": REF["translate"]})
    widget = widget_for(viewer, "ref", "every other", sampling="point")
    run(widget, qtbot)
    point = widget.last_result.fit
    np.testing.assert_allclose(point.sigma, (SIGMA, SIGMA), rtol=0.02)
    assert point.grids["target"].sampling == "point"
    assert "the target's pixels taken as points at their centres" in shown(widget)
    widget.sampling.value = "area"  # the wrong model: a footprint of 2 px adds its own blur
    run(widget, qtbot)
    assert widget.last_result.fit.sigma[0] < 0.97 * SIGMA


def test_rotated_layers_are_refused_in_words(grid_viewer, qtbot):
    viewer = grid_viewer
    tilted = viewer.add_image(viewer.layers["blocks"].data, name="tilted", rotate=15, **BLOCKS)
    widget = widget_for(viewer, "ref", "tilted")
    assert widget.status.text() == ROTATED
    assert not widget.fit_button.enabled and widget.start_fit() is None
    with pytest.raises(ValueError, match=re.escape(ROTATED)):
        run_layer_fit(viewer.layers["ref"], tilted)
    tilted.rotate, tilted.scale, tilted.translate = 15, REF["scale"], REF["translate"]
    tilted.data = viewer.layers["ref"].data.copy()
    widget.target.value = viewer.layers["blocks"]
    widget.target.value = tilted
    assert widget.status.text() == ROTATED  # on the reference's grid, but turned against it
    assert [layer.name for layer in viewer.layers] == ["ref", "blocks", "tilted"]


def test_flipped_layers_and_other_frames_are_refused_in_words(camera):
    from napari.layers import Image

    ref = Image(camera, name="ref", **REF)
    flipped = Image(camera[:128, :128], name="flipped", scale=(-1.0, 1.0))
    with pytest.raises(ValueError, match=re.escape(
            "target 'flipped' is flipped (a negative scale); layers on different grids need "
            "positive scales")):
        run_layer_fit(ref, flipped)
    movie = Image(np.stack([camera] * 3), name="movie", scale=(1.0, *REF["scale"]))
    longer = Image(np.zeros((4, 128, 128)), name="longer", scale=(1.0, *BLOCKS["scale"]))
    with pytest.raises(ValueError, match=re.escape(
            "reference 'movie' (3, 256, 256) and target 'longer' (4, 128, 128) differ in shape or "
            "place along axis 0; in 'per frame' mode their frames must be the same")):
        run_layer_fit(movie, longer, mode="per frame")


def test_a_mask_drawn_in_the_world_selects_the_targets_pixels(grid_viewer, qtbot):
    viewer = grid_viewer
    bad = viewer.layers["blocks"].data.copy()
    bad[:, 110:] = 999.0  # garbage outside the drawn rectangle
    target = viewer.add_image(bad, name="blocks bad", **BLOCKS)
    corners = np.array([target.data_to_world(p) for p in [(10, 10), (10, 100), (100, 100), (100, 10)]])
    viewer.add_shapes([corners], shape_type="rectangle", name="roi", units=REF["units"])
    widget = widget_for(viewer, "ref", "blocks bad", mask=viewer.layers["roi"])
    run(widget, qtbot)
    assert widget.last_result.mask_pixels == 90 * 90  # target pixels 10..99 on each axis
    np.testing.assert_allclose(widget.last_result.fit.sigma, (SIGMA, SIGMA), rtol=0.02)


def test_one_grid_passes_no_grids(make_napari_viewer, qtbot, camera):
    viewer = make_napari_viewer()
    viewer.add_image(camera, name="ref", **REF)
    viewer.add_image(ndimage.gaussian_filter(camera, SIGMA), name="tgt", **REF)
    widget = widget_for(viewer, "ref", "tgt")
    assert not widget.sampling.enabled and widget.status.text() == ""
    run(widget, qtbot)
    result = widget.last_result
    assert result.grids is None and result.fit.grids is None
    assert result.fit.sigma[0] == pytest.approx(SIGMA, rel=1e-3)
    assert "Blur sigma: 2 px = 1 µm (± " in shown(widget) and "Across grids" not in shown(widget)


def test_reverse_puts_the_outputs_on_the_references_grid(grid_viewer, qtbot):
    """The blurred, coarse layer as the reference: the kernel is in the target's (fine) pixels."""
    viewer = grid_viewer
    widget = widget_for(viewer, "blocks", "ref", reverse=True)
    run(widget, qtbot)
    fit = widget.last_result.fit
    np.testing.assert_allclose(fit.sigma, (SIGMA, SIGMA), rtol=0.02)  # the fine layer's px
    for name in ("blocks fit", "blocks residual"):
        assert placed(viewer.layers[name]) == placed(viewer.layers["blocks"])
    world, ref_px, tgt_px = sigmas(shown(widget))
    assert world == pytest.approx(0.5 * SIGMA, rel=0.02) and tgt_px == pytest.approx(SIGMA, rel=0.02)
    assert ref_px == pytest.approx(world, rel=0.01)
    assert "the reference's pixels taken as areas" in shown(widget)


def test_blur_map_and_frames_across_grids(make_napari_viewer, qtbot, camera):
    viewer = make_napari_viewer()
    viewer.add_image(camera, name="ref", **REF)
    viewer.add_image(block_mean(ndimage.gaussian_filter(camera, SIGMA), 2), name="blocks", **BLOCKS)
    widget = widget_for(viewer, "ref", "blocks", mode="blur map", tile=64)
    run(widget, qtbot)
    layer = viewer.layers["blocks blur map"]
    assert placed(layer) == placed(viewer.layers["blocks"])
    np.testing.assert_allclose(np.nanmedian(layer.data), SIGMA, rtol=0.02)
    assert "px values are the reference's" in shown(widget)
    frames = np.stack([camera[:128, :128], camera[128:, 128:], camera[:128, 128:]])
    blurred = np.stack([block_mean(ndimage.gaussian_filter(f, s), 2) for f, s in zip(frames, (1.5, 2, 3))])
    viewer.add_image(frames, name="movie", scale=(1.0, *REF["scale"]), translate=(0.0, *REF["translate"]),
                     units=("s", *REF["units"]))
    viewer.add_image(blurred, name="movie blocks", scale=(1.0, *BLOCKS["scale"]),
                     translate=(0.0, *BLOCKS["translate"]), units=("s", *BLOCKS["units"]))
    widget.reference.value, widget.target.value = viewer.layers["movie"], viewer.layers["movie blocks"]
    widget.mode.value = "per frame"
    run(widget, qtbot)
    np.testing.assert_allclose([f.sigma[0] for f in widget.last_result.frames], (1.5, 2, 3), rtol=0.02)
    widget.mode.value = "current slice"
    viewer.dims.set_point(0, 2)
    run(widget, qtbot)
    assert widget.last_result.fit.sigma[0] == pytest.approx(3.0, rel=0.02)
    assert placed(viewer.layers["movie blocks fit"])[0] == (64, 64)


def test_shifts_across_grids_are_drawn_in_the_maps_pixels(make_napari_viewer, qtbot, camera):
    """A target moved by 1 reference px along x: 0.5 um, half a target pixel."""
    viewer = make_napari_viewer()
    viewer.add_image(camera, name="ref", **REF)
    moved = ndimage.shift(ndimage.gaussian_filter(camera, SIGMA), (0.0, 1.0), mode="reflect")
    viewer.add_image(block_mean(moved, 2), name="moved", **BLOCKS)
    widget = widget_for(viewer, "ref", "moved", fit_shift=True)
    run(widget, qtbot)
    np.testing.assert_allclose(widget.last_result.fit.shift, (0.0, 1.0), atol=0.03)  # reference px
    found = re.search(r"Shift of the target: (\S+), (\S+) px \(reference\) = (\S+), (\S+) µm", shown(widget))
    np.testing.assert_allclose([float(v) for v in found.groups()], (0, 1, 0, 0.5), atol=0.03)
    widget.mode.value, widget.tile.value = "blur map", 64
    run(widget, qtbot)
    arrows = viewer.layers["moved shift map"]
    assert tuple(arrows.scale) == BLOCKS["scale"] and tuple(arrows.translate) == BLOCKS["translate"]
    np.testing.assert_allclose(np.median(arrows.data[:, 1], axis=0), (0.0, 0.5), atol=0.03)  # target px


def test_a_noisy_reference_is_corrected_across_grids(make_napari_viewer, qtbot):
    """The full cameraman with noise sd 12 against its blurred block means (sd 2)."""
    from skimage import data

    rng = np.random.default_rng(0)
    camera = data.camera().astype(np.float64)
    viewer = make_napari_viewer()
    viewer.add_image(camera + rng.normal(0, 12, camera.shape), name="noisy", **REF)
    blocks = block_mean(ndimage.gaussian_filter(camera, SIGMA), 2) + rng.normal(0, 2, (256, 256))
    viewer.add_image(blocks, name="blocks", **BLOCKS)
    widget = widget_for(viewer, "noisy", "blocks")
    assert widget.reference_noise.enabled and widget.reference_noise.value
    run(widget, qtbot)
    fit = widget.last_result.fit
    assert fit.sigma[0] == pytest.approx(SIGMA, rel=0.02) and fit.reference_noise_corrected
    assert fit.reference_noise == pytest.approx(12, rel=0.15)
    assert "corrected for" in shown(widget)
    widget.reference_noise.value = False  # the noise taken as blur
    run(widget, qtbot)
    assert widget.last_result.fit.sigma[0] > 1.02 * SIGMA
