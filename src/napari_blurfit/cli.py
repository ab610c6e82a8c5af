"""``blurfit``: fit the Gaussian blur between image files from the command line.

Examples
--------
blurfit --sample                                  # the bundled micrograph pair
blurfit sharp.tif blurred.tif --per-axis --json
blurfit sharp.tif blurred.tif --fitted fit.tif --residual residual.tif
blurfit truth/ predictions/ --csv results.csv     # many pairs, matched by file name
blurfit 'gt/*.png' 'out/*.png' --json             # many pairs, by glob
blurfit --pairs pairs.csv                         # many pairs listed in a CSV
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings

from . import __version__
from ._result import BlurFitWarning
from .dataset import find_pairs, fit_pairs, read_pairs_csv
from .fit import fit_blur
from .io import read_image, write_image


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (options mirror `napari_blurfit.fit_blur`)."""
    p = argparse.ArgumentParser(
        prog="blurfit",
        description="Which Gaussian blur turns REFERENCE into TARGET? Fits sigma (per axis if "
        "asked), optionally gain and offset, under an L2, L1 or Huber loss. REFERENCE and TARGET "
        "may be two files, two folders (pairs matched by file name) or two quoted glob patterns.",
        epilog="Reads TIFF, PNG/JPEG and .npy. Exit status: 0 ok, 1 no pair could be fitted, "
        "2 bad input or options.",
    )
    p.add_argument("reference", nargs="?", help="sharp image (or folder / glob)")
    p.add_argument("target", nargs="?", help="image that looks like a blurred reference")
    p.add_argument("--sample", action="store_true", help="use the bundled sample pair")
    p.add_argument("--pairs", metavar="CSV", help="CSV of reference,target paths (many pairs)")
    p.add_argument("--loss", choices=["l2", "l1", "huber"], default="l2")
    p.add_argument("--per-axis", action="store_true", help="one sigma per spatial axis")
    p.add_argument("--gain-offset", action="store_true", help="also fit gain and offset")
    p.add_argument("--mask", metavar="FILE", help="image whose nonzero pixels count in the loss")
    p.add_argument("--spatial-axes", metavar="AXES", help="e.g. -2,-1: other axes are frames")
    p.add_argument("--sigma-min", type=float, default=0.0, metavar="PX")
    p.add_argument("--sigma-max", type=float, default=None, metavar="PX")
    p.add_argument("--exclude-border", type=int, default=0, metavar="PX")
    p.add_argument("--reverse", action="store_true", help="fit reference ~ G * target instead")
    p.add_argument("--huber-delta", type=float, default=None)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--fitted", metavar="FILE", help="write the fitted image (.tif or .npy)")
    p.add_argument("--residual", metavar="FILE", help="write target - fitted (.tif or .npy)")
    p.add_argument("--csv", metavar="FILE", help="many pairs: write per-pair and joint rows")
    p.add_argument("--no-joint", action="store_true", help="many pairs: skip the joint fit")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar for many pairs (default: when stderr is a terminal)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _options(args, parser) -> dict:
    opts = dict(loss=args.loss, per_axis=args.per_axis, gain_offset=args.gain_offset,
                sigma_bounds=(args.sigma_min, args.sigma_max), exclude_border=args.exclude_border,
                reverse=args.reverse, huber_delta=args.huber_delta)
    if args.spatial_axes:
        try:
            opts["spatial_axes"] = tuple(int(a) for a in args.spatial_axes.split(","))
        except ValueError:
            parser.error(f"--spatial-axes must be comma-separated integers, got {args.spatial_axes!r}")
    if args.mask:
        opts["mask"] = read_image(args.mask) != 0
    return opts


def _fit_row(fit) -> dict:
    d = fit.to_dict()
    row = {f"sigma_{i}": s for i, s in enumerate(d["sigma"])}
    row.update({f"stderr_{i}": s for i, s in enumerate(d["sigma_stderr"])})
    row.update({k: d[k] for k in ("gain", "offset", "loss", "at_bound", "identifiable",
                                  "target_sharper")})
    row["notes"] = " | ".join(d["notes"])
    return row


def _single(args, opts, reference, target, names) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BlurFitWarning)  # the notes are printed instead
        fit = fit_blur(reference, target, **opts)
    if args.fitted:
        write_image(args.fitted, fit.fitted(reference, target))
    if args.residual:
        write_image(args.residual, fit.residual(reference, target))
    if args.json:
        print(json.dumps({"reference": names[0], "target": names[1],
                          **json.loads(fit.to_json())}, indent=2))
    else:
        print(f"reference    = {names[0]}\ntarget       = {names[1]}")
        print(fit.summary())
    return 0


def _many(args, opts, pairs) -> int:
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = fit_pairs(pairs, progress=progress, joint=not args.no_joint, **opts)
    if args.csv:
        rows = [{"reference": r.reference, "target": r.target,
                 **(_fit_row(r.fit) if r.fit else {}), "error": r.error or ""}
                for r in result.pairs]
        if result.joint:
            rows.append({"reference": "JOINT", "target": f"{len(pairs) - result.n_failed} pairs",
                         **_fit_row(result.joint), "error": ""})
        fields = list(dict.fromkeys(k for row in rows for k in row))
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    if args.json:
        print(json.dumps({
            "joint": json.loads(result.joint.to_json()) if result.joint else None,
            "pairs": [{"reference": r.reference, "target": r.target,
                       "fit": json.loads(r.fit.to_json()) if r.fit else None, "error": r.error}
                      for r in result.pairs],
            "notes": result.notes,
        }, indent=2))
    else:
        for r in result.pairs:
            if r.fit:
                sig = ", ".join(f"{s:.4g}" for s in r.fit.sigma)
                print(f"{r.target}: sigma=({sig}) loss={r.fit.loss:.6g}")
            else:
                print(f"{r.target}: SKIPPED ({r.error})")
        if result.joint:
            print(f"\njoint fit over {len(pairs) - result.n_failed} pair(s):")
            print(result.joint.summary())
        for note in result.notes:
            print(f"note: {note}")
    return 0 if len(result.pairs) > result.n_failed else 1


def main(argv=None) -> int:
    """Entry point of the ``blurfit`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.sample:
            if args.reference or args.pairs:
                parser.error("--sample takes no REFERENCE/TARGET/--pairs")
            from .sample_data import REFERENCE, TARGET, load_sample_pair

            opts = _options(args, parser)
            ref, tgt = load_sample_pair()
            return _single(args, opts, ref, tgt, (str(REFERENCE.name), str(TARGET.name)))
        if args.pairs:
            if args.reference:
                parser.error("give either REFERENCE TARGET or --pairs, not both")
            pairs = read_pairs_csv(args.pairs)
        elif args.reference and args.target:
            pairs = find_pairs(args.reference, args.target)
        else:
            parser.error("give REFERENCE and TARGET, --pairs CSV, or --sample")
        opts = _options(args, parser)
        if len(pairs) == 1 and not args.pairs:
            if args.csv:
                parser.error("--csv is for many pairs; use --json for one")
            ref_path, tgt_path = pairs[0]
            return _single(args, opts, read_image(ref_path), read_image(tgt_path),
                           (str(ref_path), str(tgt_path)))
        if args.fitted or args.residual:
            parser.error("--fitted/--residual write one pair's images; give a single pair")
        return _many(args, opts, pairs)
    except (OSError, ValueError, TypeError) as err:
        print(f"blurfit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
