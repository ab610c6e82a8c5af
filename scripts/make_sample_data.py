"""Build the bundled sample pair from scikit-image's `cell` micrograph (CC0).

reference: a 320 x 320 crop of the quantitative-phase image (uint8, 0.107 um pixels).
target:    the same field as a second, defocused acquisition would see it:
           0.7 * gaussian_filter(reference, 2.5) + 12 plus Gaussian noise (sd 2), float32.
Run from the repository root: python scripts/make_sample_data.py
"""

from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage
from skimage import data

SIGMA, GAIN, OFFSET, NOISE = 2.5, 0.7, 12.0, 2.0

out = Path(__file__).resolve().parents[1] / "src" / "napari_blurfit" / "data"
ref = data.cell()[218:538, 230:550]  # the cell near the centre
rng = np.random.default_rng(20261122)
tgt = GAIN * ndimage.gaussian_filter(ref.astype(np.float64), SIGMA) + OFFSET
tgt = (tgt + rng.normal(0.0, NOISE, tgt.shape)).astype(np.float32)
meta = {"axes": "YX"}
tifffile.imwrite(out / "cell_reference.tif", ref, metadata=meta, compression="zlib")
tifffile.imwrite(out / "cell_target.tif", tgt, metadata=meta, compression="zlib")
print("wrote", out, ref.shape, ref.dtype, tgt.dtype)
