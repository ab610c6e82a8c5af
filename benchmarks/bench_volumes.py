"""Benchmark: 3D whole-Gaussian fits with wide axial kernels, in passes of one Gaussian filter.

A 128x256x256 float32 volume of real texture in every direction (``tests/volumes.py``: windows of
scikit-image's photographs, interpolated along z), blurred by the kernel of each row (exact
reflect-mode Gaussian, shifted) plus 0.2% noise. Each row prints the median time of ``fit_blur``
over ``--repeats`` runs, one `scipy.ndimage.gaussian_filter` pass with the row's sigmas measured in
the same runs (interleaved with the fits), their ratio (the target: 8 passes), the accuracy
(``||S^-1/2 C S^-1/2 - I||_F`` and the largest shift error, px) and the peak traced memory over
the two inputs' bytes (target 6x).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_whole_gaussian import peak_memory, timed  # noqa: E402
from volumes import blurred, covariance_error, rotated, textured  # noqa: E402

from napari_blurfit import fit_blur  # noqa: E402

SHAPE = (128, 256, 256)
ROWS = [  # name, covariance, shift, options
    ("per-axis + shift (6, 2, 2)", np.diag([6.0, 2, 2]) ** 2, (1.3, -0.7, 2.4), dict(per_axis=True)),
    ("per-axis + shift (9, 3, 3)", np.diag([9.0, 3, 3]) ** 2, (-2.5, 1.2, 0.6), dict(per_axis=True)),
    ("per-axis + shift + gain/offset (6, 2, 2)", np.diag([6.0, 2, 2]) ** 2, (1.3, -0.7, 2.4),
     dict(per_axis=True, gain_offset=True)),
    ("per-axis + shift, L1 (6, 2, 2)", np.diag([6.0, 2, 2]) ** 2, (1.3, -0.7, 2.4),
     dict(per_axis=True, loss="l1")),
    ("round + shift (4, 4, 4)", np.eye(3) * 4.0**2, (0.6, -1.1, 0.8), dict()),
    ("rotated ellipsoid + shift (7, 2, 2.5)", rotated((7.0, 2.0, 2.5), (20, 30)), (0.5, -1.0, 0.3),
     dict(full_covariance=True)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    volume = textured(SHAPE, seed=7).astype(np.float32)
    print(f"volume {SHAPE} float32, real texture; medians of {args.repeats} runs")
    print(f"{'row':44s} {'fit s':>7s} {'pass s':>7s} {'passes':>7s} {'cov err':>8s} "
          f"{'shift err':>9s} {'memory':>7s}")
    for name, cov, shift, options in ROWS:
        target = blurred(volume, cov, shift, noise=0.002)
        sigmas = np.sqrt(np.linalg.eigvalsh(cov))[::-1] if options.get("full_covariance") \
            else np.sqrt(np.diag(cov))
        def fit(target=target, options=options):
            return fit_blur(volume, target, shift=True, warn=False, **options)

        # the yardstick and the fit interleaved, run by run: a machine that drifts between the
        # two blocks of runs moved a row's passes by 15%
        passes, fits = [], []
        for _ in range(args.repeats):
            passes.append(timed(lambda s=sigmas: ndimage.gaussian_filter(volume, s), 1)[0])
            seconds, result = timed(fit, 1)
            fits.append(seconds)
        one_pass, seconds = float(np.median(passes)), float(np.median(fits))
        memory = peak_memory(fit) / (volume.nbytes + target.nbytes) if args.memory else float("nan")
        print(f"{name:44s} {seconds:7.2f} {one_pass:7.3f} {seconds / one_pass:7.1f} "
              f"{covariance_error(result.covariance, cov):8.1e} "
              f"{np.abs(np.subtract(result.shift, shift)).max():9.1e} {memory:6.1f}x", flush=True)


if __name__ == "__main__":
    main()
