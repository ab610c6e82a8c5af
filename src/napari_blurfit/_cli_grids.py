"""How ``blurfit`` places two images on their grids: pixel-size flags, TIFF metadata, stderr notes.

Each image's pixel size is its flag's (``--reference-pixel-size``, ``--target-pixel-size``), else
its TIFF's ImageJ or OME metadata (`napari_blurfit.io.read_pixel_size`), else unknown; what was
used is said on stderr. `napari_blurfit._pair_grids` turns the sizes into grids.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import textwrap
from collections import Counter

from ._pair_grids import ROLES, GridPair, grids_of_sizes, pair_grids
from .io import PixelSize, read_pixel_size, unit_name

FLAGS = {"reference_grid": "--reference-pixel-size", "target_grid": "--target-pixel-size",
         "target_sampling": "--target-sampling", "reference_origin": "--reference-origin",
         "target_origin": "--target-origin"}
#: a number list and an optional unit after it: ``0.3,0.065,0.065 um``, ``65nm``
_LENGTHS = re.compile(r"\s*(?P<values>.*?)\s*(?P<unit>[^\W\d_][^\W\d_]*)?\s*", re.UNICODE)
EXAMPLES = "such as 0.065, 65nm or 0.3,0.065,0.065um"


def _numbers(text: str) -> tuple[float, ...] | None:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None


def pixel_size_arg(text: str) -> tuple[tuple[float, ...], str | None]:
    """Parse a pixel-size flag: positive numbers, comma separated, and an optional unit."""
    match = _LENGTHS.fullmatch(text)
    values = _numbers(match["values"])
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(
            f"must be one positive size or one per spatial axis, comma separated, with an "
            f"optional unit ({EXAMPLES}); got {text!r}")
    try:
        unit = unit_name(match["unit"]) if match["unit"] else None
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return values, unit


def origin_arg(text: str) -> tuple[float, ...]:
    """Parse an origin flag: numbers, comma separated (in the image's pixel-size unit)."""
    values = _numbers(text)
    if not values:
        raise argparse.ArgumentTypeError(
            f"must be one number or one per spatial axis, comma separated, in the unit of the "
            f"image's pixel size (such as -1.5,2.25); got {text!r}")
    return values


def add_grid_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that place the images on their grids."""
    group = parser.add_argument_group("images on different grids", textwrap.fill(
        "Images of different pixel size, shape or position are fitted across their grids (the "
        "kernel in reference pixels). Each image's pixel size is its flag's, else its TIFF's "
        "ImageJ or OME metadata; stderr says which was used.", 77, initial_indent="  ",
        subsequent_indent="  ").strip())
    for role in ROLES:
        group.add_argument(f"--{role}-pixel-size", type=pixel_size_arg, metavar="SIZE",
                           help=f"world size of the {role}'s pixels: one number or one per "
                           f"spatial axis (comma separated, array order), with an optional unit "
                           f"({EXAMPLES}); default: the {role} TIFF's metadata")
    group.add_argument("--target-sampling", choices=["area", "point"], default="area",
                       help="how the target's pixels sample the world when the grids differ: "
                       "area (the mean over each pixel's footprint, as a camera; the default) "
                       "or point (the value at its centre); with --reverse, the reference's")
    for role in ROLES:
        group.add_argument(f"--{role}-origin", type=origin_arg, metavar="POS",
                           help=f"world position of the centre of the {role}'s pixel 0 per "
                           "spatial axis, in its pixel size's unit (default: half a pixel, so "
                           "that the images' corners meet at 0): places a target that covers "
                           "part of the reference")


def sizes(args) -> list[PixelSize | None]:
    """The pixel sizes the flags give, per image (None: not given)."""
    out = []
    for role in ROLES:
        given = getattr(args, f"{role}_pixel_size")
        out.append(None if given is None else PixelSize(given[0], given[1], f"--{role}-pixel-size"))
    return out


def origins(args) -> tuple:
    """The origin flags, (reference, target)."""
    return args.reference_origin, args.target_origin


def single_grids(args, paths, reference, target) -> tuple[GridPair, dict]:
    """One pair's grids (flags, else metadata), said on stderr, and the options `fit_blur` needs."""
    flags = sizes(args)
    specs = [flag or read_pixel_size(path) for flag, path in zip(flags, paths)]
    pair = grids_of_sizes(*specs, spatial_axes=args.spatial_axes, sampling=args.target_sampling,
                          reverse=args.reverse, origins=origins(args))
    for role, said in zip(ROLES, pair.said):
        if said:
            print(f"blurfit: {role} pixel size {said}", file=sys.stderr)
    chosen = pair_grids(reference.shape, target.shape, args.spatial_axes, pair)
    if pair.said.count(None) == 1:
        missing = ROLES[pair.said.index(None)]
        print(f"blurfit: the {missing} has no pixel size; it has the other image's shape, so it "
              f"is taken to be on the same grid (give --{missing}-pixel-size if not)",
              file=sys.stderr)
    return pair, chosen


def dataset_options(args) -> dict:
    """`napari_blurfit.dataset.fit_pairs`'s grid options from the flags (flags over metadata)."""
    flags = sizes(args)
    return {"reference_grid": flags[0] or "metadata", "target_grid": flags[1] or "metadata",
            "target_sampling": args.target_sampling, "reference_origin": args.reference_origin,
            "target_origin": args.target_origin}


def record(args) -> dict:
    """The grid flags given, for the run's recorded options (none given: nothing recorded)."""
    given = {"reference_pixel_size": args.reference_pixel_size,
             "target_pixel_size": args.target_pixel_size,
             "target_sampling": None if args.target_sampling == "area" else args.target_sampling,
             "reference_origin": args.reference_origin, "target_origin": args.target_origin}
    return {k: v for k, v in given.items() if v is not None}


def any_sizes(args, pairs) -> bool:
    """Whether any pair may have pixel sizes (flags, or an input's metadata): CSV columns for them."""
    if args.reference_pixel_size or args.target_pixel_size:
        return True
    for path in (p for pair in pairs for p in pair):
        try:
            if read_pixel_size(path) is not None:
                return True
        except ValueError:  # an unknown unit: that pair reports it
            return True
    return False


def report_dataset(results) -> None:
    """Say on stderr which pixel sizes the pairs used, by how many pairs each."""
    seen = Counter(r.grids.said for r in results if r.grids is not None and r.grids.said != (None, None))
    for said, count in seen.most_common(5):
        parts = [f"{role} {text}" for role, text in zip(ROLES, said) if text]
        print(f"blurfit: pixel sizes of {count} pair(s): {'; '.join(parts)}", file=sys.stderr)
    if len(seen) > 5:
        print(f"blurfit: ... and {len(seen) - 5} other combination(s) of pixel sizes", file=sys.stderr)
