"""Read and write images for the command line: TIFF (tifffile), PNG/JPEG (imageio) and .npy."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

TIFF = (".tif", ".tiff")
RASTER = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
READABLE = TIFF + RASTER + (".npy",)
WRITABLE = TIFF + (".npy",)  # float32, lossless: keeps negative residuals


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


#: tifffile's axis codes that are space; ``Q`` (unknown) and ``I`` (a generic sequence) say nothing
SPATIAL = "ZYX"
UNKNOWN = "QI"
#: what the other axis codes hold, for messages (``S``: samples of one pixel, such as RGB)
AXIS_WORDS = {"C": "channels", "S": "channels (samples)", "T": "time points", "E": "wavelengths"}


def read_axes(path) -> str | None:
    """The axes a TIFF file's metadata gives its image, as tifffile names them; None otherwise.

    Parameters
    ----------
    path : str or Path
        Any image file; only TIFF files carry axes (ImageJ hyperstack, OME or tifffile metadata,
        or several samples per pixel).

    Returns
    -------
    str or None
        One letter per axis of the array `read_image` returns, e.g. ``"CYX"`` (an ImageJ
        hyperstack of channels), ``"ZCYX"``, ``"YXS"`` (RGB); None for other files or when the
        file cannot be read.
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF or not path.is_file():
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return str(tif.series[0].axes)
    except Exception:  # unreadable: read_image reports it when the pair is fitted
        return None


def spatial_axes_of(axes: str | None) -> tuple[int, ...] | None:
    """The spatial axes (negative indices) when ``axes`` names an axis that is not space.

    ``"CYX"`` -> ``(-2, -1)``, ``"ZCYX"`` -> ``(-4, -2, -1)``, ``"YXS"`` -> ``(-3, -2)``; None
    when every axis is spatial or unknown (``"ZYX"``, ``"QYX"``) or Y and X are not both named.
    """
    if not axes or "Y" not in axes or "X" not in axes:
        return None
    if any(a in UNKNOWN for a in axes) or all(a in SPATIAL for a in axes):
        return None
    return tuple(i - len(axes) for i, a in enumerate(axes) if a in SPATIAL)


def frame_names(axes: str) -> list[str]:
    """What the axes that are not spatial hold, in words: ``"CYX"`` -> ``["channels"]``."""
    return list(dict.fromkeys(AXIS_WORDS.get(a, f"{a} axes") for a in axes if a not in SPATIAL))


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
        raise ValueError(f"cannot write {path}: use {' or '.join(WRITABLE)} for fitted and residual images")
    return path


def check_writable(path, flag: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """Check, before any work is done, that ``path`` can be written.

    Parameters
    ----------
    path : str or Path
        The output file.
    flag : str
        The option that named it (``--csv``), for the message.
    suffixes : tuple of str, optional
        The extensions this output supports (any if None).

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        The extension is unsupported, the path is a folder, its folder does not exist or is not
        a folder, or the file or folder is not writable; the message names ``flag``.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} {path}: cannot write {path.suffix or 'a file without extension'}; "
                         f"use {' or '.join(suffixes)}")
    folder = path.parent
    if not folder.exists():
        raise ValueError(f"{flag} {path}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: {folder} is not a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path}: the file is not writable (permission denied)")
    if not path.exists() and not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: cannot create files in {folder} (permission denied)")
    return path
