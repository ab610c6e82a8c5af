"""Stacks, blur maps and lazy datasets at scale, with baselines measured in the same run.

Run: .venv/bin/python benchmarks/bench_scale.py [--quick]

1. Joint fit over 200 pairs of 512x512 against looping the naive per-pair fit
   (scipy.optimize.least_squares on gaussian_filter(A, s) - B) over all 200 pairs; the joint fit
   is the median of 10 runs interleaved with the loop. Its answer is checked against a
   brute-force joint optimum (dense grid + bounded Brent, every evaluation a gaussian_filter pass
   over all pairs).
2. Blur map of a 4096x4096 pair with 256-px tiles: time and peak memory (numpy), and with a
   dask.distributed LocalCluster of 1 and of 2 worker processes (the pair placed on the workers
   before timing, as data loaded there would be; the map is checked equal to numpy's).
3. A 10 GB-equivalent lazy dataset (1280 pairs of 1024x1024 float32 generated block by block,
   never stored) fitted jointly; peak RSS of that process.
Each part runs in its own subprocess so that peak-RSS figures are its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage, optimize

sys.path.insert(0, str(Path(__file__).parent))
from bench_fit import naive_least_squares, test_image  # noqa: E402

from napari_blurfit import blur_map, fit_blur  # noqa: E402

TRUE = 2.0
NAIVE_BLOCK = 20  # naive pairs timed between two joint fits


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def pairs_stack(n, size, seed=0):
    rng = np.random.default_rng(seed)
    ref = np.stack([test_image((size, size), seed=i) for i in range(n)])
    tgt = ndimage.gaussian_filter(ref, (0, TRUE, TRUE)) + rng.normal(0, 0.02, ref.shape)
    return ref.astype(np.float32), tgt.astype(np.float32)


def part_joint(quick):
    n, size = (40, 128) if quick else (200, 512)
    ref, tgt = pairs_stack(n, size)
    fit_blur(ref, tgt, spatial_axes=(-2, -1))  # warm-up (page faults, thread pool)
    # The naive loop runs over every pair (no scaling); one joint fit is timed after each block
    # of NAIVE_BLOCK pairs, so both are sampled across the same stretch of this noisy machine.
    times, naive, t_naive = [], [], 0.0
    for start in range(0, n, NAIVE_BLOCK):
        t0 = time.perf_counter()
        naive += [naive_least_squares(ref[i], tgt[i], [1.0])[0][0]
                  for i in range(start, min(start + NAIVE_BLOCK, n))]
        t_naive += time.perf_counter() - t0
        t0 = time.perf_counter()
        fit = fit_blur(ref, tgt, spatial_axes=(-2, -1))
        times.append(time.perf_counter() - t0)
    t_ours = statistics.median(times)

    def joint_loss(s):
        return float(np.mean((ndimage.gaussian_filter(ref, (0, s, s)) - tgt) ** 2))
    t0 = time.perf_counter()
    grid = np.geomspace(0.5, 8, 25)
    values = [joint_loss(s) for s in grid]
    i = int(np.argmin(values))
    res = optimize.minimize_scalar(joint_loss, bounds=(grid[i - 1], grid[i + 1]),
                                   method="bounded", options={"xatol": 1e-6})
    t_brute = time.perf_counter() - t0
    return {"pairs": n, "size": size, "ours_s": t_ours, "naive_loop_s": t_naive, "ours_runs_s": times,
            "speedup": t_naive / t_ours, "sigma": fit.sigma[0], "brute_sigma": float(res.x),
            "brute_s": t_brute, "naive_median_sigma": float(np.median(naive)),
            "ours_loss": fit.loss, "brute_loss": float(res.fun), "peak_rss_mb": peak_rss_mb()}


def varying_pair(size):
    a = test_image((size, size), seed=7)
    # blur grows from left to right: 1 px to 4 px in four bands
    b = np.empty_like(a)
    for j, s in enumerate((1.0, 2.0, 3.0, 4.0)):
        cols = slice(j * size // 4, (j + 1) * size // 4)
        b[:, cols] = ndimage.gaussian_filter(a, s)[:, cols]
    return a, b


def part_map_numpy(quick):
    size = 1024 if quick else 4096
    a, b = varying_pair(size)
    base = peak_rss_mb()
    t0 = time.perf_counter()
    m = blur_map(a, b, tile=256)
    t = time.perf_counter() - t0
    return {"size": size, "tiles": int(np.prod(m.sigma.shape[:-1])), "seconds": t,
            "peak_rss_mb": peak_rss_mb(), "rss_before_mb": base,
            "band_medians": [float(np.nanmedian(m.sigma[:, j * m.sigma.shape[1] // 4:
                                                         (j + 1) * m.sigma.shape[1] // 4]))
                             for j in range(4)]}


def part_map_cluster(quick, workers):
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    size = 1024 if quick else 4096
    a, b = varying_pair(size)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        # the pair is placed on the workers first, as data loaded there would be (else every
        # task would carry its pixels inside the task graph)
        t0 = time.perf_counter()
        da_a, da_b = client.persist([da.from_array(a, chunks=1024), da.from_array(b, chunks=1024)])
        wait([da_a, da_b])
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = blur_map(da_a, da_b, tile=256)
        t = time.perf_counter() - t0
    return {"workers": workers, "seconds": t, "load_s": t_load,
            "tiles": int(np.prod(m.sigma.shape[:-1])),
            "same_as_numpy": bool(np.array_equal(m.sigma, blur_map(a, b, tile=256).sigma,
                                                 equal_nan=True))}


def part_lazy(quick):
    import dask
    import dask.array as da

    n, size = (64, 512) if quick else (1280, 1024)

    def make(block_id=None):
        rng = np.random.default_rng(block_id[0])
        img = ndimage.gaussian_filter(rng.random((size, size), dtype=np.float32), 1.0)
        return (img + (img > 0.5))[None].astype(np.float32)

    ref = da.map_blocks(make, chunks=((1,) * n, (size,), (size,)), dtype=np.float32)
    tgt = ref.map_blocks(lambda x: ndimage.gaussian_filter(x, (0, TRUE, TRUE)), dtype=np.float32)
    nbytes = ref.nbytes + tgt.nbytes
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=2):
        fit = fit_blur(ref, tgt, spatial_axes=(-2, -1))
    return {"pairs": n, "size": size, "dataset_gb": nbytes / 1e9,
            "seconds": time.perf_counter() - t0, "sigma": fit.sigma[0],
            "peak_rss_mb": peak_rss_mb()}


def run_part(name, quick, *extra):
    cmd = [sys.executable, __file__, "--part", name] + (["--quick"] if quick else []) + list(extra)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--part")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    if args.part:
        fn = {"joint": part_joint, "map": part_map_numpy, "lazy": part_lazy,
              "cluster": lambda q: part_map_cluster(q, args.workers)}[args.part]
        print(json.dumps(fn(args.quick)))
        return
    j = run_part("joint", args.quick)
    print(f"== joint fit over {j['pairs']} pairs of {j['size']}^2 ==")
    print(f"fit_blur joint (median)        {j['ours_s']:8.2f} s  sigma {j['sigma']:.6f}  "
          f"(runs {min(j['ours_runs_s']):.2f}-{max(j['ours_runs_s']):.2f} s)")
    print(f"naive per-pair loop, all pairs {j['naive_loop_s']:8.2f} s  median sigma "
          f"{j['naive_median_sigma']:.6f}")
    print(f"brute-force joint optimum      {j['brute_s']:8.2f} s  sigma {j['brute_sigma']:.6f}")
    print(f"RATIO joint speed-up vs naive loop : {j['speedup']:7.1f}x (target >= 50x)")
    print(f"sigma - brute-force joint sigma    : {j['sigma'] - j['brute_sigma']:+.2e}; loss "
          f"ours {j['ours_loss']:.8g} vs brute {j['brute_loss']:.8g}")
    m = run_part("map", args.quick)
    print(f"\n== blur map {m['size']}^2, 256-px tiles ({m['tiles']} tiles, overlap 0.5) ==")
    print(f"numpy, in process              {m['seconds']:8.2f} s  peak RSS {m['peak_rss_mb']:.0f} MB "
          f"(inputs loaded: {m['rss_before_mb']:.0f} MB)")
    print(f"median sigma per band (true 1, 2, 3, 4): {np.round(m['band_medians'], 3).tolist()}")
    c1 = run_part("cluster", args.quick, "--workers", "1")
    c2 = run_part("cluster", args.quick, "--workers", "2")
    for c in (c1, c2):
        print(f"dask LocalCluster, {c['workers']} worker(s) {c['seconds']:8.2f} s  (pair placed on "
              f"the workers first: {c['load_s']:.2f} s; map equal to numpy's: {c['same_as_numpy']})")
    print(f"RATIO 2 workers vs 1 worker    : {c1['seconds'] / c2['seconds']:7.2f}x")
    z = run_part("lazy", args.quick)
    print(f"\n== lazy dataset: {z['pairs']} pairs of {z['size']}^2 float32 = "
          f"{z['dataset_gb']:.1f} GB, generated on the fly ==")
    print(f"joint fit                      {z['seconds']:8.2f} s  sigma {z['sigma']:.6f}  "
          f"peak RSS {z['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
