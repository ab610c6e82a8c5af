"""Read and write images for the command line: TIFF (tifffile), PNG/JPEG (imageio) and .npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TIFF = (".tif", ".tiff")
RASTER = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
READABLE = TIFF + RASTER + (".npy",)


def read_image(path) -> np.ndarray:
    """Read one image; raises ``FileNotFoundError`` or ``ValueError`` with the file named."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix in TIFF:
            import tifffile

            return tifffile.imread(path)
        if suffix in RASTER:
            import imageio.v3 as iio

            return np.asarray(iio.imread(path))
    except Exception as err:  # a corrupt file: say which and why, in one line
        raise ValueError(f"cannot read {path}: {err}") from None
    raise ValueError(f"cannot read {path}: unsupported file type {suffix!r} "
                     f"(use one of {', '.join(READABLE)})")


def write_image(path, image: np.ndarray) -> Path:
    """Write a float image as float32 TIFF or .npy (lossless, keeps negative residuals)."""
    path = Path(path)
    suffix = path.suffix.lower()
    arr = np.asarray(image, dtype=np.float32)
    if suffix == ".npy":
        np.save(path, arr)
    elif suffix in TIFF:
        import tifffile

        tifffile.imwrite(path, arr, compression="zlib")
    else:
        raise ValueError(f"cannot write {path}: use .tif or .npy for fitted and residual images")
    return path
