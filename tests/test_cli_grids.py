"""Images on different grids from the command line and over datasets (issue 24).

Pixel sizes are read from real TIFF files that tifffile writes with ImageJ and OME metadata;
the command runs in process (``main([...])``) and once as a user runs it (a subprocess).
"""

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from drive import run_main
from scipy import ndimage
from skimage import data

from napari_blurfit._pair_grids import GridPair, grids_of_sizes, pair_grids
from napari_blurfit.dataset import fit_pairs
from napari_blurfit.grids import Grid
from napari_blurfit.io import PixelSize, read_pixel_size

SIGMA = 2.0  # reference pixels



def imagej(path, image, size_um, unit="um", spacing=None):
    """A float32 ImageJ TIFF whose pixels are ``size_um`` (y, x) in ``unit``."""
    sy, sx = np.broadcast_to(size_um, 2)
    metadata = {"unit": unit, **({"spacing": spacing} if spacing else {})}
    tifffile.imwrite(path, image.astype(np.float32), imagej=True, resolution=(1 / sx, 1 / sy),
                     metadata=metadata)
    return path


def ome(path, image, size, unit="nm", axes=None):
    """A float32 OME-TIFF whose pixels are ``size`` per axis (z, y, x or y, x) in ``unit``."""
    axes = axes or "ZYX"[-image.ndim:]
    sizes = dict(zip(axes, np.broadcast_to(size, len(axes))))
    metadata = {"axes": axes}
    for letter in "XYZ":
        if letter in sizes:
            metadata.update({f"PhysicalSize{letter}": float(sizes[letter]),
                             f"PhysicalSize{letter}Unit": unit})
    tifffile.imwrite(path, image.astype(np.float32), ome=True, metadata=metadata)
    return path


@pytest.fixture(scope="module")
def scene():
    """A real photograph (256 x 256 of the cameraman), float64."""
    return data.camera()[100:356, 128:384].astype(np.float64)


# ------------------------------------------------------------------ reading pixel sizes


def test_imagej_pixel_sizes_2d_and_3d(tmp_path):
    path = imagej(tmp_path / "a.tif", np.zeros((32, 40)), (0.05, 0.065), unit="micron")
    assert read_pixel_size(path) == PixelSize((0.05, 0.065), "um", "ImageJ metadata", "YX", "YX")
    volume = tmp_path / "v.tif"
    tifffile.imwrite(volume, np.zeros((4, 32, 40), np.float32), imagej=True,
                     resolution=(1 / 0.1, 1 / 0.1), metadata={"axes": "ZYX", "spacing": 0.3,
                                                              "unit": "\\u00B5m"})
    size = read_pixel_size(volume)
    assert size.sizes == pytest.approx((0.3, 0.1, 0.1)) and size.unit == "um" and size.axes == "ZYX"
    assert size.text() == "0.3 x 0.1 x 0.1 um (from ImageJ metadata)"


def test_ome_pixel_sizes_units_and_axes(tmp_path):
    size = read_pixel_size(ome(tmp_path / "a.ome.tif", np.zeros((4, 32, 40)), (300, 65, 65)))
    assert size.sizes == pytest.approx((300, 65, 65)) and size.unit == "nm"
    assert size.source == "OME metadata" and size.axes == "ZYX"
    assert size.in_unit("um").sizes == pytest.approx((0.3, 0.065, 0.065))
    # PhysicalSize without a unit is in micrometres (the OME default); channels are no space
    path = tmp_path / "c.ome.tif"
    tifffile.imwrite(path, np.zeros((3, 32, 40), np.float32), ome=True,
                     metadata={"axes": "CYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.2})
    size = read_pixel_size(path)
    assert (size.sizes, size.unit, size.axes, size.array_axes) == ((0.2, 0.1), "um", "YX", "CYX")
    assert size.along((-2, -1), "target") == (0.2, 0.1)
    with pytest.raises(ValueError, match=r"^the OME metadata of the target gives no pixel size "
                       r"along its C axis \(axes CYX\); give one for every spatial axis$"):
        size.along(None, "target")


def test_no_pixel_size_without_calibration(tmp_path):
    image = np.zeros((32, 40), np.float32)
    tifffile.imwrite(tmp_path / "plain.tif", image, resolution=(300, 300))  # a print resolution
    tifffile.imwrite(tmp_path / "uncalibrated.tif", image, imagej=True)
    np.save(tmp_path / "a.npy", image)
    (tmp_path / "broken.tif").write_text("not a TIFF")
    for name in ("plain.tif", "uncalibrated.tif", "a.npy", "broken.tif", "missing.tif"):
        assert read_pixel_size(tmp_path / name) is None, name


def test_unknown_unit_is_refused(tmp_path):
    path = imagej(tmp_path / "a.tif", np.zeros((8, 8)), 0.1, unit="furlong")
    with pytest.raises(ValueError, match=r"^unknown length unit 'furlong'; known: km, m, cm"):
        read_pixel_size(path)


# ------------------------------------------------------------------ a pair's grids


def test_um_and_nm_compare_in_the_reference_unit():
    reference = PixelSize((0.065, 0.065), "um", "ImageJ metadata")
    target = PixelSize((65.0, 65.0), "nm", "OME metadata")
    pair = grids_of_sizes(reference, target)
    assert pair.unit == "um" and pair.target.scale == pytest.approx((0.065, 0.065))
    assert pair.said == ("0.065 x 0.065 um (from ImageJ metadata)",
                         "65 x 65 nm (from OME metadata) = 0.065 x 0.065 um")
    assert pair_grids((64, 64), (64, 64), None, pair) == {}  # one grid: the same-grid fit
    coarse = grids_of_sizes(reference, PixelSize((130.0,), "nm", "--target-pixel-size"),
                            sampling="point")
    grids = pair_grids((64, 64), (32, 32), None, coarse)
    assert grids["target_grid"] == Grid((0.13, 0.13), (0.065, 0.065), "point")
    assert grids["reference_grid"] == Grid((0.065, 0.065), (0.0325, 0.0325), "area")


def test_sampling_goes_to_the_measured_image_and_origins_to_their_image():
    a, b = PixelSize((0.1,), "um", "flag"), PixelSize((0.2,), "um", "flag")
    pair = grids_of_sizes(a, b, sampling="point", reverse=True, origins=((1.0, 2.0), None))
    assert pair.reference == Grid((0.1,), (1.0, 2.0), "point") and pair.target.sampling == "area"
    with pytest.raises(ValueError, match=r"^target_origin needs the target's pixel size \(target_grid\)$"):
        grids_of_sizes(a, None, origins=(None, 1.0))


def test_missing_sizes_and_counts_refused_in_words():
    known = grids_of_sizes(PixelSize((0.05,), "um", "ImageJ metadata"), None)
    assert pair_grids((64, 64), (64, 64), None, known) == {}
    with pytest.raises(ValueError) as err:
        pair_grids((64, 64), (32, 32), None, known)
    assert str(err.value) == ("the reference has shape (64, 64) and the target (32, 32) but only "
                              "the reference has a pixel size (0.05 um (from ImageJ metadata)); "
                              "give target_grid (the target's pixel size) to fit across the two grids")
    with pytest.raises(ValueError, match=r"^reference and target must have the same shape; got "
                       r"reference \(64, 64\) and target \(32, 32\); or give reference_grid and "
                       r"target_grid \(each image's pixel size\) to fit across the two grids$"):
        pair_grids((64, 64), (32, 32), None, GridPair())
    three = grids_of_sizes(PixelSize((0.3, 0.1, 0.1), "um", "flag"), PixelSize((0.2,), "um", "flag"))
    with pytest.raises(ValueError, match=r"^reference_grid has 3 pixel sizes \(0.3, 0.1, 0.1\) but "
                       r"the images have 2 spatial axes; give one size or 2$"):
        pair_grids((64, 64), (32, 32), None, three)
    # frames are no spatial axes: a stack of 3 images of 64 x 64 against 3 of 32 x 32
    assert pair_grids((3, 64, 64), (3, 32, 32), (-2, -1), grids_of_sizes(
        PixelSize((0.1,), "um", "f"), PixelSize((0.2,), "um", "f")))["target_grid"].ndim == 2


# ------------------------------------------------------------------ the command, on one grid


@pytest.fixture
def same_grid(tmp_path, scene):
    """The photograph at 0.05 um (ImageJ) and blurred by SIGMA px at 50 nm (OME): one grid."""
    a = scene[64:192, 64:192]
    return (imagej(tmp_path / "sharp.tif", a, 0.05),
            ome(tmp_path / "blurred.tif", ndimage.gaussian_filter(a, SIGMA), 50.0, "nm"))


def test_sizes_said_and_world_sigma_on_one_grid(same_grid, capsys):
    status, out, err = run_main(capsys, *same_grid)
    assert status == 0, err
    assert err.splitlines() == ["blurfit: reference pixel size 0.05 x 0.05 um (from ImageJ metadata)",
                                "blurfit: target pixel size 50 x 50 nm (from OME metadata) = "
                                "0.05 x 0.05 um"]
    line = next(line for line in out.splitlines() if line.startswith("in world"))
    world, ref_px, tgt_px = (float(v) for v in
                             re.fullmatch(r"in world     = sigma (\S+) um; in reference px (\S+); "
                                          r"in target px (\S+)", line).groups())
    assert world == pytest.approx(SIGMA * 0.05, rel=0.02)
    assert ref_px == tgt_px == pytest.approx(SIGMA, rel=0.02)
    status, out, _ = run_main(capsys, *same_grid, "--json")
    d = json.loads(out)
    assert d["grids"] is None  # equal grids: the same-grid fit
    assert d["pixel_size"]["unit"] == "um"
    assert d["pixel_size"]["target"]["scale"] == pytest.approx([0.05, 0.05])
    assert d["pixel_size"]["target"]["from"] == "OME metadata"
    assert d["world"]["sigma"] == pytest.approx([SIGMA * 0.05] * 2, rel=0.02)


def test_flags_override_metadata_and_csv_records_sizes(same_grid, tmp_path, capsys):
    table = tmp_path / "fit.csv"
    status, _, err = run_main(capsys, *same_grid, "--reference-pixel-size", "0.1um",
                              "--target-pixel-size", "100nm", "--csv", table)
    assert status == 0, err
    assert err.splitlines() == ["blurfit: reference pixel size 0.1 um (from --reference-pixel-size)",
                                "blurfit: target pixel size 100 nm (from --target-pixel-size) = 0.1 um"]
    row = next(csv.DictReader(table.open()))
    assert row["unit"] == "um" and float(row["reference_scale_x"]) == 0.1
    assert float(row["target_scale_y"]) == pytest.approx(0.1)
    assert float(row["world_sigma_y"]) == pytest.approx(SIGMA * 0.1, rel=0.02)
    # a size without a unit is in the other image's unit
    status, _, err = run_main(capsys, *same_grid, "--target-pixel-size", "0.05")
    assert status == 0, err
    assert err.splitlines()[1] == ("blurfit: target pixel size 0.05 um (from --target-pixel-size, "
                                   "taken in the other image's unit)")


@pytest.mark.parametrize("flags, message", [
    (["--target-pixel-size", "-0.1"], "argument --target-pixel-size: must be one positive size or "
     "one per spatial axis, comma separated, with an optional unit (such as 0.065, 65nm or "
     "0.3,0.065,0.065um); got '-0.1'"),
    (["--reference-pixel-size", "0.1,abc"], "argument --reference-pixel-size: must be one positive "
     "size"),
    (["--reference-pixel-size", "2furlong"], "argument --reference-pixel-size: unknown length unit "
     "'furlong'"),
    (["--target-origin", "x"], "argument --target-origin: must be one number or one per spatial "
     "axis, comma separated, in the unit of the image's pixel size (such as -1.5,2.25); got 'x'"),
    (["--target-sampling", "mean"], "argument --target-sampling: invalid choice: 'mean'"),
])
def test_bad_grid_flags_refused(same_grid, capsys, flags, message):
    status, out, err = run_main(capsys, *same_grid, *flags)
    assert status == 2 and out == ""
    assert err.splitlines()[-1].startswith(f"blurfit: error: {message}"), err


def test_grid_combinations_that_cannot_work_refused(tmp_path, scene, capsys):
    sharp = imagej(tmp_path / "sharp.tif", scene[:128, :128], 0.05)
    plain = tmp_path / "coarse.npy"
    np.save(plain, scene[:64, :64])
    cases = [
        ([sharp, plain], "blurfit: error: the reference has shape (128, 128) and the target (64, 64) "
         "but only the reference has a pixel size (0.05 x 0.05 um (from ImageJ metadata)); give "
         "--target-pixel-size (the target's pixel size) to fit across the two grids"),
        ([plain, plain, "--target-origin", "-1.5,2"], "blurfit: error: --target-origin needs the "
         "target's pixel size (--target-pixel-size)"),
        ([sharp, plain, "--target-pixel-size", "0.1,0.1,0.1"], "blurfit: error: --target-pixel-size "
         "has 3 pixel sizes (0.1, 0.1, 0.1) but the images have 2 spatial axes; give one size or 2"),
    ]
    for args, message in cases:
        status, out, err = run_main(capsys, *args)
        assert (status, out) == (2, ""), err
        assert err.splitlines()[-1] == message


def test_grid_flags_have_help():
    from napari_blurfit.cli import build_parser

    actions = {o: a for a in build_parser()._actions for o in a.option_strings}
    for flag in ("--reference-pixel-size", "--target-pixel-size", "--target-sampling",
                 "--reference-origin", "--target-origin"):
        assert len(actions[flag].help.split()) > 10, flag


# ------------------------------------------------------------------ datasets


def test_dataset_pairs_use_their_metadata_and_bad_pairs_are_skipped(tmp_path, scene):
    pairs = []
    for i, size_nm in enumerate((50.0, 50.0, 80.0)):
        a = scene[32 * i : 32 * i + 96, 40:136]
        pairs.append((imagej(tmp_path / f"a{i}.tif", a, size_nm / 1000),
                      ome(tmp_path / f"b{i}.tif", ndimage.gaussian_filter(a, SIGMA), size_nm)))
    np.save(tmp_path / "small.npy", scene[:48, :48])
    pairs.append((pairs[0][0], tmp_path / "small.npy"))  # shapes differ, no target size: skipped
    result = fit_pairs(pairs, reference_grid="metadata", target_grid="metadata")
    assert [r.error is None for r in result.pairs] == [True, True, True, False]
    assert result.pairs[3].error == (
        "ValueError: the reference has shape (96, 96) and the target (48, 48) but only the "
        "reference has a pixel size (0.05 x 0.05 um (from ImageJ metadata)); give target_grid "
        "(the target's pixel size) to fit across the two grids")
    for r, size_um in zip(result.pairs[:3], (0.05, 0.05, 0.08)):
        assert r.grids.unit == "um" and r.grids.target.scale == pytest.approx((size_um,) * 2)
        assert r.fit.sigma[0] == pytest.approx(SIGMA, rel=0.02)
    assert result.joint.sigma[0] == pytest.approx(SIGMA, rel=0.02)


def test_dataset_in_memory_with_one_grid_for_all_pairs(scene):
    """Arrays with `Grid` objects: every pair fitted across its grids, and jointly."""
    pairs = []
    for i in range(3):
        a = scene[24 * i : 24 * i + 96, 50:146]
        pairs.append((a, block_mean(ndimage.gaussian_filter(a, SIGMA), 2)))
    fine, coarse = Grid(0.05, 0.025), Grid(0.1, 0.05)
    result = fit_pairs(pairs, reference_grid=fine, target_grid=coarse)
    for r in result.pairs:
        assert r.fit.grids == {"reference": Grid((0.05, 0.05), (0.025, 0.025)),
                               "target": Grid((0.1, 0.1), (0.05, 0.05))}
        assert r.fit.sigma[0] == pytest.approx(SIGMA, rel=0.02)
    assert result.joint.grids == result.pairs[0].fit.grids and result.n_joint == 3
    assert result.joint.sigma[0] == pytest.approx(SIGMA, rel=0.02)


def test_dataset_grid_options_checked(tmp_path, scene):
    pairs = [(scene[:32, :32], scene[:32, :32])] * 2
    with pytest.raises(ValueError, match=r"^reference_grid lists 3 grids for 2 pairs; give one for "
                       r"every pair, or one for all$"):
        fit_pairs(pairs, reference_grid=[Grid(1.0)] * 3, target_grid=Grid(1.0))
    with pytest.raises(ValueError, match=r"^target_sampling, target_origin applies to grids made "
                       r"from pixel sizes; give reference_grid and target_grid \(e.g. 'metadata'\)$"):
        fit_pairs(pairs, target_sampling="point", target_origin=1.0)
    with pytest.raises(ValueError, match=r"^target_sampling must be 'area' or 'point', got 'mean'$"):
        fit_pairs(pairs, reference_grid="metadata", target_sampling="mean")
    bad = fit_pairs(pairs, reference_grid="metadata", target_grid="exif", joint=False)
    assert [r.error for r in bad.pairs] == ["ValueError: target_grid may be 'metadata' (each "
                                            "file's pixel size), got 'exif'"] * 2


def test_dataset_command_reports_sizes_and_records_them(tmp_path, scene, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "out").mkdir()
    for i in range(2):
        a = scene[40 * i : 40 * i + 96, 60:156]
        imagej(tmp_path / "gt" / f"p{i}.tif", a, 0.05)
        imagej(tmp_path / "out" / f"p{i}.tif", ndimage.gaussian_filter(a, SIGMA), 0.05)
    table = tmp_path / "fit.csv"
    status, out, err = run_main(capsys, tmp_path / "gt", tmp_path / "out", "--csv", table, "--json")
    assert status == 0, err
    assert ("blurfit: pixel sizes of 2 pair(s): reference 0.05 x 0.05 um (from ImageJ metadata); "
            "target 0.05 x 0.05 um (from ImageJ metadata)") in err.splitlines()
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["pixel_size"]["reference"]["from"] == "ImageJ metadata"
    assert records[0]["world"]["sigma"] == pytest.approx([SIGMA * 0.05] * 2, rel=0.02)
    rows = list(csv.DictReader(table.open()))
    assert [r["unit"] for r in rows] == ["um", "um", ""]  # the joint fit's row last
    assert float(rows[1]["world_sigma_x"]) == pytest.approx(SIGMA * 0.05, rel=0.02)


# ------------------------------------------------------------------ across grids


def block_mean(image, factor):
    """The mean over ``factor`` x ``factor`` blocks: a camera with pixels ``factor`` times wider."""
    h, w = (n // factor * factor for n in image.shape)
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


@pytest.fixture
def across(tmp_path, scene):
    """The photograph at 0.05 um/px (ImageJ) and, blurred by SIGMA px, 2 x 2 block-averaged with
    0.2% noise at 100 nm/px (OME): one field of view on two grids."""
    noise = np.random.default_rng(24).normal(0, 0.002 * np.ptp(scene), (128, 128))
    target = block_mean(ndimage.gaussian_filter(scene, SIGMA), 2) + noise
    return (imagej(tmp_path / "fine.tif", scene, 0.05),
            ome(tmp_path / "coarse.ome.tif", target, 100.0, "nm"))


GRIDS = {"reference": {"scale": [0.05, 0.05], "translate": [0.025, 0.025], "sampling": "area"},
         "target": {"scale": [0.1, 0.1], "translate": [0.05, 0.05], "sampling": "area"}}


def test_block_averaged_target_fitted_across_grids(across, tmp_path, capsys):
    fitted, residual = tmp_path / "fitted.tif", tmp_path / "residual.npy"
    status, out, err = run_main(capsys, *across, "--fitted", fitted, "--residual", residual)
    assert status == 0, err
    assert err.splitlines() == ["blurfit: reference pixel size 0.05 x 0.05 um (from ImageJ metadata)",
                                "blurfit: target pixel size 100 x 100 nm (from OME metadata) = "
                                "0.1 x 0.1 um"]
    sigma = float(re.search(r"^sigma        = (\S+) px", out, re.M)[1])
    assert sigma == pytest.approx(SIGMA, rel=0.02)
    world, ref_px, tgt_px = (float(v) for v in re.search(
        r"^in world     = sigma (\S+) um; in reference px (\S+); in target px (\S+)$", out, re.M).groups())
    assert (world, ref_px, tgt_px) == pytest.approx((0.1, SIGMA, 1.0), rel=0.02)
    assert tifffile.imread(fitted).shape == (128, 128)  # on the target's grid
    target = tifffile.imread(across[1])
    assert np.std(np.load(residual)) < 0.01 * np.std(target)
    status, out, err = run_main(capsys, *across, "--json", "--per-axis")
    d = json.loads(out)
    assert d["grids"] == GRIDS and d["options"]["target_grid"] == GRIDS["target"]
    assert d["sigma"] == pytest.approx([SIGMA] * 2, rel=0.02)
    assert d["world"]["sigma"] == pytest.approx([0.1, 0.1], rel=0.02)
    assert d["world"]["sigma_target_px"] == pytest.approx([1.0, 1.0], rel=0.02)


def test_across_grids_as_a_user_runs_it(across):
    run = subprocess.run([sys.executable, "-m", "napari_blurfit.cli", *map(str, across), "--json"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    d = json.loads(run.stdout)
    assert d["grids"] == GRIDS
    assert d["sigma"] == pytest.approx([SIGMA] * 2, rel=0.02)
    assert "blurfit: target pixel size 100 x 100 nm (from OME metadata) = 0.1 x 0.1 um" in run.stderr


def test_partial_field_of_view_placed_by_its_origin(tmp_path, scene, capsys):
    """The target sees rows 40..199 and columns 60..219 of the reference, at twice the pixel size."""
    target = block_mean(ndimage.gaussian_filter(scene, SIGMA)[40:200, 60:220], 2)
    coarse = imagej(tmp_path / "part.tif", target, 0.1)
    fine = imagej(tmp_path / "fine.tif", scene, 0.05)
    # pixel 0 of the target covers reference rows 40, 41: its centre is at 41 * 0.05 = 2.05 um
    status, out, err = run_main(capsys, fine, coarse, "--target-origin", "2.05,3.05", "--json")
    assert status == 0, err
    d = json.loads(out)
    assert d["grids"]["target"]["translate"] == pytest.approx([2.05, 3.05])
    assert d["sigma"] == pytest.approx([SIGMA] * 2, rel=0.02)
    # at the default origin (the corners together) the same target is misplaced: no blur explains
    # it, and the wide kernel the fit reaches for does not fit in the overlap
    status, out, err = run_main(capsys, fine, coarse, "--json")
    assert (status, out) == (2, "")
    assert err.splitlines()[-1].startswith("blurfit: error: the grids overlap by only 80 target pixels")


def test_finer_target_refused_then_fitted_with_reverse(across, capsys):
    fine, coarse = across
    status, out, err = run_main(capsys, coarse, fine)
    assert (status, out) == (2, "")
    assert err.splitlines()[-1].startswith("blurfit: error: the target's pixels are finer than the "
                                           "reference's"), err
    assert "--reverse" in err.splitlines()[-1]
    status, out, err = run_main(capsys, coarse, fine, "--reverse", "--json")
    assert status == 0, err
    d = json.loads(out)
    assert d["sigma"] == pytest.approx([SIGMA] * 2, rel=0.02)  # in the fine image's pixels
    assert d["world"]["unit"] == "nm"  # the reference's (the coarse OME file's) unit
    assert d["world"]["sigma"] == pytest.approx([100.0, 100.0], rel=0.02)
    assert d["world"]["sigma_reference_px"] == pytest.approx([1.0, 1.0], rel=0.02)


def test_blur_map_across_grids(across, tmp_path, capsys):
    status, out, err = run_main(capsys, *across, "--map-tile", "64", "--json")
    assert status == 0, err
    d = json.loads(out)
    assert d["pixel_size"]["target"]["scale"] == [0.1, 0.1]
    sigma = np.array(d["blur_map"]["sigma"], dtype=float)
    assert np.nanmedian(sigma) == pytest.approx(SIGMA, rel=0.03)


def test_dataset_across_grids_joint_fit_over_one_grid(tmp_path, scene, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "lr").mkdir()
    for i, factor in enumerate((2, 2, 2, 3)):
        a = scene[16 * i : 16 * i + 192, 32:224]
        imagej(tmp_path / "gt" / f"p{i}.tif", a, 0.05)
        imagej(tmp_path / "lr" / f"p{i}.tif", block_mean(ndimage.gaussian_filter(a, SIGMA), factor),
               0.05 * factor)
    table = tmp_path / "fit.csv"
    status, out, err = run_main(capsys, tmp_path / "gt", tmp_path / "lr", "--csv", table)
    assert status == 0, err
    rows = list(csv.DictReader(table.open()))
    assert [float(r["target_scale_x"] or "nan") for r in rows[:4]] == pytest.approx([0.1, 0.1, 0.1, 0.15])
    for row in rows:
        assert float(row["sigma_x"]) == pytest.approx(SIGMA, rel=0.02), row["reference"]
    assert ("note: pairs are on 2 different grids (pixel sizes or shapes) and one sigma needs one: "
            "the joint fit uses the 3 pairs of shapes (192, 192) and (96, 96) with reference pixel "
            "size 0.05 x 0.05 and target pixel size 0.1 x 0.1") in out
    assert "joint fit over 3 pair(s) of 4:" in out


def test_anisotropic_volume_sizes_per_axis_from_imagej(tmp_path, capsys):
    """z from the ImageJ description's spacing, y and x from the resolution tags; 2x in each."""
    moon = data.moon().astype(np.float64)
    volume = np.stack([moon[4 * i : 4 * i + 96, 100 + 2 * i : 196 + 2 * i] for i in range(24)])
    blurred = ndimage.gaussian_filter(volume, (1.0, SIGMA, SIGMA))
    coarse = blurred.reshape(12, 2, 48, 2, 48, 2).mean(axis=(1, 3, 5))
    paths = []
    for name, image, xy, z in (("fine.tif", volume, 0.1, 0.2), ("coarse.tif", coarse, 0.2, 0.4)):
        tifffile.imwrite(tmp_path / name, image.astype(np.float32), imagej=True,
                         resolution=(1 / xy, 1 / xy), metadata={"axes": "ZYX", "spacing": z, "unit": "um"})
        paths.append(tmp_path / name)
    status, out, err = run_main(capsys, *paths, "--per-axis", "--json")
    assert status == 0, err
    d = json.loads(out)
    assert d["grids"]["reference"]["scale"] == [0.2, 0.1, 0.1]
    assert d["sigma"] == pytest.approx([1.0, SIGMA, SIGMA], rel=0.01)
    assert d["world"]["sigma"] == pytest.approx([0.2, 0.2, 0.2], rel=0.01)
    assert d["world"]["sigma_target_px"] == pytest.approx([0.5, 1.0, 1.0], rel=0.01)
    status, out, err = run_main(capsys, *paths)  # one sigma in reference px: not round in um
    line = next(line for line in out.splitlines() if line.startswith("in world"))
    assert line.startswith("in world     = sigma_z, sigma_y, sigma_x ")


def test_decimated_target_point_sampling(tmp_path, scene, capsys):
    """Every second pixel of the blurred image: point samples at the reference's own centres."""
    fine = imagej(tmp_path / "fine.tif", scene, 0.05)
    coarse = imagej(tmp_path / "decimated.tif", ndimage.gaussian_filter(scene, SIGMA)[::2, ::2], 0.1)
    # pixel 0 of the decimated image is the reference's pixel 0, centred at 0.025 um
    status, out, err = run_main(capsys, fine, coarse, "--target-sampling", "point",
                                "--target-origin", "0.025", "--json")
    assert status == 0, err
    d = json.loads(out)
    assert d["grids"]["target"] == {"scale": [0.1, 0.1], "translate": [0.025, 0.025], "sampling": "point"}
    assert d["sigma"] == pytest.approx([SIGMA] * 2, rel=0.01)
