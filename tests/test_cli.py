"""The blurfit command on real files, run as a user runs it (a subprocess)."""

import argparse
import csv
import functools
import json
import re
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from drive import run_main
from finding_cases import CASES, TRUE_SHIFT, core_findings
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
    lines = out.stdout.splitlines()
    y = next(line for line in lines if line.startswith("sigma_y      = "))
    x = next(line for line in lines if line.startswith("sigma_x      = "))
    assert float(y.split()[2]) == pytest.approx(TRUE_SIGMA, rel=0.02)
    assert float(x.split()[2]) == pytest.approx(TRUE_SIGMA, rel=0.02)
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


@pytest.mark.slow
def test_bad_input_one_line_message(tmp_path, camera):
    a = tmp_path / "a.npy"
    b = tmp_path / "b.npy"
    np.save(a, camera)
    np.save(b, camera[:, :100])
    out = blurfit(a, b)
    assert out.returncode == 2
    assert out.stderr.strip() == ("blurfit: error: reference and target must have the same shape; "
                                  "got reference (256, 256) and target (256, 100); or give "
                                  "--reference-pixel-size and --target-pixel-size (each image's "
                                  "pixel size) to fit across the two grids")
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


def json_lines(text: str):
    """Many pairs' ``--json``: (the pairs' records, the joint fit's record or None)."""
    records = [json.loads(line) for line in text.splitlines()]
    joint = records.pop() if records and records[-1]["reference"] == "JOINT" else None
    return records, joint


@pytest.mark.slow
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
    assert float(joint["sigma_y"]) == pytest.approx(2.2, rel=0.01)
    assert "SKIPPED" in out.stdout and "joint fit over 6 pair(s) of 8:" in out.stdout


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


@pytest.mark.slow
def test_many_pairs_glob_and_pairs_csv_json(dataset, tmp_path):
    ref_dir, tgt_dir = dataset
    out = blurfit(f"{ref_dir}/img[0-5].tif", f"{tgt_dir}/img[0-5].tif", "--json", "--progress")
    assert out.returncode == 0, out.stderr
    pairs, joint = json_lines(out.stdout)
    assert len(pairs) == 6 and all(p["fit"] for p in pairs)
    assert joint["fit"]["sigma"] == pytest.approx([2.2, 2.2], rel=0.01)
    assert "pair" in out.stderr  # the progress bar
    listing = tmp_path / "pairs.csv"
    listing.write_text("reference,target\n" + "".join(
        f"truth/img{i}.tif,pred/img{i}.tif\n" for i in (0, 1, 9)))
    out = blurfit("--pairs", listing, "--json", "--no-joint")
    pairs, joint = json_lines(out.stdout)
    assert sorted(p["error"] is None for p in pairs) == [False, True, True]
    assert joint is None


# ------------------------------------------------ issue 12: the command line as a new user meets it



@pytest.fixture
def pair(tmp_path, camera):
    """A sharp and a blurred (sigma 2) 96 x 96 TIFF pair."""
    a = camera[60:156, 60:156]
    ref, tgt = tmp_path / "sharp.tif", tmp_path / "blurred.tif"
    tifffile.imwrite(ref, a.astype(np.float32))
    tifffile.imwrite(tgt, ndimage.gaussian_filter(a, 2.0).astype(np.float32))
    return ref, tgt


@pytest.mark.slow
def test_spatial_axes_as_written_in_help(tmp_path, camera):
    a = np.stack([camera[i * 30 : i * 30 + 96, 40:136] for i in range(3)]).astype(np.float32)
    b = ndimage.gaussian_filter(a, (0, 1.5, 1.5)).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", a)
    tifffile.imwrite(tmp_path / "b.tif", b)
    assert "--spatial-axes -2,-1" in blurfit("--help").stdout
    out = blurfit("a.tif", "b.tif", "--spatial-axes", "-2,-1", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["spatial_axes"] == [1, 2] and d["sigma"] == pytest.approx([1.5, 1.5], rel=1e-3)
    out = blurfit("a.tif", "b.tif", "--spatial-axes=-2,-1", "--json", cwd=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout)["spatial_axes"] == [1, 2]
    bad = blurfit("a.tif", "b.tif", "--spatial-axes", "y,x", cwd=tmp_path)
    assert bad.returncode == 2
    assert ("argument --spatial-axes: must be 2 or 3 comma-separated integers such as -2,-1; "
            "got 'y,x'") in bad.stderr


# each option a finding can suggest, as this command names it
FLAGS = {"gain_offset": "--gain-offset", "shift": "--shift", "per_axis": "--per-axis",
         "full_covariance": "--full-covariance", "reverse": "--reverse",
         "sigma_bounds": "--sigma-min/--sigma-max", "spatial_axes": "--spatial-axes"}
API_WORD = re.compile(r"(?<![\w-])(per_axis|gain_offset|full_covariance|sigma_bounds|exclude_border"
                      r"|huber_delta|spatial_axes)\b|(?<![\w-])\w+=(True|False)")


@pytest.mark.parametrize("case", list(CASES))
def test_every_finding_names_flags(case):
    """Each finding the core can give, as the command prints it: flags, never an option name."""
    from napari_blurfit.cli import WORDS

    finding = core_findings()[case]
    note = WORDS.finding(finding)
    assert not API_WORD.search(note), note
    for option in finding.suggestion:
        assert FLAGS[option] in note, (option, note)


def test_flags_of_suggestions_exist():
    """The flags the findings name are the command's own."""
    help_text = blurfit("--help").stdout
    for flags in FLAGS.values():
        for flag in flags.split("/"):
            assert re.search(rf"{flag}\b", help_text), flag


@pytest.mark.parametrize("text, want", [
    ("the images differ in brightness or background; consider gain_offset=True",
     "the images differ in brightness or background; consider --gain-offset"),
    ("the optimum lies on a sigma bound; the best blur may lie beyond it (widen sigma_bounds)",
     "the optimum lies on a sigma bound; the best blur may lie beyond it (widen --sigma-min/--sigma-max)"),
    ("the other direction fits sigma ~ 2 px; refit with reverse=True",
     "the other direction fits sigma ~ 2 px; refit with --reverse"),
    ("try per_axis=True or full_covariance=True", "try --per-axis or --full-covariance"),
    ("a sub-pixel shift between the images; pass shift=True",
     "a sub-pixel shift between the images; pass --shift"),
    ("pass spatial_axes=(0, 1) to fit one sigma", "pass --spatial-axes 0,1 to fit one sigma"),
    ("exclude_border=40 leaves no pixels", "--exclude-border 40 leaves no pixels"),
    ("the reverse direction is tried", "the reverse direction is tried"),
])
def test_to_flags(text, want):
    """Messages that are not findings (errors, warnings) name flags too."""
    from napari_blurfit.cli import to_flags

    assert to_flags(text) == want


def test_printed_notes_name_flags(tmp_path, pair, capsys):
    ref, tgt = pair
    dim = tmp_path / "dim.tif"
    tifffile.imwrite(dim, 0.5 * tifffile.imread(tgt) + 40)
    status, out, err = run_main(capsys, ref, dim)
    assert status == 0, err
    assert "note: a gain/offset would more than halve the L2 loss: the images differ in brightness or " \
           "background; consider --gain-offset" in out
    status, out, err = run_main(capsys, ref, tgt, "--sigma-max", "1", "--json")
    assert status == 0, err
    notes = json.loads(out)["notes"]
    assert "the optimum lies on a sigma bound; the best blur may lie beyond it " \
           "(widen --sigma-min/--sigma-max)" in notes
    assert not any("sigma_bounds" in n or "=True" in n for n in notes)


def test_misaligned_pair_printed_and_in_json(tmp_path, camera, capsys):
    """A shifted pair: the note says --shift; the JSON carries the finding's code and data."""
    ref, tgt = tmp_path / "a.tif", tmp_path / "b.tif"
    tifffile.imwrite(ref, camera.astype(np.float32))
    tifffile.imwrite(tgt, ndimage.shift(ndimage.gaussian_filter(camera, 2.0), TRUE_SHIFT).astype(np.float32))
    status, out, err = run_main(capsys, ref, tgt)
    assert status == 0, err
    assert re.search(r"note: the target looks misaligned by 1\.5\d px .*: fit with --shift\n", out)
    status, out, err = run_main(capsys, ref, tgt, "--json")
    d = json.loads(out)
    (finding,) = d["findings"]
    assert finding["code"] == "misaligned" and finding["suggestion"] == {"shift": True}
    np.testing.assert_allclose(finding["values"]["shift"], TRUE_SHIFT, atol=0.05)
    assert finding["text"] == d["notes"][0] and d["notes"][0].endswith("fit with --shift")


def test_outputs_checked_before_fitting(tmp_path, pair, dataset, capsys):
    ref, tgt = pair
    cases = [
        (("--fitted", tmp_path / "nope" / "fit.tif"),
         f"blurfit: error: --fitted {tmp_path}/nope/fit.tif: the folder {tmp_path}/nope does not exist"),
        (("--residual", tmp_path),
         f"blurfit: error: --residual {tmp_path} is a folder; give a file name"),
        (("--residual", tmp_path / "res.png"),
         f"blurfit: error: --residual {tmp_path}/res.png: cannot write .png; use .tif or .tiff or .npy"),
        (("--csv", tmp_path / "nope" / "r.csv"),
         f"blurfit: error: --csv {tmp_path}/nope/r.csv: the folder {tmp_path}/nope does not exist"),
        (("--fitted", tmp_path / "o.tif", "--residual", tmp_path / "o.tif"),
         f"blurfit: error: --fitted and --residual both name {tmp_path}/o.tif; give two files"),
        (("--fitted", tgt), f"blurfit: error: --fitted {tgt} would overwrite an input image"),
    ]
    for flags, message in cases:
        status, out, err = run_main(capsys, ref, tgt, *flags)
        assert (status, out, err.strip()) == (2, "", message)
    (tmp_path / "adir.csv").mkdir()
    status, out, err = run_main(capsys, *dataset, "--csv", tmp_path / "adir.csv")
    assert (status, out) == (2, "")  # refused before the 8 pairs were fitted
    assert err.strip() == f"blurfit: error: --csv {tmp_path}/adir.csv is a folder; give a file name"


def test_result_printed_when_writing_fails(pair):
    ref, tgt = pair
    out = blurfit(ref, tgt, "--csv", "/dev/full")  # /dev/full: every write fails with ENOSPC
    assert out.returncode == 4
    assert "sigma        = 2 px" in out.stdout
    assert out.stderr.strip() == ("blurfit: error: could not write --csv /dev/full: [Errno 28] No space "
                                  "left on device (the result is printed above)")


def test_swapped_pair_exit_3_and_no_absurd_stderr(pair, capsys):
    ref, tgt = pair
    status, out, err = run_main(capsys, tgt, ref)
    assert status == 3
    assert err.strip() == ("blurfit: the target looks sharper than the reference: the files may be "
                           "swapped; pass --reverse (or swap REFERENCE and TARGET)")
    assert "sigma        = 0 px +/- n/a (all axes: y, x)" in out
    assert "refit with --reverse" in out
    status, out, err = run_main(capsys, tgt, ref, "--json")
    d = json.loads(out)
    assert status == 3 and d["sigma"] == [0.0, 0.0] and d["sigma_stderr"] == [None, None]
    assert d["target_sharper"] is True
    status, out, err = run_main(capsys, tgt, ref, "--reverse")
    assert status == 0 and "sigma        = 2 px" in out and err == ""


def test_exit_codes_documented():
    out = blurfit("--help")
    for line in ("0  success", "1  many pairs: no pair could be fitted", "2  bad input or options",
                 "3  the target looks sharper than the reference (files swapped?): pass --reverse",
                 "4  the result was printed, but an output file could not be written"):
        assert line in out.stdout


def test_folders_matched_by_stem(tmp_path, camera, capsys):
    ref_dir, tgt_dir = tmp_path / "truth", tmp_path / "pred"
    ref_dir.mkdir()
    tgt_dir.mkdir()
    for i, name in enumerate(["camera", "crop"]):
        a = camera[i * 40 : i * 40 + 96, 50:146].astype(np.uint8)
        tifffile.imwrite(ref_dir / f"{name}.tif", a)
        iio.imwrite(tgt_dir / f"{name}.png", np.round(ndimage.gaussian_filter(a.astype(float), 1.5))
                    .astype(np.uint8))
    tifffile.imwrite(ref_dir / "lonely.tif", camera[:96, :96].astype(np.uint8))
    np.save(tgt_dir / "stray.npy", camera[:96, :96])
    (tgt_dir / "README.txt").write_text("not an image")
    status, out, err = run_main(capsys, ref_dir, tgt_dir, "--no-progress")
    assert status == 0, err
    assert "camera.png: sigma = 1.5" in out and "crop.png: sigma = 1.5" in out
    assert err == (f"blurfit: 2 file(s) have no partner of the same name and are not fitted:\n"
                   f"  {ref_dir}/lonely.tif\n  {tgt_dir}/stray.npy\n")
    tifffile.imwrite(tgt_dir / "camera.tif", camera[:96, :96].astype(np.uint8))
    status, out, err = run_main(capsys, ref_dir, tgt_dir)
    assert (status, out) == (2, "")
    assert err.strip() == (f"blurfit: error: folder {tgt_dir} has 2 files named 'camera' (camera.png, "
                           "camera.tif); files are paired by name without extension, so keep one of them")


def test_joint_count_agrees_and_skips_reported_once(dataset, tmp_path, camera, capsys):
    ref_dir, tgt_dir = dataset
    a = camera[:64, :64]
    tifffile.imwrite(ref_dir / "small.tif", a.astype(np.float32))
    tifffile.imwrite(tgt_dir / "small.tif", ndimage.gaussian_filter(a, 2.2).astype(np.float32))
    out_csv = tmp_path / "out.csv"
    status, out, err = run_main(capsys, ref_dir, tgt_dir, "--csv", out_csv, "--no-progress")
    assert status == 0, err
    joint = list(csv.DictReader(out_csv.open()))[-1]
    assert joint["reference"] == "JOINT" and joint["target"] == "6 pairs"
    assert "joint fit over 6 pair(s) of 9:" in out
    assert "note: pairs have 2 different shapes; the joint fit uses the 6 pairs of shape (96, 96)" in out
    for name in ("img7.npy", "img9.tif"):
        assert sum(name in line for line in out.splitlines()) == 1  # one SKIPPED line each
        assert name not in err
    assert out.count("SKIPPED") == 2
    status, out, err = run_main(capsys, ref_dir, tgt_dir, "--json", "--no-progress")
    _, joint = json_lines(out)
    assert joint["joint_pairs"] == 6 and not any("skipped" in n for n in joint["notes"])


@pytest.mark.parametrize("header", ["", "reference,target\n", "sharp, blurred\n", "gt,pred\n"])
def test_pairs_csv_header_recognised(dataset, tmp_path, capsys, header):
    listing = tmp_path / "pairs.csv"
    listing.write_text(header + "".join(f"truth/img{i}.tif,pred/img{i}.tif\n" for i in (0, 1)))
    status, out, err = run_main(capsys, "--pairs", listing, "--no-joint", "--json")
    assert status == 0, err
    pairs, _ = json_lines(out)
    assert [p["error"] for p in pairs] == [None, None]


def test_sigma_summary_names_axes(pair, capsys):
    ref, tgt = pair
    status, out, _ = run_main(capsys, ref, tgt)
    assert status == 0
    assert "sigma        = 2 px +/- " in out and "(all axes: y, x)" in out
    assert "(2, 2)" not in out
    status, out, _ = run_main(capsys, ref, tgt, "--per-axis")
    assert re.search(r"^sigma_y      = 2 px \+/- [\d.e-]+$", out, re.M)
    assert re.search(r"^sigma_x      = 2 px \+/- [\d.e-]+$", out, re.M)


def test_every_flag_reaches_the_core(pair, dataset, tmp_path, monkeypatch, capsys):
    """Each option flag arrives at fit_blur, for one pair and for many pairs (joint fit included)."""
    import napari_blurfit.cli as cli
    import napari_blurfit.dataset as ds
    from napari_blurfit import fit_blur

    calls = []

    @functools.wraps(fit_blur)
    def spy(reference, target, **kwargs):
        calls.append(kwargs)
        return fit_blur(reference, target, **kwargs)

    monkeypatch.setattr(cli, "fit_blur", spy)
    monkeypatch.setattr(ds, "fit_blur", spy)
    ref, tgt = pair
    mask = tmp_path / "mask.tif"
    tifffile.imwrite(mask, np.pad(np.ones((80, 80), np.uint8), 8))
    flags = ["--loss", "huber", "--per-axis", "--gain-offset", "--mask", mask, "--spatial-axes", "-2,-1",
             "--sigma-min", "0.5", "--sigma-max", "9", "--exclude-border", "3", "--reverse",
             "--huber-delta", "0.5"]
    want = dict(loss="huber", per_axis=True, gain_offset=True, spatial_axes=(-2, -1),
                sigma_bounds=(0.5, 9.0), exclude_border=3, reverse=True, huber_delta=0.5,
                full_covariance=False, shift=False)
    for inputs in ([ref, tgt], [*dataset, "--no-progress"]):
        calls.clear()
        status, out, err = run_main(capsys, *inputs, *flags)
        assert status in (0, 3), err
        assert calls
        for kwargs in calls:
            assert {k: kwargs[k] for k in want} == {**want, "spatial_axes": kwargs["spatial_axes"]}
            assert kwargs["mask"].sum() == 80 * 80
        assert [c["spatial_axes"] for c in calls[:-1]] == [(-2, -1)] * (len(calls) - 1)
    assert calls[-1]["spatial_axes"] == (1, 2)  # the joint fit: the stack adds axis 0


def test_flags_that_cannot_be_honoured_are_refused(pair, dataset, tmp_path, capsys):
    ref, tgt = pair
    status, out, err = run_main(capsys, ref, tgt, "--huber-delta", "2")
    assert (status, out) == (2, "") and "error: --huber-delta applies only with --loss huber" in err
    status, out, err = run_main(capsys, *dataset, "--fitted", tmp_path / "f.tif")
    assert (status, out) == (2, "")
    assert "error: --fitted/--residual write one pair's images; give a single pair" in err
    # honoured rather than refused: --csv for one pair, --progress for one pair
    one = tmp_path / "one.csv"
    status, out, err = run_main(capsys, ref, tgt, "--csv", one, "--progress")
    assert status == 0 and "fit: " in err and "steps" in err
    rows = list(csv.DictReader(one.open()))
    assert len(rows) == 1 and float(rows[0]["sigma_y"]) == pytest.approx(2.0, rel=1e-3)


def test_r2_printed_and_transfer_curve_in_json(pair, capsys):
    """Issue 10 through the command line: r2 and r2_linear in the summary, the transfer curve in
    JSON with --json-curves."""
    ref, tgt = pair
    status, out, err = run_main(capsys, ref, tgt)
    assert status == 0, err
    line = next(line for line in out.splitlines() if line.startswith("r2           = "))
    assert re.fullmatch(r"r2           = [\d.]+ \(r2_linear, a free linear filter: [\d.]+\)", line)
    assert float(line.split()[2]) > 0.99
    status, out, err = run_main(capsys, ref, tgt, "--json", "--json-curves")
    d = json.loads(out)
    assert 0.99 < d["r2"] <= d["r2_linear"] + 1e-9 <= 1 + 1e-9
    curve = d["transfer"]
    n = len(curve["frequency"])
    assert n > 5 and len(curve["measured"]) == len(curve["model"]) == n
    assert curve["frequency"] == sorted(curve["frequency"])
    assert all(isinstance(v, float) for v in curve["model"])


def test_warnings_printed_once_in_flag_words(pair, monkeypatch, capsys):
    import warnings

    import napari_blurfit.cli as cli
    from napari_blurfit import fit_blur

    def warning_fit(reference, target, **kwargs):
        for _ in range(2):
            warnings.warn("the blur may vary; try per_axis=True", UserWarning, stacklevel=1)
        return fit_blur(reference, target, **kwargs)

    monkeypatch.setattr(cli, "fit_blur", warning_fit)
    status, out, err = run_main(capsys, *pair)
    assert status == 0
    assert err == "blurfit: warning: the blur may vary; try --per-axis\n"


def test_full_covariance_and_shift_flags(tmp_path, camera, capsys):
    """A rotated, shifted blur through the command line: summary, JSON and CSV carry it."""
    from napari_blurfit._gaussian import GaussianKernel

    kernel = GaussianKernel.from_basicsr(2.5, 1.2, 0.5, shift=(0.4, -0.6))
    ref, tgt = tmp_path / "a.tif", tmp_path / "b.tif"
    tifffile.imwrite(ref, camera.astype(np.float32))
    tifffile.imwrite(tgt, kernel.apply(camera).astype(np.float32))
    status, out, err = run_main(capsys, ref, tgt, "--full-covariance", "--shift")
    assert status == 0, err
    principal = next(line for line in out.splitlines() if line.startswith("principal    = "))
    assert "2.5" in principal and "BasicSR sigma_x, sigma_y, theta = 2.5" in principal
    shift = next(line for line in out.splitlines() if line.startswith("shift        = "))
    assert re.search(r"y \+0\.4\d\d .*x -0\.6\d\d", shift)
    table = tmp_path / "fit.csv"
    status, out, err = run_main(capsys, ref, tgt, "--full-covariance", "--shift", "--json",
                                "--csv", table)
    d = json.loads(out)
    np.testing.assert_allclose(d["covariance"], kernel.covariance, rtol=0.01, atol=0.01)
    np.testing.assert_allclose(d["shift"], (0.4, -0.6), atol=0.02)
    assert d["angle"] == pytest.approx(np.degrees(0.5), abs=0.5)
    row = next(csv.DictReader(table.open()))
    assert float(row["cov_yx"]) == pytest.approx(kernel.covariance[0, 1], rel=0.01)
    assert float(row["shift_x"]) == pytest.approx(-0.6, abs=0.02)
    assert float(row["angle"]) == pytest.approx(np.degrees(0.5), abs=0.5)


# ------------------------------------------------ issue 23: compact JSON, progress, pipes, CSV, help, axes


def test_every_flag_has_help():
    """`blurfit --help` explains every flag and argument (argparse's own help aside)."""
    from napari_blurfit.cli import build_parser

    actions = [a for a in build_parser()._actions if not isinstance(a, argparse._HelpAction)]
    assert len(actions) > 20
    missing = [a.option_strings or a.dest for a in actions if not (a.help or "").strip()]
    assert missing == []
    help_text = blurfit("--help").stdout
    for flag in ("--sigma-min", "--sigma-max", "--exclude-border", "--loss", "--json-curves"):
        line = next(line for line in help_text.splitlines() if line.strip().startswith(flag))
        assert len(line.split()) > 3, line  # the flag, its value and words


def test_json_compact_and_curves_behind_a_flag(pair, capsys):
    ref, tgt = pair
    status, out, err = run_main(capsys, ref, tgt, "--json")
    assert status == 0, err
    d = json.loads(out)
    assert len(out.splitlines()) < 80
    assert d["reference"] == str(ref) and d["target"] == str(tgt)
    assert d["sigma"] == pytest.approx([2.0, 2.0], rel=1e-3)
    np.testing.assert_allclose(d["covariance"], np.diag([4.0, 4.0]), rtol=2e-3, atol=1e-9)
    assert d["shift"] == [0.0, 0.0] and d["gain"] == 1.0 and d["offset"] == 0.0
    assert 0.99 < d["r2"] <= 1 and d["notes"] == [] and d["findings"] == []
    assert d["options"] == {"loss": "l2", "per_axis": False, "gain_offset": False,
                            "full_covariance": False, "shift": False, "sigma_bounds": [0.0, None],
                            "exclude_border": 0, "reverse": False, "huber_delta": None, "truncate": 4.0,
                            "mask": None, "reference_noise": "auto"}
    assert not {"transfer", "profile"} & set(d) and "energy" not in out
    status, out, err = run_main(capsys, ref, tgt, "--json", "--json-curves")
    assert status == 0, err
    d = json.loads(out)
    assert set(d["transfer"]) == {"frequency", "measured", "model", "stderr", "energy"}
    assert len(d["profile"]["sigma"]) == len(d["profile"]["loss"][0]) > 5
    status, out, err = run_main(capsys, ref, tgt, "--json-curves")
    assert (status, out) == (2, "")
    assert err.endswith("error: --json-curves adds the curves to --json; pass --json too\n")


def test_many_pairs_json_compact(dataset, capsys):
    status, out, err = run_main(capsys, *dataset, "--json", "--no-progress")
    assert status == 0, err
    pairs, joint = json_lines(out)
    assert "transfer" not in joint["fit"] and all("transfer" not in p["fit"] for p in pairs if p["fit"])
    assert len(out.splitlines()) == len(pairs) + 1  # JSON Lines: one per pair, then the joint fit


def test_closed_pipe_is_quiet_and_files_still_written(pair, tmp_path):
    """``blurfit a b --json | head``: the reader goes away before the result is printed."""
    ref, tgt = pair
    table = tmp_path / "fit.csv"
    proc = subprocess.Popen([sys.executable, "-m", "napari_blurfit.cli", ref, tgt, "--json", "--csv", table],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the fit ends: printing the result meets a closed pipe
    err = proc.stderr.read()
    assert (proc.wait(), err) == (141, "")
    assert float(next(csv.DictReader(table.open()))["sigma_y"]) == pytest.approx(2.0, rel=1e-3)
    assert "141  stdout was closed early (as by `| head`)" in blurfit("--help").stdout


def stderr_bars(*args) -> list[str]:
    """The progress bars ``blurfit`` draws on stderr, as last drawn (each redraw starts with \\r)."""
    out = subprocess.run([sys.executable, "-m", "napari_blurfit.cli", *map(str, args)], capture_output=True)
    assert out.returncode == 0, out.stderr
    err = out.stderr.decode()  # not text=True, which would read each \\r as a new line
    assert err.endswith("\n")
    return [line.rsplit("\r", 1)[-1] for line in err[:-1].split("\n")]


@pytest.mark.slow
def test_progress_one_bar_per_fit(pair, dataset):
    (bar,) = stderr_bars(*pair, "--progress", "--loss", "l1")  # not one line per step
    assert re.fullmatch(r"fit: \d+ steps \[\d\d:\d\d, checking for a shift and a rotated blur\]", bar)
    pairs, joint = stderr_bars(*dataset, "--progress")
    assert pairs.startswith("pairs: 100%") and " 8/8 [" in pairs
    assert re.fullmatch(r"joint fit: \d+ steps \[\d\d:\d\d, checking for a shift and a rotated blur\]", joint)


def test_csv_columns_named_by_axis_3d(tmp_path, volume, capsys):
    v = volume[:16, :64, :64].astype(np.float32)
    ref, tgt, table = tmp_path / "v.tif", tmp_path / "vb.tif", tmp_path / "v.csv"
    tifffile.imwrite(ref, v)
    tifffile.imwrite(tgt, ndimage.gaussian_filter(v, (1.0, 1.5, 2.0)))
    status, out, err = run_main(capsys, ref, tgt, "--per-axis", "--shift", "--csv", table)
    assert status == 0, err
    assert [line.split()[0] for line in out.splitlines()[2:5]] == ["sigma_z", "sigma_y", "sigma_x"]
    row = next(csv.DictReader(table.open()))
    assert [k for k in row if k.startswith(("sigma_", "stderr_", "cov_", "shift_"))] == [
        "sigma_z", "sigma_y", "sigma_x", "stderr_z", "stderr_y", "stderr_x", "cov_zz", "cov_zy",
        "cov_zx", "cov_yy", "cov_yx", "cov_xx", "shift_z", "shift_y", "shift_x"]
    assert [float(row[f"sigma_{n}"]) for n in "zyx"] == pytest.approx([1.0, 1.5, 2.0], rel=1e-3)


def test_channels_finding_names_the_flag_and_value():
    """The core's channels note ("... pass spatial_axes") in the command's words, value included."""
    from napari_blurfit import Finding
    from napari_blurfit._finding import advise
    from napari_blurfit.cli import WORDS

    suggestion = {"spatial_axes": (-2, -1)}
    finding = Finding("channels", suggestion, {"planes": 3},
                      f"the first axis has 3 planes and looks like channels; {advise(suggestion)}")
    assert WORDS.finding(finding) == ("the first axis has 3 planes and looks like channels; "
                                      "use --spatial-axes -2,-1")
    finding = Finding("channels", {"spatial_axes": np.array([0, 1])}, {}, "a note")
    assert WORDS.finding(finding) == "a note (use --spatial-axes 0,1)"


@pytest.fixture
def channels(tmp_path, camera):
    """A 3-channel ImageJ hyperstack (axes CYX) and the same blurred with sigma 2 in y and x."""
    a = np.stack([camera[i * 40 : i * 40 + 96, 60:156] for i in range(3)]).astype(np.float32)
    ref, tgt = tmp_path / "cells.tif", tmp_path / "cells_blurred.tif"
    tifffile.imwrite(ref, a, imagej=True, metadata={"axes": "CYX"})
    tifffile.imwrite(tgt, ndimage.gaussian_filter(a, (0, 2.0, 2.0)), imagej=True, metadata={"axes": "CYX"})
    return ref, tgt


def test_tiff_channels_fitted_as_frames(channels, tmp_path, capsys):
    status, out, err = run_main(capsys, *channels, "--json")
    assert status == 0, err
    assert err == ("blurfit: reading axes CYX from the TIFF metadata: channels are fitted as frames, "
                   "one sigma over them (--spatial-axes -2,-1; pass --spatial-axes to choose)\n")
    d = json.loads(out)
    assert d["options"]["spatial_axes"] == [-2, -1] and d["spatial_axes"] == [1, 2]
    assert d["sigma"] == pytest.approx([2.0, 2.0], rel=1e-3)
    status, out, err = run_main(capsys, *channels, "--spatial-axes", "0,1,2", "--json")
    assert err == "" and json.loads(out)["spatial_axes"] == [0, 1, 2]  # the flag wins
    plain = tmp_path / "plain.npy"
    np.save(plain, tifffile.imread(channels[1]))
    status, out, err = run_main(capsys, channels[0], plain, "--json")  # one file says so: enough
    assert "reading axes CYX" in err and json.loads(out)["spatial_axes"] == [1, 2]


def test_tiff_axes_that_disagree_are_left_to_the_flag(channels, tmp_path, capsys):
    ref, tgt = channels
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.moveaxis(tifffile.imread(tgt), 0, -1).astype(np.uint8), photometric="rgb")
    status, out, err = run_main(capsys, ref, rgb)
    assert err.startswith("blurfit: the TIFF metadata of the inputs give different axes (CYX, YXS); "
                          "every axis is fitted as spatial: pass --spatial-axes to choose\n")
    assert status == 2 and "must have the same shape" in err  # (3, 96, 96) and (96, 96, 3)


def test_blur_map_mode_prints_its_findings_in_flag_words_and_writes_the_map(tmp_path, capsys):
    """`--map-tile`: sigma on tiles of the sample pair, the map's findings, the map as a TIFF."""
    status, out, err = run_main(capsys, "--sample", "--map-tile", "128", "--map", str(tmp_path / "m.tif"))
    assert status == 0, err
    lines = out.splitlines()
    assert lines[2].startswith("blur map     = 4 x 4 tiles of 128 x 128 px, sigma ")
    assert lines[3] == ("note: in 16 of 16 tiles: a gain/offset would more than halve the L2 loss: the "
                        "images differ in brightness or background; consider --gain-offset")
    written = tifffile.imread(tmp_path / "m.tif")
    assert written.shape == (2, 320, 320) and written.dtype == np.float32
    status, out, err = run_main(capsys, "--sample", "--map-tile", "128", "--gain-offset", "--json")
    result = json.loads(out)
    assert status == 0 and result["options"]["tile"] == 128 and result["blur_map"]["findings"] == []
    sigma = np.array(result["blur_map"]["sigma"], dtype=float)
    assert sigma.shape == (4, 4, 2) and np.all(np.abs(sigma - TRUE_SIGMA) < 0.06)


@pytest.mark.parametrize("flags, message", [
    (["--map", "m.tif"], "--map and --map-overlap need --map-tile"),
    (["--map-tile", "64", "--fitted", "f.tif"], "--map-tile maps one pair"),
    (["--map-tile", "64", "--spatial-axes", "-2,-1"],
     "blur_map cannot honour --spatial-axes -2,-1: a blur map is of one 2D or 3D image"),
])
def test_blur_map_mode_refuses_what_it_cannot_honour(tmp_path, capsys, flags, message):
    status, out, err = run_main(capsys, "--sample", *[f if not f.endswith(".tif") else str(tmp_path / f)
                                                      for f in flags])
    assert status == 2 and message in err and out == ""
