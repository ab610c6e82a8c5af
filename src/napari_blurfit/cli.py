"""``blurfit``: fit the Gaussian blur between image files from the command line.

Examples
--------
blurfit --sample                                  # the bundled micrograph pair
blurfit sharp.tif blurred.tif --per-axis --json
blurfit sharp.tif blurred.tif --fitted fit.tif --residual residual.tif
blurfit stack_a.tif stack_b.tif --spatial-axes -2,-1   # one sigma over all frames
blurfit widefield.tif confocal.tif --reverse     # pixel sizes from the TIFFs' metadata
blurfit sr_output.png lowres.png --reference-pixel-size 0.025um --target-pixel-size 0.1um
blurfit truth/ predictions/ --csv results.csv     # many pairs, matched by file name
blurfit 'gt/*.png' 'out/*.png' --json             # many pairs, by glob
blurfit --pairs pairs.csv                         # many pairs listed in a CSV
blurfit truth/ predictions/ --csv out.csv --workers 2   # on 2 local worker processes
blurfit truth/ predictions/ --csv out.csv --resume      # continue an interrupted run

The core (`napari_blurfit.fit_blur`) names its options as Python arguments (``gain_offset=True``);
this command names them as flags (``--gain-offset``): findings from their data (`WORDS`), error
and warning messages with `to_flags`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
import warnings

import numpy as np

from . import __version__, _cli_grids
from ._cli_dataset import ManyOutput, Resumed, cluster, read_resume, write_options
from ._cli_output import clean, fit_json, fit_row, json_text, options_json, size_json, world_lines, write_csv
from ._finding import Vocabulary
from ._summary import summary_lines
from .blurmap import blur_map
from .dataset import fit_pairs, match_pairs, read_pairs_csv, steps_bar
from .fit import fit_blur
from .io import WRITABLE, check_writable, frame_names, read_axes, read_image, spatial_axes_of, write_image

EXIT_OK = 0
EXIT_NO_PAIR = 1
EXIT_USAGE = 2
EXIT_TARGET_SHARPER = 3
EXIT_WRITE_FAILED = 4
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141, as a shell reports a command that SIGPIPE ended

EPILOG = f"""\
Reads TIFF, PNG/JPEG and .npy; --fitted/--residual write float32 .tif or .npy.
Folders are paired by file name without extension (camera.tif with camera.png).
A TIFF whose metadata names channels or time points (ImageJ/OME axes such as CYX, or
RGB samples) is fitted with those axes as frames unless --spatial-axes is given.
--json prints the fit without its curves; --json-curves adds them.

exit status:
  {EXIT_OK}  success
  {EXIT_NO_PAIR}  many pairs: no pair could be fitted
  {EXIT_USAGE}  bad input or options (nothing was fitted)
  {EXIT_TARGET_SHARPER}  the target looks sharper than the reference (files swapped?): pass --reverse
  {EXIT_WRITE_FAILED}  the result was printed, but an output file could not be written
  {EXIT_BROKEN_PIPE}  stdout was closed early (as by `| head`): the rest of the output was
       dropped, output files were still written
"""

#: `napari_blurfit.fit_blur`'s options as this command's flags, and its findings' advice in them
WORDS = Vocabulary(
    names={"loss": "--loss", "per_axis": "--per-axis", "gain_offset": "--gain-offset",
           "full_covariance": "--full-covariance", "shift": "--shift", "mask": "--mask",
           "spatial_axes": "--spatial-axes", "sigma_bounds": "--sigma-min/--sigma-max",
           "exclude_border": "--exclude-border", "reverse": "--reverse", "huber_delta": "--huber-delta",
           "truncate": "--truncate", "reference_noise": "--reference-noise", **_cli_grids.FLAGS},
    advice={("gain_offset", True): "consider --gain-offset",
            ("shift", True): "fit with --shift",
            ("per_axis", True): "use --per-axis",
            ("full_covariance", True): "use --full-covariance",
            ("reverse", True): "refit with --reverse",
            ("reverse", False): "refit without --reverse",
            ("sigma_bounds", None): "widen --sigma-min/--sigma-max",
            ("spatial_axes", None): "use {option}"},
)


def to_flags(text: str) -> str:
    """Reword a message of the library (an error, a warning) for the command line.

    Parameters
    ----------
    text : str
        A message naming `napari_blurfit.fit_blur` arguments, e.g.
        ``"exclude_border=40 leaves no pixels ..."``.

    Returns
    -------
    str
        The same message naming flags, e.g. ``"--exclude-border 40 leaves no pixels ..."``.
    """
    return WORDS.text(text)


def _spatial_axes(text: str) -> tuple[int, ...]:
    """Parse ``--spatial-axes``: ``-2,-1`` -> (-2, -1)."""
    try:
        axes = tuple(int(a) for a in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be 2 or 3 comma-separated integers such as -2,-1; got {text!r}") from None
    if len(axes) not in (2, 3):
        raise argparse.ArgumentTypeError(f"must name 2 or 3 axes (such as -2,-1); got {text!r}")
    return axes


def _positive_int(text: str) -> int:
    """Parse ``--workers``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1; got {text!r}")
    return value


#: flags whose value may start with ``-`` (axes, positions; a negative size, to refuse it in words)
NEGATIVE_VALUES = ("--spatial-axes", "--reference-origin", "--target-origin",
                   "--reference-pixel-size", "--target-pixel-size")


def _join_negative_values(argv: list[str], flags=NEGATIVE_VALUES, parser=None) -> list[str]:
    """``--spatial-axes -2,-1`` -> ``--spatial-axes=-2,-1``.

    argparse reads a value that starts with ``-`` and is not a plain number as an option, so the
    value is attached to its flag (also for unambiguous abbreviations such as ``--spatial``).
    """
    options = [o for a in (parser or build_parser())._actions for o in a.option_strings]
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return out + argv[i:]
        named = [o for o in options if o.startswith(token)] if token.startswith("--") else []
        is_flag = token in flags or (len(named) == 1 and named[0] in flags)
        if is_flag and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (options mirror `napari_blurfit.fit_blur`).

    Returns
    -------
    argparse.ArgumentParser
    """
    p = argparse.ArgumentParser(
        prog="blurfit",
        description=textwrap.fill(
            "Which Gaussian blur turns REFERENCE into TARGET? Fits sigma (per axis if asked), "
            "optionally gain and offset, under an L2, L1 or Huber loss. REFERENCE and TARGET may be "
            "two files, two folders (pairs matched by file name without extension) or two quoted "
            "glob patterns.", 79),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("reference", nargs="?", help="sharp image (or folder / glob)")
    p.add_argument("target", nargs="?", help="image that looks like a blurred reference")
    p.add_argument("--sample", action="store_true", help="use the bundled sample pair")
    p.add_argument("--pairs", metavar="CSV", help="CSV of reference,target paths (many pairs)")
    p.add_argument("--loss", choices=["l2", "l1", "huber"], default="l2",
                   help="what the fit minimises: l2 (squares, the default), l1 (absolute "
                   "values: robust to outliers) or huber (squares near 0, absolute beyond "
                   "--huber-delta)")
    p.add_argument("--per-axis", action="store_true", help="one sigma per spatial axis")
    p.add_argument("--gain-offset", action="store_true", help="also fit gain and offset")
    p.add_argument("--full-covariance", action="store_true",
                   help="fit a rotated, elliptical Gaussian (the whole covariance matrix)")
    p.add_argument("--shift", action="store_true",
                   help="also fit a sub-pixel shift between the images (px)")
    p.add_argument("--mask", metavar="FILE", help="image whose nonzero pixels count in the loss")
    p.add_argument("--spatial-axes", metavar="AXES", type=_spatial_axes,
                   help="e.g. --spatial-axes -2,-1: other axes are frames, fitted jointly")
    p.add_argument("--sigma-min", type=float, default=0.0, metavar="PX",
                   help="smallest sigma searched, px (default 0)")
    p.add_argument("--sigma-max", type=float, default=None, metavar="PX",
                   help="largest sigma searched, px (default: from the image size)")
    p.add_argument("--exclude-border", type=int, default=0, metavar="PX",
                   help="leave this many pixels at each edge out of the loss (default 0)")
    p.add_argument("--reverse", action="store_true", help="fit reference ~ G * target instead")
    p.add_argument("--truncate", type=float, default=4.0, metavar="SIGMAS",
                   help="kernel truncation in sigmas (default 4); a shifted or rotated kernel must "
                        "fit inside the image: 2 * truncate * sigma + 1 px per axis")
    p.add_argument("--huber-delta", type=float, default=None, metavar="DELTA",
                   help="Huber threshold in intensity units (with --loss huber only)")
    p.add_argument("--reference-noise", type=_reference_noise, default="auto", metavar="auto|S|0",
                   help="noise in the reference (the image the blur is applied to): auto "
                   "estimates it from the pair and corrects the fit (default); a number is a "
                   "known noise standard deviation in intensity units; 0: a noise-free reference")
    p.add_argument("--json", action="store_true",
                   help="print JSON: sigma, covariance, shift, gain, offset, r2, notes and "
                   "findings, inputs and options (no curves); many pairs: JSON Lines, one "
                   "object per pair as it finishes, the joint fit's last")
    p.add_argument("--json-curves", action="store_true",
                   help="with --json: add the curves (the transfer function per frequency shell: "
                   "frequency, measured, model, stderr, energy; the loss profile over sigma)")
    p.add_argument("--map-tile", type=int, default=None, metavar="PX",
                   help="fit a blur map instead of one sigma: sigma on tiles of this size (one pair)")
    p.add_argument("--map-overlap", type=float, default=0.5, metavar="F",
                   help="with --map-tile: the share of a tile its neighbour overlaps, in [0, 1)")
    p.add_argument("--map", metavar="FILE",
                   help="with --map-tile: write sigma at every pixel (.tif or .npy; one plane per axis)")
    _cli_grids.add_grid_flags(p)
    p.add_argument("--fitted", metavar="FILE", help="write the fitted image (.tif or .npy)")
    p.add_argument("--residual", metavar="FILE", help="write target - fitted (.tif or .npy)")
    p.add_argument("--csv", metavar="FILE",
                   help="write one row per pair as it finishes, the joint fit's last")
    p.add_argument("--no-joint", action="store_true", help="many pairs: skip the joint fit")
    p.add_argument("--resume", action="store_true",
                   help="many pairs: continue the --csv file of an interrupted run (pairs in it "
                   "are not fitted again; the joint fit uses them all)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, metavar="N",
                       help="many pairs: fit them on a local dask cluster of N processes "
                       "(default: in this process)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="many pairs: fit them on the dask.distributed cluster whose "
                       "scheduler is at ADDRESS (such as tcp://10.0.0.5:8786)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr: one over the pairs and one over the joint "
                   "fit's steps (default: when stderr is a terminal); one pair: one bar over "
                   "the fit's steps (default: off)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


# ---------------------------------------------------------------- options and inputs


def _options(args) -> dict:
    """`fit_blur` keyword arguments from the flags."""
    opts = dict(loss=args.loss, per_axis=args.per_axis, gain_offset=args.gain_offset,
                full_covariance=args.full_covariance, shift=args.shift,
                sigma_bounds=(args.sigma_min, args.sigma_max), exclude_border=args.exclude_border,
                reverse=args.reverse, huber_delta=args.huber_delta, truncate=args.truncate,
                reference_noise=args.reference_noise)
    if args.spatial_axes:
        opts["spatial_axes"] = args.spatial_axes
    if args.mask:
        opts["mask"] = read_image(args.mask) != 0
    return opts


def _reference_noise(text: str):
    """``auto`` or a noise standard deviation >= 0 (argparse type of --reference-noise)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected auto or a noise standard deviation >= 0, got {text!r}")
    return value


def _refuse_unusable_flags(args, parser, many: bool) -> None:
    """Refuse flags that the chosen mode cannot honour (``parser.error``: exit 2)."""
    if args.huber_delta is not None and args.loss != "huber":
        parser.error("--huber-delta applies only with --loss huber")
    if args.resume and not args.csv:
        parser.error("--resume continues the --csv file of an interrupted run; give --csv FILE")
    if not many and _dataset_flags(args):
        parser.error("--resume, --workers and --scheduler run many pairs; give REFERENCE and "
                     "TARGET (files, folders or globs) or --pairs")
    if many and (args.fitted or args.residual):
        parser.error("--fitted/--residual write one pair's images; give a single pair")
    if args.map_tile is None and (args.map or args.map_overlap != 0.5):
        parser.error("--map and --map-overlap need --map-tile")
    if args.map_tile is not None and (many or args.fitted or args.residual or args.csv
                                      or args.json_curves):
        parser.error("--map-tile maps one pair and writes its map with --map; it takes no "
                     "--fitted/--residual/--csv/--json-curves and no more pairs")


def _dataset_flags(args) -> bool:
    """Whether a flag that only a run of many pairs honours is given."""
    return bool(args.resume or args.workers or args.scheduler)


def _check_outputs(args, inputs) -> None:
    """Every output path is writable, distinct and no input: checked before any fitting."""
    outputs = [(flag, path, suffixes) for flag, path, suffixes in
               (("--csv", args.csv, None), ("--fitted", args.fitted, WRITABLE),
                ("--residual", args.residual, WRITABLE), ("--map", args.map, WRITABLE)) if path]
    seen = {}
    for flag, path, suffixes in outputs:
        resolved = check_writable(path, flag, suffixes).resolve()
        if resolved in seen:
            raise ValueError(f"{seen[resolved]} and {flag} both name {path}; give two files")
        if resolved in inputs:
            raise ValueError(f"{flag} {path} would overwrite an input image")
        seen[resolved] = flag


def _write_outputs(writers) -> int:
    """Run ``(flag, path, write)`` jobs after the result is printed; exit status 0 or 4."""
    status = EXIT_OK
    for flag, path, write in writers:
        try:
            write()
        except (OSError, ValueError) as err:
            print(f"blurfit: error: could not write {flag} {path}: {err} (the result is printed "
                  "above)", file=sys.stderr)
            status = EXIT_WRITE_FAILED
    return status


def _sharper_message(n_sharper: int, n_fits: int, joint_sharper: bool, reverse: bool) -> str:
    which = "reference" if reverse else "target"
    other = "target" if reverse else "reference"
    fix = "drop --reverse" if reverse else "pass --reverse (or swap REFERENCE and TARGET)"
    where = "" if n_fits == 1 and not joint_sharper else " in " + " and ".join(
        part for part in (f"{n_sharper} of {n_fits} pair(s)" if n_sharper else "",
                          "the joint fit" if joint_sharper else "") if part)
    return (f"blurfit: the {which} looks sharper than the {other}{where}: the files may be "
            f"swapped; {fix}")


# ---------------------------------------------------------------- one pair and many pairs


class _Stdout:
    """Where the result goes: stdout, until a reader closes it (``blurfit ... | head``).

    Then, as the Python docs advise for SIGPIPE, stdout is pointed at devnull (so that the flush
    at exit cannot fail again) and the rest of the result is dropped; files are still written.
    """

    def __init__(self):
        self.closed = False

    def show(self, text: str) -> None:
        if self.closed:
            return
        try:
            print(text, flush=True)
        except BrokenPipeError:
            self.closed = True
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):  # a stdout without a file descriptor
                pass


def _blur_map(args, opts, reference, target, names, out: _Stdout, pair) -> int:
    """Fit a blur map of one pair, print it (its findings in flag words), then write ``--map``."""
    with steps_bar("blur map", disable=not args.progress) as step:
        m = blur_map(reference, target, tile=args.map_tile, overlap=args.map_overlap, warn=False,
                     callback=step if args.progress else None, **opts)
    if args.json:
        out.show(json_text({"reference": names[0], "target": names[1],
                             "options": {**options_json(opts, args), "tile": args.map_tile,
                                         "overlap": args.map_overlap},
                             "blur_map": clean(m.to_dict()),
                             **size_json(None, pair, m.sigma.shape[-1])}))
    else:
        sigma = m.sigma[np.isfinite(m.sigma)]
        grid = " x ".join(str(n) for n in m.sigma.shape[:-1])
        measured = (f"sigma {sigma.min():.4g} to {sigma.max():.4g} px (median {np.median(sigma):.4g})"
                    if sigma.size else "no tile could be measured")
        lines = [f"reference    = {names[0]}", f"target       = {names[1]}",
                 f"blur map     = {grid} tiles of {' x '.join(map(str, m.tile))} px, {measured}"]
        out.show("\n".join(lines + [f"note: {WORDS.finding(f)}" for f in m.findings]))
    writers = []
    if args.map:
        writers.append(("--map", args.map,
                        lambda: write_image(args.map, np.moveaxis(m.full_resolution(), -1, 0))))
    return _write_outputs(writers)


def _single(args, opts, paths, reference, target, names, out: _Stdout) -> int:
    """Fit one pair across its grids, print it, then write the outputs; returns the exit status."""
    pair, grids = _cli_grids.single_grids(args, paths, reference, target)
    opts = {**opts, **grids}
    if args.map_tile is not None:
        return _blur_map(args, opts, reference, target, names, out, pair)
    with steps_bar("fit", disable=not args.progress) as step:
        fit = fit_blur(reference, target, warn=False,
                       **({**opts, "callback": step} if args.progress else opts))
    if args.json:
        out.show(json_text({"reference": names[0], "target": names[1],
                             "options": options_json(opts, args),
                             **fit_json(fit, WORDS, args.json_curves), **size_json(fit, pair)}))
    else:
        out.show(f"reference    = {names[0]}\ntarget       = {names[1]}\n"
                 + "\n".join(summary_lines(fit, WORDS) + world_lines(fit, pair)))
    writers = []
    if args.fitted:
        writers.append(("--fitted", args.fitted,
                        lambda: write_image(args.fitted, fit.fitted(reference, target))))
    if args.residual:
        writers.append(("--residual", args.residual,
                        lambda: write_image(args.residual, fit.residual(reference, target))))
    if args.csv:
        row = {"reference": names[0], "target": names[1], **fit_row(fit, WORDS, pair), "error": ""}
        writers.append(("--csv", args.csv, lambda: write_csv(args.csv, [row])))
    status = _write_outputs(writers)
    if fit.target_sharper:
        print(_sharper_message(1, 1, False, fit.reverse), file=sys.stderr)
        return status or EXIT_TARGET_SHARPER
    return status


def _many(args, opts, pairs, out: _Stdout) -> int:
    """Fit many pairs, each printed and written as it finishes, then the joint fit; the exit status."""
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    record = {**options_json(opts, args), **_cli_grids.record(args)}
    labels = [(str(a), str(b)) for a, b in pairs]
    resumed = read_resume(args.csv, labels, record, WORDS) if args.resume else Resumed()
    if resumed.earlier:
        print(f"blurfit: --resume: {len(resumed.earlier)} of {len(pairs)} pairs are in {args.csv} "
              f"already; fitting the other {len(pairs) - len(resumed.earlier)}", file=sys.stderr)
    with cluster(args.scheduler, args.workers) as client:  # connected before any file is written
        if args.csv and resumed.columns is None:
            write_options(args.csv, record)
        output = ManyOutput(out, WORDS, as_json=args.json, csv_path=args.csv, resumed=resumed,
                            sizes=_cli_grids.any_sizes(args, pairs))
        result = fit_pairs(pairs, client=client, progress=progress, joint=not args.no_joint,
                           earlier=resumed.earlier, on_pair=output.pair,
                           **_cli_grids.dataset_options(args), **opts)
    _cli_grids.report_dataset(result.pairs)
    output.finish(result, record)
    status = EXIT_WRITE_FAILED if output.write_failed else EXIT_OK
    fits = [r.fit for r in result.pairs if r.fit]
    n_fitted = len(fits) + sum(e.error is None for e in resumed.earlier.values())
    if not n_fitted:
        print("blurfit: error: no pair could be fitted", file=sys.stderr)
        return status or EXIT_NO_PAIR
    n_sharper = sum(f.target_sharper for f in fits) + resumed.sharper
    joint_sharper = bool(result.joint and result.joint.target_sharper)
    if n_sharper or joint_sharper:
        print(_sharper_message(n_sharper, n_fitted, joint_sharper, args.reverse), file=sys.stderr)
        return status or EXIT_TARGET_SHARPER
    return status


# ---------------------------------------------------------------- entry point


def _report_unmatched(unmatched) -> None:
    if unmatched:
        print(f"blurfit: {len(unmatched)} file(s) have no partner of the same name and are not "
              "fitted:\n" + "\n".join(f"  {p}" for p in unmatched), file=sys.stderr)


def _print_warnings(caught) -> None:
    """Warnings the run raised (the core's notes are printed with the result), once each."""
    seen = set()
    for w in caught:
        text = str(w.message)
        if text not in seen:
            seen.add(text)
            print(f"blurfit: warning: {to_flags(text)}", file=sys.stderr)


def _axes_from_metadata(paths) -> tuple[int, ...] | None:
    """The spatial axes the inputs' TIFF metadata gives, said on stderr; None if it gives none.

    A file whose axes name channels, samples or time points (``CYX``, ``ZCYX``, ``YXS``) has
    those axes fitted as frames. Files that disagree are left to ``--spatial-axes`` (said too).
    """
    found: dict[tuple[int, ...], list[str]] = {}
    for path in paths:
        axes = read_axes(path)
        spatial = spatial_axes_of(axes)
        if spatial is not None and axes not in found.setdefault(spatial, []):
            found[spatial].append(axes)
    if len(found) > 1:
        print("blurfit: the TIFF metadata of the inputs give different axes ("
              + ", ".join(a for names in found.values() for a in names)
              + "); every axis is fitted as spatial: pass --spatial-axes to choose", file=sys.stderr)
    if len(found) != 1:
        return None
    ((spatial, names),) = found.items()
    frames = dict.fromkeys(word for axes in names for word in frame_names(axes))
    print(f"blurfit: reading axes {' and '.join(names)} from the TIFF metadata: "
          f"{' and '.join(frames)} are fitted as frames, one sigma over them "
          f"(--spatial-axes {','.join(map(str, spatial))}; pass --spatial-axes to choose)",
          file=sys.stderr)
    return spatial


def _run(args, parser, out: _Stdout) -> int:
    """Resolve inputs, refuse what cannot be honoured, check outputs, then fit."""
    if args.sample:
        if args.reference or args.pairs:
            parser.error("--sample takes no REFERENCE/TARGET/--pairs")
        from .sample_data import REFERENCE, TARGET, load_sample_pair

        _refuse_unusable_flags(args, parser, many=False)
        _check_outputs(args, {REFERENCE.resolve(), TARGET.resolve()})
        opts = _options(args)
        ref, tgt = load_sample_pair()
        return _single(args, opts, (REFERENCE, TARGET), ref, tgt,
                       (str(REFERENCE.name), str(TARGET.name)), out)
    if args.pairs:
        if args.reference:
            parser.error("give either REFERENCE TARGET or --pairs, not both")
        pairs, unmatched = read_pairs_csv(args.pairs), []
    elif args.reference and args.target:
        match = match_pairs(args.reference, args.target)
        pairs, unmatched = match.pairs, match.unmatched
    else:
        parser.error("give REFERENCE and TARGET, --pairs CSV, or --sample")
    many = len(pairs) > 1 or bool(args.pairs) or _dataset_flags(args)
    _refuse_unusable_flags(args, parser, many)
    _check_outputs(args, {p.resolve() for pair in pairs for p in pair})
    if args.spatial_axes is None:
        args.spatial_axes = _axes_from_metadata(p for pair in pairs for p in pair)
    opts = _options(args)
    _report_unmatched(unmatched)
    if not many:
        ref_path, tgt_path = pairs[0]
        return _single(args, opts, (ref_path, tgt_path), read_image(ref_path), read_image(tgt_path),
                       (str(ref_path), str(tgt_path)), out)
    return _many(args, opts, pairs, out)


def main(argv=None) -> int:
    """Entry point of the ``blurfit`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 success, 1 no pair could be fitted, 2 bad input or options, 3 the
        target looks sharper than the reference (pass ``--reverse``), 4 an output could not be
        written (the result was printed), 141 stdout was closed before the result was printed
        (``blurfit ... | head``; output files are still written).
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(_join_negative_values([str(a) for a in argv], parser=parser))
    if args.json_curves and not args.json:
        parser.error("--json-curves adds the curves to --json; pass --json too")
    out = _Stdout()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)  # others keep Python's filters (no deprecations)
        try:
            status = _run(args, parser, out)
        except (OSError, ValueError, TypeError) as err:
            print(f"blurfit: error: {to_flags(str(err))}", file=sys.stderr)
            status = EXIT_USAGE
    _print_warnings(caught)
    return EXIT_BROKEN_PIPE if out.closed else status


if __name__ == "__main__":
    sys.exit(main())
