"""A dataset of many pairs in process against a LocalCluster of 2 worker processes, same run.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_dataset.py [--pairs 40] [--size 1024] [--repeats 3]

40 pairs of 1024x1024 float32 TIFF files (the cameraman, enlarged and shifted per pair, blurred
with sigmas from 1.2 to 2.0 px plus noise) are written to a temporary folder. `fit_pairs` over
them (every pair, then the joint fit) is timed in process and on a `LocalCluster(n_workers=2,
threads_per_worker=1)` started once beforehand (its start-up is printed apart), the two
interleaved, `--repeats` times each; the medians, pairs/s and their ratio are printed, and the
per-pair phase alone (``joint=False``) the same way. The answers are compared (largest relative
difference of any pair's sigma and of the joint sigma). The load average is printed before and
after, since other work on the machine slows both sides unevenly.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage
from skimage import data

from napari_blurfit.dataset import fit_pairs


def write_pairs(folder: Path, n: int, size: int) -> list[tuple[Path, Path]]:
    """``n`` real pairs of ``size``^2 float32 TIFF files."""
    big = ndimage.zoom(data.camera().astype(np.float32), 2 * size / 512, order=1)
    rng = np.random.default_rng(0)
    pairs = []
    for i, sigma in enumerate(np.linspace(1.2, 2.0, n)):
        a = np.roll(big, (37 * i, 53 * i), axis=(0, 1))[:size, :size]
        b = ndimage.gaussian_filter(a, sigma) + rng.normal(0, 1.0, a.shape).astype(np.float32)
        pair = (folder / f"ref{i:03d}.tif", folder / f"tgt{i:03d}.tif")
        tifffile.imwrite(pair[0], a)
        tifffile.imwrite(pair[1], b.astype(np.float32))
        pairs.append(pair)
    return pairs


def timed(pairs, client, joint: bool):
    start = time.perf_counter()
    result = fit_pairs(pairs, client=client, joint=joint)
    return time.perf_counter() - start, result


def largest_difference(a, b) -> tuple[float, float]:
    pairs = max(abs(p.fit.sigma[0] / q.fit.sigma[0] - 1) for p, q in zip(a.pairs, b.pairs))
    joint = abs(a.joint.sigma[0] / b.joint.sigma[0] - 1) if a.joint and b.joint else float("nan")
    return pairs, joint


def row(label: str, times: list[float], n: int) -> float:
    median = statistics.median(times)
    runs = ", ".join(f"{t:.2f}" for t in times)
    print(f"{label:<34} {median:6.2f} s  {n / median:6.1f} pairs/s  (runs {runs} s)")
    return median


def compare(pairs, client, *, joint: bool, repeats: int, size: int) -> None:
    """In process and on the cluster, interleaved: medians, pairs/s, ratio, differences."""
    local, spread = [], []
    for _ in range(repeats):
        t, want = timed(pairs, False, joint)
        local.append(t)
        t, got = timed(pairs, client, joint)
        spread.append(t)
    what = "pairs + joint fit" if joint else "pairs only"
    print(f"\n== {len(pairs)} pairs of {size}^2 float32, {what} (median of {repeats}) ==")
    base = row("in process", local, len(pairs))
    two = row("LocalCluster, 2 worker processes", spread, len(pairs))
    print(f"RATIO 2 workers vs in process   : {base / two:5.2f}x (target >= 1.6x)")
    d_pairs, d_joint = largest_difference(got, want)
    print(f"largest relative difference     : pairs {d_pairs:.1e}, joint {d_joint:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"load average before: {load}  ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        pairs = write_pairs(Path(tmp), args.pairs, args.size)
        fit_pairs(pairs[:2], client=False)  # imports and first-call costs, outside the timing
        start = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            client.wait_for_workers(2)
            print(f"LocalCluster of 2 workers started in {time.perf_counter() - start:.2f} s "
                  "(not timed below)")
            fit_pairs(pairs[:2], client=client)
            for joint in (True, False):
                compare(pairs, client, joint=joint, repeats=args.repeats, size=args.size)
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
