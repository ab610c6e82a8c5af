"""Read and write images for the command line: TIFF (tifffile), PNG/JPEG (imageio) and .npy.

TIFF metadata also gives an image's axes (`read_axes`) and pixel size (`read_pixel_size`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
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


# ---------------------------------------------------------------- pixel sizes from metadata

#: metres per unit, by the one name each unit is reported in
METRES = {"km": 1e3, "m": 1.0, "cm": 1e-2, "mm": 1e-3, "um": 1e-6, "nm": 1e-9, "pm": 1e-12,
          "angstrom": 1e-10, "in": 0.0254}
#: other spellings of those units in ImageJ and OME metadata and on the command line
UNIT_ALIASES = {"micron": "um", "microns": "um", "micrometer": "um", "micrometre": "um",
                "\u00b5m": "um", "\u03bcm": "um", "\\u00b5m": "um", "mum": "um",
                "nanometer": "nm", "nanometre": "nm", "millimeter": "mm", "millimetre": "mm",
                "centimeter": "cm", "centimetre": "cm", "meter": "m", "metre": "m",
                "\u00e5": "angstrom", "\u212b": "angstrom", "a": "angstrom", "inch": "in",
                "inches": "in"}
#: units that say the image is not calibrated
UNCALIBRATED = ("", "pixel", "pixels", "px", "reference frame")


def unit_name(text: str | None) -> str | None:
    """The unit ``text`` names, as `METRES` names it (``"micron"`` -> ``"um"``).

    None for no unit or an uncalibrated one (``"pixel"``); `ValueError` for a unit not known.
    """
    if text is None or text.strip().lower() in UNCALIBRATED:
        return None
    key = text.strip().lower()
    key = UNIT_ALIASES.get(key, key)
    if key not in METRES:
        raise ValueError(f"unknown length unit {text!r}; known: {', '.join(METRES)} (and micron, "
                         "\u00b5m, \u00c5)")
    return key


def convert(values, unit: str | None, to: str | None) -> tuple[float, ...]:
    """``values`` in ``unit`` expressed in ``to`` (no conversion when either is None)."""
    factor = 1.0 if unit is None or to is None else METRES[unit] / METRES[to]
    return tuple(float(v) * factor for v in values)


@dataclass(frozen=True)
class PixelSize:
    """The size of an image's pixels in world units, and where it was found.

    Attributes
    ----------
    sizes : tuple of float
        World units per pixel, one per axis of ``axes`` (or, with ``axes`` empty, one per
        spatial axis of the fit, or one for all of them).
    unit : str or None
        The world unit as `METRES` names it (``"um"``); None when not known.
    source : str
        Where it came from, for messages: ``"ImageJ metadata"``, ``"--target-pixel-size"``.
    axes : str
        The tifffile letters of the axes ``sizes`` are for (``"ZYX"``, ``"YX"``), in array
        order; empty when the sizes apply to the spatial axes in order (a flag's).
    array_axes : str
        Every axis of the file's array (``"CYX"``); empty when not known.
    """

    sizes: tuple[float, ...]
    unit: str | None
    source: str
    axes: str = ""
    array_axes: str = ""

    def in_unit(self, unit: str | None) -> PixelSize:
        """The same pixel size expressed in ``unit`` (unchanged if either unit is None)."""
        if unit is None or self.unit is None:
            return self
        return replace(self, sizes=convert(self.sizes, self.unit, unit), unit=unit)

    def along(self, spatial_axes, name: str) -> tuple[float, ...]:
        """The sizes along the fit's spatial axes (negative indices; None: every axis).

        ``name`` names the image in the error raised when the metadata lacks an axis.
        """
        if not self.axes or not self.array_axes:
            return self.sizes
        indexes = range(-len(self.array_axes), 0) if spatial_axes is None else spatial_axes
        letters = [self.array_axes[i] for i in indexes]
        missing = [a for a in letters if a not in self.axes]
        if missing:
            raise ValueError(f"the {self.source} of the {name} gives no pixel size along its "
                             f"{', '.join(missing)} axis (axes {self.array_axes}); give one for "
                             "every spatial axis")
        return tuple(self.sizes[self.axes.index(a)] for a in letters)

    def text(self, sizes=None) -> str:
        """``0.065 x 0.065 um (from ImageJ metadata)`` (``sizes``: these instead of ``sizes``)."""
        values = " x ".join(f"{s:.6g}" for s in (self.sizes if sizes is None else sizes))
        unit = f" {self.unit}" if self.unit else " (no unit given)"
        return f"{values}{unit} (from {self.source})"


def read_pixel_size(path) -> PixelSize | None:
    """The pixel size a TIFF file's ImageJ or OME metadata gives, per spatial axis; None otherwise.

    Parameters
    ----------
    path : str or Path
        Any image file; only TIFF files with ImageJ or OME-XML metadata carry pixel sizes here
        (a plain TIFF's resolution tags are a print resolution, not a pixel size).

    Returns
    -------
    PixelSize or None
        ImageJ: x and y from the XResolution/YResolution tags (pixels per unit), z from the
        description's ``spacing=``, the unit from ``unit=`` (``yunit=``/``zunit=`` where they
        differ); OME: PhysicalSizeX/Y/Z and their units (µm by default). Sizes are in the
        array's axis order (``axes``: ``"ZYX"``, ``"YX"``), all in one unit (x's). None when the
        file has no such metadata, is uncalibrated (unit ``pixel``, or no unit and 1 pixel per
        unit), or cannot be read.

    Raises
    ------
    ValueError
        The metadata names a unit that is not a length this package knows.
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF or not path.is_file():
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            axes = str(tif.series[0].axes)
            ome = tif.ome_metadata if tif.is_ome else None
            imagej = (tif.imagej_metadata or {}) if tif.is_imagej else None
            resolution = {tag: tif.pages[0].tags[tag].value for tag in ("XResolution", "YResolution")
                          if tag in tif.pages[0].tags}
    except Exception:  # unreadable: read_image reports it when the pair is fitted
        return None
    if ome is not None:
        return _pixel_size(_ome_sizes(ome), axes, "OME metadata")
    if imagej is not None:
        return _pixel_size(_imagej_sizes(imagej, resolution), axes, "ImageJ metadata")
    return None


def _pixel_size(found: dict, axes: str, source: str) -> PixelSize | None:
    """``found`` ({letter: (size, unit)}) in the array's order and x's unit (y's, z's if absent)."""
    sized = "".join(a for a in axes if a in found)
    if not sized:
        return None
    units = [found[a][1] for a in "XYZ" if a in found and found[a][1] is not None]
    unit = units[0] if units else None
    sizes = tuple(convert([found[a][0]], found[a][1], unit)[0] for a in sized)
    return PixelSize(sizes, unit, source, sized, axes)


def _imagej_sizes(meta: dict, resolution: dict) -> dict:
    """{letter: (size, unit)} from ImageJ metadata and the resolution tags; empty if uncalibrated."""
    unit = unit_name(str(meta["unit"])) if "unit" in meta else None
    found = {}
    for letter, tag, own in (("X", "XResolution", "unit"), ("Y", "YResolution", "yunit")):
        per_unit = _rational(resolution.get(tag))
        if per_unit and per_unit > 0 and (unit is not None or per_unit != 1):
            found[letter] = (1.0 / per_unit, unit_name(str(meta[own])) if own in meta else unit)
    if "spacing" in meta and float(meta["spacing"]) > 0:
        found["Z"] = (float(meta["spacing"]), unit_name(str(meta["zunit"])) if "zunit" in meta else unit)
    return found if found.keys() & {"X", "Y"} else {}


def _rational(value) -> float | None:
    """A TIFF RATIONAL (numerator, denominator) or number as a float."""
    try:
        if isinstance(value, tuple):
            return value[0] / value[1] if value[1] else None
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _ome_sizes(xml: str | None) -> dict:
    """{letter: (size, unit)} from the first image of OME-XML (unit default µm)."""
    from xml.etree import ElementTree

    if not xml:
        return {}
    pixels = next((e for e in ElementTree.fromstring(xml).iter() if e.tag.endswith("}Pixels")), None)
    if pixels is None:
        return {}
    found = {}
    for letter in "XYZ":
        size = pixels.get(f"PhysicalSize{letter}")
        text = pixels.get(f"PhysicalSize{letter}Unit", "\u00b5m")
        if size is not None and float(size) > 0 and text.strip().lower() not in UNCALIBRATED:
            found[letter] = (float(size), unit_name(text))
    return found
