"""The blurfit command on real files, run as a user runs it (a subprocess)."""

import csv
import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from scipy import ndimage

from napari_blurfit.sample_data import TRUE_GAIN, TRUE_OFFSET, TRUE_SIGMA


def blurfit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "napari_blurfit.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_sample_json():
    out = blurfit("--sample", "--gain-offset", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["sigma"] == pytest.approx([TRUE_SIGMA] * 2, rel=0.01)
    assert d["gain"] == pytest.approx(TRUE_GAIN, rel=0.01)
    assert d["offset"] == pytest.approx(TRUE_OFFSET, abs=0.5)


def test_sample_text_summary():
    out = blurfit("--sample", "--gain-offset", "--loss", "l1", "--per-axis")
    assert out.returncode == 0, out.stderr
    assert "sigma        = (2.4" in out.stdout or "sigma        = (2.5" in out.stdout
    assert "loss (l1)" in out.stdout


@pytest.mark.parametrize("ext", [".tif", ".png", ".npy"])
def test_file_formats_and_outputs(tmp_path, camera, ext):
    a = camera.astype(np.uint8)
    b = np.clip(np.round(ndimage.gaussian_filter(camera, 1.6)), 0, 255).astype(np.uint8)
    ra, rb = tmp_path / f"a{ext}", tmp_path / f"b{ext}"
    if ext == ".npy":
        np.save(ra, a)
        np.save(rb, b)
    elif ext == ".png":
        iio.imwrite(ra, a)
        iio.imwrite(rb, b)
    else:
        tifffile.imwrite(ra, a)
        tifffile.imwrite(rb, b)
    fitted, resid = tmp_path / "fit.tif", tmp_path / "res.npy"
    out = blurfit(ra, rb, "--json", "--fitted", fitted, "--residual", resid)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["sigma"] == pytest.approx([1.6, 1.6], rel=0.01)
    f, r = tifffile.imread(fitted), np.load(resid)
    assert f.shape == r.shape == a.shape
    np.testing.assert_allclose(f + r, b, atol=1e-3)


def test_bad_input_one_line_message(tmp_path, camera):
    a = tmp_path / "a.npy"
    b = tmp_path / "b.npy"
    np.save(a, camera)
    np.save(b, camera[:, :100])
    out = blurfit(a, b)
    assert out.returncode == 2
    assert out.stderr.strip() == ("blurfit: error: reference and target must have the same shape; "
                                  "got reference (256, 256) and target (256, 100)")
    missing = blurfit(a, tmp_path / "nope.tif")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad_loss = blurfit(a, b, "--loss", "l3")
    assert bad_loss.returncode == 2 and "invalid choice: 'l3'" in bad_loss.stderr


@pytest.fixture
def dataset(tmp_path, camera):
    ref_dir, tgt_dir = tmp_path / "truth", tmp_path / "pred"
    ref_dir.mkdir()
    tgt_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        a = camera[i * 20 : i * 20 + 96, i * 25 : i * 25 + 96]
        b = ndimage.gaussian_filter(a, 2.2) + rng.normal(0, 1.0, a.shape)
        tifffile.imwrite(ref_dir / f"img{i}.tif", a.astype(np.float32))
        tifffile.imwrite(tgt_dir / f"img{i}.tif", b.astype(np.float32))
    (ref_dir / "img9.tif").write_text("not an image")
    (tgt_dir / "img9.tif").write_text("not an image")
    np.save(ref_dir / "img7.npy", np.zeros((96, 96)))
    np.save(tgt_dir / "img7.npy", np.ones((96, 96)))
    return ref_dir, tgt_dir


def test_many_pairs_folders_csv_output(dataset, tmp_path):
    ref_dir, tgt_dir = dataset
    out_csv = tmp_path / "out.csv"
    out = blurfit(ref_dir, tgt_dir, "--csv", out_csv, "--no-progress")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 9  # 8 pairs + joint
    bad = [r for r in rows if r["error"]]
    assert {r["reference"].rsplit("/", 1)[1] for r in bad} == {"img7.npy", "img9.tif"}
    joint = rows[-1]
    assert joint["reference"] == "JOINT" and joint["target"] == "6 pairs"
    assert float(joint["sigma_0"]) == pytest.approx(2.2, rel=0.01)
    assert "SKIPPED" in out.stdout and "joint fit over 6 pair(s)" in out.stdout


@pytest.mark.parametrize("loss", ["l2", "l1"])
def test_joint_fit_in_memory_equals_lazy_and_the_stacked_fit(dataset, loss):
    """Pairs kept from the per-pair pass or re-read lazily: the same joint fit."""
    from napari_blurfit import fit_blur
    from napari_blurfit.dataset import find_pairs, fit_pairs

    pairs = find_pairs(*dataset)
    held = fit_pairs(pairs, loss=loss)  # 6 small good pairs: within the default budget
    lazy = fit_pairs(pairs, loss=loss, held_bytes=0)
    good = [p for p in pairs if p[0].suffix == ".tif" and p[0].stem != "img9"]
    stack = [np.stack([tifffile.imread(p[k]) for p in good]) for k in (0, 1)]
    want = fit_blur(*stack, spatial_axes=(-2, -1), loss=loss, warn=False)
    assert held.joint.sigma == pytest.approx(want.sigma, rel=1e-9)
    assert lazy.joint.sigma == pytest.approx(want.sigma, rel=1e-6)
    assert lazy.joint.loss == pytest.approx(held.joint.loss, rel=1e-7)


def test_many_pairs_glob_and_pairs_csv_json(dataset, tmp_path):
    ref_dir, tgt_dir = dataset
    out = blurfit(f"{ref_dir}/img[0-5].tif", f"{tgt_dir}/img[0-5].tif", "--json", "--progress")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert len(d["pairs"]) == 6 and all(p["fit"] for p in d["pairs"])
    assert d["joint"]["sigma"] == pytest.approx([2.2, 2.2], rel=0.01)
    assert "pair" in out.stderr  # the progress bar
    listing = tmp_path / "pairs.csv"
    listing.write_text("reference,target\n" + "".join(
        f"truth/img{i}.tif,pred/img{i}.tif\n" for i in (0, 1, 9)))
    out = blurfit("--pairs", listing, "--json", "--no-joint")
    d = json.loads(out.stdout)
    assert [p["error"] is None for p in d["pairs"]] == [True, True, False]
    assert d["joint"] is None
