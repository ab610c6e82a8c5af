"""Pairing files and fitting datasets (`napari_blurfit.dataset`) on real files."""

import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from napari_blurfit.dataset import fit_pairs, match_pairs, read_pairs_csv


def _write(path, image):
    if path.suffix == ".npy":
        np.save(path, image)
    else:
        tifffile.imwrite(path, np.asarray(image, np.float32))


@pytest.fixture
def folders(tmp_path, camera):
    ref, tgt = tmp_path / "ref", tmp_path / "tgt"
    ref.mkdir()
    tgt.mkdir()
    for i, (a_name, b_name) in enumerate([("a.tif", "a.npy"), ("b.tif", "b.tif"), ("c.npy", "c.tiff")]):
        a = camera[i * 30 : i * 30 + 64, 40:104]
        _write(ref / a_name, a)
        _write(tgt / b_name, ndimage.gaussian_filter(a, 1.8))
    return ref, tgt


def test_folders_pair_by_stem_and_report_the_rest(folders):
    ref, tgt = folders
    _write(ref / "only_ref.tif", np.ones((4, 4)))
    _write(tgt / "only_tgt.npy", np.ones((4, 4)))
    (tgt / "notes.txt").write_text("ignored: not an image")
    (ref / ".hidden.tif").write_text("ignored: hidden")
    match = match_pairs(str(ref), str(tgt))
    assert [(p.name, q.name) for p, q in match.pairs] == [("a.tif", "a.npy"), ("b.tif", "b.tif"),
                                                           ("c.npy", "c.tiff")]
    assert match.unmatched == [ref / "only_ref.tif", tgt / "only_tgt.npy"]


def test_ambiguous_stem_refused(folders):
    ref, tgt = folders
    _write(ref / "a.npy", np.ones((4, 4)))
    with pytest.raises(ValueError, match=r"^folder .*/ref has 2 files named 'a' \(a.npy, a.tif\); files "
                                         r"are paired by name without extension, so keep one of them$"):
        match_pairs(str(ref), str(tgt))


def test_folder_and_file_refused(folders):
    ref, tgt = folders
    with pytest.raises(ValueError, match="is a folder but .* is not; give two files or two folders"):
        match_pairs(str(ref), str(tgt / "b.tif"))


def test_globs_pair_by_stem_or_sorted_order(folders, tmp_path):
    ref, tgt = folders
    match = match_pairs(f"{ref}/*.tif", f"{tgt}/*")
    assert [(p.name, q.name) for p, q in match.pairs] == [("a.tif", "a.npy"), ("b.tif", "b.tif")]
    assert match.unmatched == [tgt / "c.tiff"]
    other = tmp_path / "other"
    other.mkdir()
    for name in ("x1.tif", "x2.tif"):
        _write(other / name, np.ones((4, 4)))
    match = match_pairs(f"{ref}/*.tif", f"{other}/*.tif")  # no stem in common: sorted order
    assert [(p.name, q.name) for p, q in match.pairs] == [("a.tif", "x1.tif"), ("b.tif", "x2.tif")]


@pytest.mark.parametrize("header", ["", "reference,target\n", "Sharp , Blurred\n", "input,output,comment\n"])
def test_pairs_csv_header_detected(folders, tmp_path, header):
    listing = tmp_path / "list.csv"
    listing.write_text(header + "ref/a.tif,tgt/a.npy\n\nref/b.tif,tgt/b.tif\n")
    pairs = read_pairs_csv(listing)
    assert pairs == [(tmp_path / "ref/a.tif", tmp_path / "tgt/a.npy"),
                     (tmp_path / "ref/b.tif", tmp_path / "tgt/b.tif")]


def test_pairs_csv_first_row_of_missing_files_is_data(tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("gone/a.tif,gone/b.tif\n")
    assert read_pairs_csv(listing) == [(tmp_path / "gone/a.tif", tmp_path / "gone/b.tif")]
    listing.write_text("reference,target\nref/a.tif\n")
    with pytest.raises(ValueError, match=r"line 2 needs two columns \(reference, target\)"):
        read_pairs_csv(listing)


def test_fit_pairs_refuses_options_it_cannot_honour(folders):
    pairs = match_pairs(*map(str, folders)).pairs
    with pytest.raises(TypeError, match=r"fit_pairs got unknown option\(s\) per_axes; it takes progress"):
        fit_pairs(pairs, per_axes=True)
    with pytest.raises(ValueError, match="loss must be one of 'l2', 'l1', 'huber'; got 'l3'"):
        fit_pairs(pairs, loss="l3")


def test_fit_pairs_counts_and_notes(folders, tmp_path, camera):
    ref, tgt = folders
    a = camera[:48, :48]
    _write(ref / "d.tif", a)
    _write(tgt / "d.tif", ndimage.gaussian_filter(a, 1.8))
    (ref / "e.tif").write_text("broken")
    (tgt / "e.tif").write_text("broken")
    result = fit_pairs(match_pairs(str(ref), str(tgt)).pairs)
    assert result.n_failed == 1 and result.n_joint == 3
    assert result.notes == ["pairs have 2 different shapes; the joint fit uses the 3 pairs of shape (64, 64)"]
    assert result.joint.sigma == pytest.approx((1.8, 1.8), rel=1e-3)


# ------------------------------------------------ issue 23: a joint fit says when one sigma does not fit all


def _pairs(tmp_path, camera, sigmas, name):
    """Real TIFF pairs: camera crops blurred with ``sigmas``, plus noise of 0.5% of the range."""
    ref, tgt = tmp_path / name / "ref", tmp_path / name / "tgt"
    ref.mkdir(parents=True)
    tgt.mkdir()
    rng = np.random.default_rng(3)
    for i, sigma in enumerate(sigmas):
        a = camera[i * 18 : i * 18 + 128, i * 16 : i * 16 + 128]
        b = ndimage.gaussian_filter(a, sigma) + rng.normal(0, 0.005 * 255, a.shape)
        _write(ref / f"p{i}.tif", a)
        _write(tgt / f"p{i}.tif", b)
    return ref, tgt


SPREAD = np.linspace(1.0, 2.2, 8)


def test_joint_fit_names_the_spread_of_the_pairs(tmp_path, camera, capsys):
    from napari_blurfit.cli import main

    ref, tgt = _pairs(tmp_path, camera, SPREAD, "spread")
    result = fit_pairs(match_pairs(str(ref), str(tgt)).pairs)
    own = np.array([p.fit.sigma[0] for p in result.pairs])
    np.testing.assert_allclose(own, SPREAD, atol=0.02)
    (finding,) = [f for f in result.joint.findings if f.code == "joint_spread"]
    assert finding.values["sigma_range"] == pytest.approx((1.0, 2.2), abs=0.05)
    assert finding.values["n"] == 8 and finding.suggestion == {}
    spread = own.std(ddof=1)
    assert finding.values["spread"][0] == pytest.approx(spread, rel=1e-9)
    assert min(result.joint.sigma_stderr) >= 0.9 * spread / np.sqrt(8)
    assert result.notes == [finding.text] and finding.text in result.joint.notes
    assert finding.text.startswith("one sigma does not describe these pairs: their own sigmas run from 1")

    assert main([str(ref), str(tgt), "--no-progress"]) == 0
    out = capsys.readouterr().out
    joint = out[out.index("joint fit over 8 pair(s):"):]
    assert f"\nnote: {finding.text}\n" in joint and out.count(finding.text) == 1
    se = result.joint.sigma_stderr[0]
    assert f"sigma        = {result.joint.sigma[0]:.4g} px +/- {se:.2g} (all axes: y, x)" in joint
    assert main([str(ref), str(tgt), "--no-progress", "--json"]) == 0
    joint = json.loads(capsys.readouterr().out.splitlines()[-1])  # JSON Lines: the joint fit last
    assert joint["reference"] == "JOINT"
    assert [f["code"] for f in joint["fit"]["findings"]] == ["joint_spread"]
    assert joint["fit"]["sigma_stderr"][0] == pytest.approx(se) and joint["notes"] == [finding.text]


def test_one_common_sigma_gives_no_spread_finding(tmp_path, camera):
    ref, tgt = _pairs(tmp_path, camera, [1.5] * 8, "same")
    result = fit_pairs(match_pairs(str(ref), str(tgt)).pairs)
    assert result.joint.sigma == pytest.approx((1.5, 1.5), rel=2e-3)
    assert [f.code for f in result.joint.findings] == [] and result.notes == []
    assert result.joint.sigma_stderr[0] < 0.01
