"""What ``reference_noise="auto"`` (the default) costs against ``reference_noise=0``.

Target (issue "both images are noisy"): the estimate and the correction add at most 10% to the
default L2 fit. Both settings are timed in the same run, interleaved, on a clean pair (the
estimate alone: nothing to correct) and on a pair whose reference has noise (estimate, corrected
refits); the row gives each median and the ratio auto / 0, and the same for the fastest run of
each (less swayed by other jobs on a shared machine).

Run: ``python benchmarks/bench_noise.py [--size 1024] [--repeats 7]``
"""

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from volumes import textured  # noqa: E402

from napari_blurfit import fit_blur


def texture(size: int) -> np.ndarray:
    """A real texture without a period: a slice of `volumes.textured` (windows of real photographs).

    A camera image tiled 4 x 4 (the earlier texture) is exactly periodic: its reference power sits
    on a few harmonics, the noise line cannot be read from it, and "auto" rightly gives up after
    its rounds (no correction). That case timed the rounds of a failed estimate, not the default
    fit on a real pair.
    """
    return textured((2, size, size), seed=3)[0]


def pairs(size: int) -> dict:
    rng = np.random.default_rng(0)
    image = texture(size)
    target = ndimage.gaussian_filter(image, 1.5) + rng.normal(0, 0.01, image.shape)
    return {"clean reference": (image, target),
            "reference noise 0.05": (image + rng.normal(0, 0.05, image.shape), target)}


def median_time(reference, target, setting, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fit_blur(reference, target, reference_noise=setting, warn=False)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"# {platform.node()} {args.size}x{args.size} float64, median of {args.repeats}")
    print(f"{'pair':<22} {'noise=0 (s)':>12} {'auto (s)':>10} {'ratio':>7} {'best 0':>8} "
          f"{'best auto':>10} {'ratio':>7}")
    for name, (reference, target) in pairs(args.size).items():
        fit_blur(reference, target, warn=False)  # warm up
        off, auto = [], []
        for _ in range(args.repeats):  # interleaved: load on the machine hits both alike
            off.append(median_time(reference, target, 0, 1))
            auto.append(median_time(reference, target, "auto", 1))
        a, b = float(np.median(off)), float(np.median(auto))
        c, d = min(off), min(auto)
        print(f"{name:<22} {a:>12.3f} {b:>10.3f} {b / a:>7.2f} {c:>8.3f} {d:>10.3f} {d / c:>7.2f}")


if __name__ == "__main__":
    main()
