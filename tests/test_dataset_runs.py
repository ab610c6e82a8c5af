"""Datasets of many pairs run for real: streamed rows, a killed run resumed, a dask cluster.

Real camera crops written as TIFF files; real subprocesses killed with SIGKILL; a real
`LocalCluster` of worker processes, one of them killed mid-run.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from test_cli import run_main

from napari_blurfit.dataset import EarlierFit, find_pairs, fit_pairs


def _dataset(root, camera, n: int, size: int = 96):
    """``n`` real pairs: camera crops blurred with sigmas from 1.2 to 2.0 px, plus noise."""
    ref, tgt = root / "truth", root / "pred"
    ref.mkdir(parents=True)
    tgt.mkdir()
    rng = np.random.default_rng(5)
    for i, sigma in enumerate(np.linspace(1.2, 2.0, n)):
        y, x = (7 * i) % (256 - size), (11 * i) % (256 - size)
        a = camera[y : y + size, x : x + size]
        b = ndimage.gaussian_filter(a, sigma) + rng.normal(0, 1.0, a.shape)
        tifffile.imwrite(ref / f"p{i:03d}.tif", a.astype(np.float32))
        tifffile.imwrite(tgt / f"p{i:03d}.tif", b.astype(np.float32))
    return ref, tgt


def _add_bad_pairs(ref, tgt, camera):
    """A corrupt file, a missing partner (listed in a pairs CSV) and a shape mismatch."""
    (ref / "corrupt.tif").write_bytes(b"not an image: a download cut short")
    tifffile.imwrite(tgt / "corrupt.tif", camera[:96, :96].astype(np.float32))
    tifffile.imwrite(ref / "shapes.tif", camera[:96, :96].astype(np.float32))
    tifffile.imwrite(tgt / "shapes.tif", camera[:80, :96].astype(np.float32))
    return [(ref / "corrupt.tif", tgt / "corrupt.tif"), (ref / "gone.tif", tgt / "p000.tif"),
            (ref / "shapes.tif", tgt / "shapes.tif")]


def _rows(path):
    """The CSV's rows, checked whole (no missing or extra cells)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        assert None not in row and None not in row.values(), row
    return rows


def _by_pair(rows):
    return {(r["reference"], r["target"]): r for r in rows if r["reference"] != "JOINT"}


# ------------------------------------------------ in process: streaming, resume, refusals


def test_on_pair_streams_and_earlier_pairs_are_not_refitted(tmp_path, camera):
    pairs = find_pairs(*_dataset(tmp_path, camera, 8))
    whole = fit_pairs(pairs, client=False)
    seen = []
    earlier = {i: EarlierFit(whole.pairs[i].fit.sigma, whole.pairs[i].fit.sigma_stderr) for i in (0, 5)}
    part = fit_pairs(pairs, client=False, earlier=earlier, on_pair=lambda i, r: seen.append((i, r.fit.sigma)))
    assert [i for i, _ in seen] == [1, 2, 3, 4, 6, 7]
    assert [s for _, s in seen] == [whole.pairs[i].fit.sigma for i, _ in seen]
    assert part.pairs[0].fit is None and part.pairs[0].earlier == earlier[0] and part.n_failed == 0
    assert part.joint.sigma == pytest.approx(whole.joint.sigma, rel=1e-9)
    assert part.joint.sigma_stderr == pytest.approx(whole.joint.sigma_stderr, rel=1e-9)
    assert part.n_joint == whole.n_joint == 8 and part.notes == whole.notes
    with pytest.raises(ValueError, match=r"earlier names pair\(s\) \[8\] but pairs has 8 \(indexes 0 to 7\)"):
        fit_pairs(pairs, earlier={8: earlier[0]})
    with pytest.raises(TypeError, match="earlier must map pair indexes to EarlierFit, got tuple"):
        fit_pairs(pairs, earlier={0: (1.0, 1.0)})


def test_bad_pairs_reported_once_and_the_batch_finishes(tmp_path, camera, capsys):
    ref, tgt = _dataset(tmp_path, camera, 4)
    bad = _add_bad_pairs(ref, tgt, camera)
    listing = tmp_path / "pairs.csv"
    listing.write_text("".join(f"{a},{b}\n" for a, b in find_pairs(ref, tgt) + bad[1:2]))
    table = tmp_path / "out.csv"
    status, out, err = run_main(capsys, "--pairs", listing, "--csv", table, "--no-progress")
    assert status == 0, err
    rows = _by_pair(_rows(table))
    errors = {a.name: rows[(str(a), str(b))]["error"] for a, b in bad}
    assert errors["corrupt.tif"].startswith(f"ValueError: cannot read {ref / 'corrupt.tif'}")
    assert errors["gone.tif"] == f"FileNotFoundError: no such file: {ref / 'gone.tif'}"
    assert errors["shapes.tif"].startswith("ValueError: ") and "(80, 96)" in errors["shapes.tif"]
    assert out.count("SKIPPED") == 3 and "joint fit over 4 pair(s) of 7:" in out
    for a, b in bad:
        assert sum(str(b) in line for line in out.splitlines() if "SKIPPED" in line) == 1
        assert str(a.name) not in err


def test_csv_rows_are_on_disk_as_each_pair_finishes(tmp_path, camera, capsys):
    """The CSV is read while the run goes on: each finished pair's row is there, whole."""
    ref, tgt = _dataset(tmp_path, camera, 5)
    table = tmp_path / "out.csv"
    seen = []
    import napari_blurfit.cli as cli

    original = cli.fit_pairs

    def watching(*args, on_pair, **kwargs):
        def check(i, result):
            on_pair(i, result)
            seen.append(len(_rows(table)))
        return original(*args, on_pair=check, **kwargs)

    cli.fit_pairs = watching
    try:
        status, _, err = run_main(capsys, ref, tgt, "--csv", table, "--no-progress")
    finally:
        cli.fit_pairs = original
    assert status == 0, err
    assert seen == [1, 2, 3, 4, 5]
    assert [r["reference"] for r in _rows(table)][-1] == "JOINT"


def test_resume_completes_a_cut_csv(tmp_path, camera, capsys):
    ref, tgt = _dataset(tmp_path, camera, 10)
    whole, cut = tmp_path / "whole.csv", tmp_path / "cut.csv"
    assert run_main(capsys, ref, tgt, "--csv", whole, "--no-progress")[0] == 0
    lines = whole.read_text().splitlines(keepends=True)
    cut.write_text("".join(lines[:4]) + lines[4][:40])  # the header, 3 whole rows and a cut one
    (tmp_path / "cut.csv.options.json").write_text((tmp_path / "whole.csv.options.json").read_text())
    status, out, err = run_main(capsys, ref, tgt, "--csv", cut, "--resume", "--no-progress")
    assert status == 0, err
    assert "blurfit: --resume: 3 of 10 pairs are in" in err and out.count(": sigma") == 7
    want, got = _rows(whole), _rows(cut)
    assert len(got) == 11 and got[-1]["reference"] == "JOINT"
    assert _by_pair(got) == _by_pair(want)  # every pair once, each as the whole run wrote it
    assert float(got[-1]["sigma_y"]) == pytest.approx(float(want[-1]["sigma_y"]), rel=1e-6)
    assert float(got[-1]["stderr_y"]) == pytest.approx(float(want[-1]["stderr_y"]), rel=1e-6)
    # resuming a finished run refits nothing and keeps one JOINT row, at the end
    status, out, err = run_main(capsys, ref, tgt, "--csv", cut, "--resume", "--no-progress", "--json")
    assert status == 0 and "10 of 10 pairs" in err
    assert [json.loads(line)["reference"] for line in out.splitlines()] == ["JOINT"]
    assert [r["reference"] for r in _rows(cut)].count("JOINT") == 1 and _rows(cut)[-1]["reference"] == "JOINT"


def test_resume_refused_when_it_cannot_be_honoured(tmp_path, camera, capsys):
    ref, tgt = _dataset(tmp_path, camera, 3)
    table = tmp_path / "out.csv"
    status, out, err = run_main(capsys, ref, tgt, "--resume")
    assert (status, out) == (2, "")
    assert err.endswith("error: --resume continues the --csv file of an interrupted run; give --csv FILE\n")
    assert run_main(capsys, ref, tgt, "--csv", table, "--no-progress")[0] == 0
    status, out, err = run_main(capsys, ref, tgt, "--csv", table, "--resume", "--loss", "l1")
    assert (status, out) == (2, "")
    assert err == (f"blurfit: error: --resume: {table} was written with other options (--loss 'l2' "
                   "then, 'l1' now); rerun with the same options, or without --resume to start again\n")
    other = tmp_path / "other.csv"
    other.write_text("name,value\na,1\n")
    (tmp_path / "other.csv.options.json").write_text((tmp_path / "out.csv.options.json").read_text())
    status, out, err = run_main(capsys, ref, tgt, "--csv", other, "--resume")
    assert (status, out) == (2, "")
    assert err == (f"blurfit: error: --resume: the columns of {other} (name, value) are not those "
                   "blurfit --csv writes; give the CSV of the interrupted run\n")
    (tmp_path / "out.csv.options.json").unlink()
    status, out, err = run_main(capsys, ref, tgt, "--csv", table, "--resume")
    assert (status, out) == (2, "")
    assert "out.csv.options.json is missing, so the options" in err


# ------------------------------------------------ a real run killed with SIGKILL, then resumed


def _blurfit(*args):
    return [sys.executable, "-m", "napari_blurfit.cli", *map(str, args)]


@pytest.mark.slow
def test_killed_run_resumed_every_pair_once_and_the_same_joint(tmp_path, camera, capsys):
    ref, tgt = _dataset(tmp_path, camera, 150, size=128)
    whole, killed = tmp_path / "whole.csv", tmp_path / "killed.csv"
    assert run_main(capsys, ref, tgt, "--csv", whole, "--no-progress")[0] == 0
    proc = subprocess.Popen(_blurfit(ref, tgt, "--csv", killed, "--no-progress"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if killed.exists() and killed.read_bytes().count(b"\n") > 10:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    left = killed.read_bytes()
    assert left.endswith(b"\n") and b"JOINT" not in left  # killed mid-run: whole rows only
    n_left = len(_rows(killed))
    assert 10 <= n_left < 150
    status, out, err = run_main(capsys, ref, tgt, "--csv", killed, "--resume", "--no-progress")
    assert status == 0, err
    assert f"{n_left} of 150 pairs are in" in err and out.count(": sigma") == 150 - n_left
    want, got = _rows(whole), _rows(killed)
    assert len(got) == 151 and got[-1]["reference"] == "JOINT" and got[-1]["target"] == "150 pairs"
    assert _by_pair(got) == _by_pair(want)
    for column in ("sigma_y", "stderr_y", "loss"):
        assert float(got[-1][column]) == pytest.approx(float(want[-1][column]), rel=1e-6)


# ------------------------------------------------ a real dask cluster of worker processes


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def cluster_data(tmp_path_factory, camera):
    root = tmp_path_factory.mktemp("cluster")
    ref, tgt = _dataset(root, camera, 24)
    pairs = find_pairs(ref, tgt) + _add_bad_pairs(ref, tgt, camera)
    return pairs, fit_pairs(pairs, client=False)


def _same(got, want):
    """Two runs of the same pairs agree to 1e-6, skipped pairs with the same reasons."""
    assert [p.error for p in got.pairs] == [p.error for p in want.pairs]
    for g, w in zip(got.pairs, want.pairs):
        if w.fit is not None:
            assert g.fit.sigma == pytest.approx(w.fit.sigma, rel=1e-6)
    assert got.joint.sigma == pytest.approx(want.joint.sigma, rel=1e-6)
    assert got.joint.sigma_stderr == pytest.approx(want.joint.sigma_stderr, rel=1e-6)
    assert (got.n_joint, got.notes) == (want.n_joint, want.notes)


@pytest.mark.slow
def test_cluster_equals_in_process_with_tasks_bounded(client, cluster_data):
    import napari_blurfit

    where = client.run(lambda: __import__("napari_blurfit").__file__)
    assert set(where.values()) == {napari_blurfit.__file__}  # the workers import this tree
    pairs, want = cluster_data
    in_flight = []

    def count(i, result):
        tasks = client.run_on_scheduler(lambda dask_scheduler: sum(
            str(key).startswith("pair_task") for key in dask_scheduler.tasks))
        in_flight.append(tasks)

    got = fit_pairs(pairs, client=client, on_pair=count)
    _same(got, want)
    assert len(in_flight) == len(pairs) and max(in_flight) <= 4  # 2 per worker thread
    with client.as_current():  # the active client is used when none is given
        _same(fit_pairs(pairs), want)
    # resumed on the cluster: the pairs fitted before are read there for the joint fit only
    earlier = {i: EarlierFit(p.fit.sigma, p.fit.sigma_stderr) for i, p in enumerate(want.pairs[:10])}
    resumed = fit_pairs(pairs, client=client, earlier=earlier)
    assert [p.earlier is not None for p in resumed.pairs] == [i < 10 for i in range(len(pairs))]
    assert resumed.joint.sigma == pytest.approx(want.joint.sigma, rel=1e-6)
    assert resumed.joint.sigma_stderr == pytest.approx(want.joint.sigma_stderr, rel=1e-6)


@pytest.mark.slow
def test_cluster_fits_arrays_in_memory(client, cluster_data):
    pairs, want = cluster_data
    good = [(tifffile.imread(a), tifffile.imread(b)) for a, b in pairs[:6]]
    got = fit_pairs(good, client=client)
    assert [p.reference for p in got.pairs][:2] == ["reference[0]", "reference[1]"]
    np.testing.assert_allclose([p.fit.sigma for p in got.pairs], [p.fit.sigma for p in want.pairs[:6]],
                               rtol=1e-6)
    mask = np.zeros((96, 96), bool)
    mask[10:70, 20:90] = True  # sent to the workers once, with every task's options
    masked = [fit_pairs(pairs[:4], client=c, mask=mask, loss="l1") for c in (client, False)]
    assert masked[0].joint.n_pixels == masked[1].joint.n_pixels == 4 * mask.sum()
    assert masked[0].joint.sigma == pytest.approx(masked[1].joint.sigma, rel=1e-6)
    np.testing.assert_allclose(*[[p.fit.sigma for p in m.pairs] for m in masked], rtol=1e-6)


@pytest.mark.slow
def test_cluster_joint_fit_of_a_shifted_kernel_reads_the_pairs_here(client, cluster_data):
    pairs, _ = cluster_data
    want = fit_pairs(pairs[:4], client=False, shift=True)
    got = fit_pairs(pairs[:4], client=client, shift=True)
    assert got.joint_error is None and got.n_joint == 4
    assert got.joint.sigma == pytest.approx(want.joint.sigma, rel=1e-6)
    assert got.joint.shift == pytest.approx(want.joint.shift, abs=1e-6)


@pytest.mark.slow
def test_worker_killed_mid_run_the_batch_completes(client, cluster_data):
    pairs, want = cluster_data
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]

    killed = []

    def kill_once(i, result):
        if not killed:
            killed.append(i)
            os.kill(pids[victim], signal.SIGKILL)

    got = fit_pairs(pairs, client=client, on_pair=kill_once)
    _same(got, want)
    client.wait_for_workers(2, timeout=60)
    assert pids[victim] not in client.run(os.getpid).values()  # that worker really died


@pytest.mark.slow
def test_cli_on_two_workers_writes_what_in_process_writes(tmp_path, cluster_data):
    pairs, _ = cluster_data
    listing = tmp_path / "pairs.csv"
    listing.write_text("".join(f"{a},{b}\n" for a, b in pairs))
    local, spread = tmp_path / "local.csv", tmp_path / "spread.csv"
    assert subprocess.run(_blurfit("--pairs", listing, "--csv", local, "--no-progress")).returncode == 0
    out = subprocess.run(_blurfit("--pairs", listing, "--csv", spread, "--workers", "2", "--progress",
                                  "--json"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    want, got = _rows(local), _rows(spread)
    assert list(got[0]) == list(want[0])  # the same columns in the same order
    assert got[-1]["reference"] == "JOINT" and len(got) == len(want)
    assert _by_pair(got).keys() == _by_pair(want).keys()
    for key, row in _by_pair(want).items():
        assert _by_pair(got)[key]["error"] == row["error"]
        if row["sigma_y"]:
            assert float(_by_pair(got)[key]["sigma_y"]) == pytest.approx(float(row["sigma_y"]), rel=1e-6)
    assert float(got[-1]["sigma_y"]) == pytest.approx(float(want[-1]["sigma_y"]), rel=1e-6)
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(records) == len(pairs) + 1 and records[-1]["reference"] == "JOINT"
    bars = [line.rsplit("\r", 1)[-1] for line in out.stderr.splitlines()]
    assert any(line.startswith("pairs: 100%") and f" {len(pairs)}/{len(pairs)} [" in line
               and "pair/s]" in line for line in bars), out.stderr
