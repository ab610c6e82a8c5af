"""Fit many image pairs: one result per pair and one sigma fitted jointly over all of them.

One unreadable or degenerate pair is reported and skipped; it never aborts the batch. The joint fit
reuses the pairs already read while they fit a memory budget; beyond it, it reads them lazily
through dask, so its memory does not grow with the number of pairs.
"""

from __future__ import annotations

import csv
import glob
import inspect
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ._losses import LOSSES
from ._result import BlurFit
from ._spread import joint_spread
from .fit import fit_blur
from .io import READABLE, read_image


@dataclass
class PairResult:
    """One pair's outcome: a fit, or the reason it was skipped."""

    reference: str
    target: str
    fit: BlurFit | None = None
    error: str | None = None


@dataclass
class DatasetFit:
    """Per-pair results and the joint fit (None if no pair could be used).

    ``n_joint`` is the number of pairs the joint fit used (the usable pairs of the commonest
    shape). ``notes`` hold findings about the dataset as a whole; why a pair was skipped is in
    that pair's ``error`` only. When the pairs' own sigmas disagree with one joint sigma, the
    joint fit carries a ``joint_spread`` finding (its text is also in ``notes``) and its
    ``sigma_stderr`` takes in the spread between pairs.
    """

    pairs: list[PairResult]
    joint: BlurFit | None
    notes: list[str] = field(default_factory=list)
    n_joint: int = 0

    @property
    def n_failed(self) -> int:
        """Pairs that were skipped."""
        return sum(p.error is not None for p in self.pairs)


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


@dataclass
class PairMatch:
    """Pairs found from two folders or globs, and the files left without a partner."""

    pairs: list[tuple[Path, Path]]
    unmatched: list[Path] = field(default_factory=list)


def _image_files(folder: Path) -> list[Path]:
    """Image files (by suffix) directly inside ``folder``, sorted; hidden files are ignored."""
    return [p for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in READABLE]


def _by_stem(files: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for p in files:
        groups.setdefault(p.stem, []).append(p)
    return groups


def _match_stems(refs: list[Path], tgts: list[Path], what: tuple[str, str]) -> PairMatch:
    """Pair files whose stems are equal (``a.tif`` with ``a.png``); refuse an ambiguous stem.

    A stem is ambiguous when two files on one side share it and the other side has it too.
    """
    ref_groups, tgt_groups = _by_stem(refs), _by_stem(tgts)
    common = sorted(set(ref_groups) & set(tgt_groups))
    for stem in common:
        for side, groups in zip(what, (ref_groups, tgt_groups)):
            if len(groups[stem]) > 1:
                names = ", ".join(p.name for p in groups[stem])
                raise ValueError(f"{side} has {len(groups[stem])} files named {stem!r} ({names}); "
                                 "files are paired by name without extension, so keep one of them")
    pairs = [(ref_groups[s][0], tgt_groups[s][0]) for s in common]
    unmatched = [p for p in refs + tgts if p.stem not in common]
    return PairMatch(pairs, unmatched)


def _match_folders(ref: Path, tgt: Path) -> PairMatch:
    match = _match_stems(_image_files(ref), _image_files(tgt), (f"folder {ref}", f"folder {tgt}"))
    if not match.pairs:
        raise ValueError(f"no image file name (without extension) is in both {ref} and {tgt}")
    return match


def _match_globs(reference: str, target: str) -> PairMatch:
    refs = [Path(p) for p in sorted(glob.glob(reference)) if Path(p).is_file()]
    tgts = [Path(p) for p in sorted(glob.glob(target)) if Path(p).is_file()]
    if not refs or not tgts:
        empty = reference if not refs else target
        raise ValueError(f"the pattern {empty!r} matches no file")
    if {p.stem for p in refs} & {p.stem for p in tgts}:
        return _match_stems(refs, tgts, (f"pattern {reference!r}", f"pattern {target!r}"))
    if len(refs) != len(tgts):
        raise ValueError(f"{len(refs)} reference and {len(tgts)} target files and no file name in "
                         "common; the patterns must match the same number of files (paired in "
                         "sorted order) or files with the same names")
    return PairMatch(list(zip(refs, tgts)))


def match_pairs(reference: str, target: str) -> PairMatch:
    """Pairs from two files, two folders or two glob patterns, with the files left unpaired.

    Parameters
    ----------
    reference, target : str
        Two files, two folders, or two glob patterns.

    Returns
    -------
    PairMatch
        ``pairs``: (reference, target) paths; ``unmatched``: files with no partner.

    Notes
    -----
    Folders: image files (TIFF, PNG/JPEG, ``.npy``) are paired by name without extension, so
    ``camera.tif`` pairs with ``camera.png``; two files with the same such name on one side are
    refused (`ValueError`). Globs: paired by name without extension when any names coincide,
    otherwise in sorted order (the patterns must then match equally many files).
    """
    ref, tgt = Path(reference), Path(target)
    if ref.is_dir() and tgt.is_dir():
        return _match_folders(ref, tgt)
    if ref.is_dir() != tgt.is_dir() and not (_has_magic(reference) or _has_magic(target)):
        folder, other = (ref, tgt) if ref.is_dir() else (tgt, ref)
        raise ValueError(f"{folder} is a folder but {other} is not; give two files or two folders")
    if _has_magic(reference) or _has_magic(target):
        return _match_globs(reference, target)
    return PairMatch([(ref, tgt)])


def find_pairs(reference: str, target: str) -> list[tuple[Path, Path]]:
    """Pairs from two files, two folders or two glob patterns (see `match_pairs`).

    Parameters
    ----------
    reference, target : str
        Two files, two folders (paired by file name without extension), or two glob patterns.

    Returns
    -------
    list of (Path, Path)
    """
    return match_pairs(reference, target).pairs


def _is_header(row: list[str], folder: Path) -> bool:
    """A first row is a header when its cells are column names, not files.

    It is a header when neither of its first two cells is an existing file and neither ends in an
    image extension (``reference,target``, ``sharp, blurred``, ``gt,pred`` ...).
    """
    cells = [c.strip() for c in row[:2]]
    if len(cells) < 2:
        return False
    for cell in cells:
        path = Path(cell)
        if (path if path.is_absolute() else folder / path).is_file():
            return False
        if path.suffix.lower() in READABLE:
            return False
    return True


def read_pairs_csv(path) -> list[tuple[Path, Path]]:
    """Pairs from a CSV of ``reference,target`` paths (paths relative to the CSV's folder).

    Parameters
    ----------
    path : str or Path
        The CSV file. An optional first row of column names (``reference,target`` or any names
        that are not files) is recognised and skipped; blank rows are ignored.

    Returns
    -------
    list of (Path, Path)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    lines = path.read_text().splitlines()
    rows = [(i, r) for i, r in enumerate(csv.reader(lines), 1) if r and any(c.strip() for c in r)]
    if rows and _is_header(rows[0][1], path.parent):
        rows = rows[1:]
    pairs = []
    for i, row in rows:
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path}: line {i} needs two columns (reference, target), got {row!r}")
        pairs.append(tuple(p if p.is_absolute() else path.parent / p
                           for p in (Path(row[0].strip()), Path(row[1].strip()))))
    if not pairs:
        raise ValueError(f"{path} lists no pairs")
    return pairs


HELD_BYTES = 2**30  # pixels of all pairs kept in memory for the joint fit, at most


def fit_pairs(pairs, *, progress: bool = False, joint: bool = True, held_bytes: int = HELD_BYTES,
              **options) -> DatasetFit:
    """Fit every pair, skipping bad ones, then one sigma jointly over the usable pairs.

    Parameters
    ----------
    pairs : sequence of (path, path)
        Reference and target files.
    progress : bool
        Show progress bars on stderr (tqdm): one over the pairs, one over the joint fit's steps.
    joint : bool
        Also fit one sigma over all usable pairs of the most common shape.
    held_bytes : int
        Memory for the joint fit's pixels: datasets up to this size are kept from the per-pair
        pass and fitted in memory (each file read once); larger ones are read lazily, pair by
        pair, on every pass of the joint fit (L2: one pass; L1/Huber: one per evaluation).
    **options
        Passed to `napari_blurfit.fit_blur` for each pair and for the joint fit.

    Returns
    -------
    DatasetFit

    Notes
    -----
    The joint fit's own error bar measures how well the pooled pixels pin one sigma, not whether
    the pairs share it. When the pairs' own sigmas spread by more than their errors and by more
    than 5% of the joint sigma, the joint `BlurFit` gets a ``joint_spread`` finding (range,
    spread, the outlying pairs) and its ``sigma_stderr`` adds the standard error of the pairs'
    mean sigma, ``spread / sqrt(n)``.
    """
    from tqdm.auto import tqdm

    _check_options(options)
    results, usable = [], []
    held: list | None = [] if joint else None  # the pairs' pixels, while within held_bytes
    held_total = 0
    options = {"warn": False, **options}
    for ref_path, tgt_path in tqdm(pairs, disable=not progress, desc="pairs", unit="pair"):
        item = PairResult(str(ref_path), str(tgt_path))
        try:
            a, b = read_image(ref_path), read_image(tgt_path)
            item.fit = fit_blur(a, b, **options)
            usable.append(_Usable(ref_path, tgt_path, a.shape, a.dtype, b.dtype, item))
            if held is not None:
                held.append((a, b))
                held_total += a.nbytes + b.nbytes
                if held_total > held_bytes:
                    held = None
        except (OSError, ValueError, TypeError) as err:
            item.error = f"{type(err).__name__}: {err}"
        results.append(item)
    notes: list[str] = []
    joint_fit, n_joint = None, 0
    if joint and usable:
        try:
            with steps_bar("joint fit", disable=not progress, then=options.get("callback")) as step:
                joint_fit, used, note = _joint_fit(usable, held, {**options, "callback": step})
            n_joint = len(used)
            joint_fit = _with_spread(joint_fit, [usable[i].result for i in used])
        except (OSError, ValueError, TypeError) as err:
            note = f"the joint fit failed: {type(err).__name__}: {err}"
        if note:
            notes.append(note)
        if joint_fit is not None:
            notes += [f.text for f in joint_fit.findings if f.code == "joint_spread"]
    return DatasetFit(results, joint_fit, notes, n_joint)


@contextmanager
def steps_bar(desc: str, *, disable: bool = False, then=None):
    """One tqdm bar on stderr that counts a fit's steps and shows the current one.

    Yields a ``callback(stage)`` for `napari_blurfit.fit_blur`: each call advances the bar by one
    step, shows ``stage`` after ``desc``, then calls ``then(stage)`` if given.
    """
    from tqdm.auto import tqdm

    with tqdm(desc=desc, disable=disable, bar_format="{desc}: {n_fmt} steps [{elapsed}{postfix}]") as bar:
        def step(stage: str) -> None:
            bar.set_postfix_str(stage, refresh=False)
            bar.update()
            if then is not None:
                then(stage)
        yield step


def _labels(results: list[PairResult]) -> list[str]:
    """A short name per pair for messages: the target's file name (its path if names repeat)."""
    names = [Path(r.target).name for r in results]
    return names if len(set(names)) == len(names) else [r.target for r in results]


def _with_spread(joint: BlurFit, group: list[PairResult]) -> BlurFit:
    """``joint`` with the ``joint_spread`` finding and error bar when the pairs' sigmas disagree.

    ``group``: the pairs the joint fit used.
    """
    # the joint fit compared a sample of its frames already: the pairs' own fits, all of them and
    # named, replace that finding (and its error bar the joint fit's own)
    frames = next((f for f in joint.findings if f.code == "joint_spread"), None)
    own = frames.values["own_stderr"] if frames else joint.sigma_stderr
    kept = tuple(f for f in joint.findings if f.code != "joint_spread")
    spread = joint_spread([r.fit.sigma for r in group], [r.fit.sigma_stderr for r in group],
                          joint.sigma, own, _labels(group), items="pairs")
    found = kept + ((spread.finding,) if spread.finding else ())
    return replace(joint, findings=found, sigma_stderr=tuple(float(v) for v in spread.stderr))


def _check_options(options: dict) -> None:
    """Refuse options `fit_blur` does not take, before any file is read.

    Without this check a misspelt option would fail every pair and be reported as skipped pairs.
    """
    params = inspect.signature(fit_blur).parameters
    allowed = set(params) - {"reference", "target"}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(options) - allowed)
    if unknown and not takes_any:
        raise TypeError(f"fit_pairs got unknown option(s) {', '.join(unknown)}; it takes "
                        f"progress, joint, held_bytes and fit_blur's options: {', '.join(sorted(allowed))}")
    loss = options.get("loss", "l2")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}; got {loss!r}")


@dataclass
class _Usable:
    reference: Path
    target: Path
    shape: tuple
    ref_dtype: object
    tgt_dtype: object
    result: PairResult


def _joint_fit(usable, held, options):
    """One sigma over the usable pairs of the commonest shape: (fit, their indices, note or None).

    In memory from ``held`` (the pairs' pixels, in ``usable`` order) if given, else read lazily
    via dask.
    """
    import dask
    import dask.array as da

    shapes = Counter(u.shape for u in usable)
    shape, count = shapes.most_common(1)[0]
    note = None
    if len(shapes) > 1:
        note = (f"pairs have {len(shapes)} different shapes; the joint fit uses the {count} "
                f"pairs of shape {shape}")
    if held is not None:
        group = [pair for u, pair in zip(usable, held) if u.shape == shape]
        refs, tgts = np.stack([a for a, _ in group]), np.stack([b for _, b in group])
    else:
        group = [u for u in usable if u.shape == shape]
        read = dask.delayed(read_image, pure=True)
        refs = da.stack([da.from_delayed(read(u.reference), shape, dtype=u.ref_dtype) for u in group])
        tgts = da.stack([da.from_delayed(read(u.target), shape, dtype=u.tgt_dtype) for u in group])
    options = dict(options)
    spatial = options.pop("spatial_axes", None)  # axes of one image; the stack adds axis 0
    axes = (tuple(range(1, 1 + len(shape))) if spatial is None
            else tuple(a % len(shape) + 1 for a in spatial))
    used = [i for i, u in enumerate(usable) if u.shape == shape]
    return fit_blur(refs, tgts, spatial_axes=axes, **options), used, note
