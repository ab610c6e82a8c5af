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
from typing import NamedTuple

import numpy as np

from ._losses import LOSSES
from ._pair_grids import GridPair, pair_grid_specs
from ._result import BlurFit
from ._runner import RETRIES, Outcome, active_client, in_process, load, on_cluster
from ._spread import joint_spread
from .fit import fit_blur
from .io import READABLE


class EarlierFit(NamedTuple):
    """A pair's result from an earlier run (as ``blurfit --resume`` reads it back from a CSV).

    ``sigma`` and ``sigma_stderr`` per spatial axis; ``error`` why the pair was skipped then
    (``sigma`` None).
    """

    sigma: tuple[float, ...] | None
    sigma_stderr: tuple[float, ...] | None = None
    error: str | None = None


@dataclass
class PairResult:
    """One pair's outcome: a fit, or the reason it was skipped."""

    reference: str
    target: str
    fit: BlurFit | None = None
    error: str | None = None
    earlier: EarlierFit | None = None  # fitted by an earlier run, not again (``fit`` is None)
    grids: GridPair | None = None  # the pixel sizes found for it, their unit and source


@dataclass
class DatasetFit:
    """Per-pair results and the joint fit (None if no pair could be used).

    ``n_joint`` is the number of pairs the joint fit used (the usable pairs of the commonest
    shape). ``notes`` hold findings about the dataset as a whole; why a pair was skipped is in
    that pair's ``error`` only. When the pairs' own sigmas disagree with one joint sigma, the
    joint fit carries a ``joint_spread`` finding (its text is also in ``notes``) and its
    ``sigma_stderr`` takes in the spread between pairs. ``joint_error``: why the joint fit
    failed, if it was tried and failed (also in ``notes``).
    """

    pairs: list[PairResult]
    joint: BlurFit | None
    notes: list[str] = field(default_factory=list)
    n_joint: int = 0
    joint_error: str | None = None

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


def fit_pairs(pairs, *, client=None, progress: bool = False, joint: bool = True,
              held_bytes: int = HELD_BYTES, earlier=None, on_pair=None, retries: int = RETRIES,
              reference_grid=None, target_grid=None, target_sampling: str = "area",
              reference_origin=None, target_origin=None, **options) -> DatasetFit:
    """Fit every pair, skipping bad ones, then one sigma jointly over the usable pairs.

    Parameters
    ----------
    pairs : sequence of (path, path) or (ndarray, ndarray)
        Reference and target files (or images in memory).
    client : dask.distributed.Client or False, optional
        Run the pairs as tasks on this cluster. Default: the active client if there is one (as
        ``dask.compute`` would use), else in process; ``False``: in process.
    progress : bool
        Show progress bars on stderr (tqdm): one over the pairs (pairs/s, time left), one over
        the joint fit's steps.
    joint : bool
        Also fit one sigma over all usable pairs of the most common shape.
    held_bytes : int
        Memory for the joint fit's pixels in process: datasets up to this size are kept from
        the per-pair pass and fitted in memory (each file read once); larger ones are read
        lazily, pair by pair, on every pass of the joint fit (L2: one pass; L1/Huber: one per
        evaluation). A joint fit with ``full_covariance`` or ``shift`` needs its pixels in
        memory, here, also with a cluster: up to this size.
    earlier : mapping of int to EarlierFit, optional
        Pairs (by index into ``pairs``) fitted by an earlier run: they are not fitted again;
        the joint fit reads their files and uses their sigmas as if it had fitted them.
    on_pair : callable, optional
        Called as ``on_pair(index, PairResult)`` here, as each pair finishes (in the order they
        finish; not for ``earlier`` pairs), e.g. to write a row.
    retries : int
        On a cluster, how often a pair's task that raised unexpectedly is rerun. Tasks lost
        with a worker are rerun by the scheduler in any case.
    reference_grid, target_grid : Grid, mapping, PixelSize, "metadata" or list, optional
        Where each image's pixels lie (see `napari_blurfit.fit_blur`), for every pair: a `Grid`
        (or mapping), a `napari_blurfit.io.PixelSize` (a size with its unit), ``"metadata"``
        (each file's TIFF pixel size, `napari_blurfit.io.read_pixel_size`; None for a file
        without one), None, or a list of these with one per pair. Sizes in different units are
        converted to the reference's. A pair whose grids and shapes are equal, or whose shapes
        are equal and only one image has a size, is fitted on one grid; a pair whose shapes
        differ while a size is missing is skipped with that error.
    target_sampling : {"area", "point"}
        How the target's pixels sample the world (the reference's with ``reverse``), for grids
        made from pixel sizes (a `Grid` keeps its own).
    reference_origin, target_origin : float or sequence of float, optional
        World position of pixel 0's centre per spatial axis, in that image's pixel-size unit,
        for grids made from pixel sizes (a `Grid` keeps its own ``translate``). Default: half
        a pixel, so that both images' corners are at 0 (one field of view at two pixel sizes).
    **options
        Passed to `napari_blurfit.fit_blur` for each pair and for the joint fit.

    Returns
    -------
    DatasetFit
        Pairs in the input order.

    Notes
    -----
    On a cluster each task reads its own pair on a worker (arrays in memory are scattered to it)
    and at most two tasks per worker thread are in flight, so a worker's memory is about one
    pair's working set per thread. Unless ``workers`` is given, a task's FFTs use one thread:
    the cluster's parallelism is over pairs. The joint fit then runs there too: each pair's
    statistics (or, for L1/Huber and masks, its share of each loss evaluation) are computed by
    a task that reads the pair, and the parts are summed on the workers. Arrays given in memory,
    and a joint fit of a rotated or shifted kernel (``full_covariance``, ``shift``), are fitted
    jointly in process.

    The joint fit's own error bar measures how well the pooled pixels pin one sigma, not whether
    the pairs share it. When the pairs' own sigmas spread by more than their errors and by more
    than 5% of the joint sigma, the joint `BlurFit` gets a ``joint_spread`` finding (range,
    spread, the outlying pairs) and its ``sigma_stderr`` adds the standard error of the pairs'
    mean sigma, ``spread / sqrt(n)``.
    """
    from tqdm.auto import tqdm

    _check_options(options)
    pairs = [tuple(pair) for pair in pairs]
    earlier = _check_earlier(earlier, len(pairs))
    grids = pair_grid_specs(pairs, (reference_grid, target_grid), target_sampling,
                            (reference_origin, target_origin), options)
    client = active_client() if client is None else (client or None)
    options = {"warn": False, **options}
    run = _Run(client, pairs, options, retries, grids)
    results = {i: _earlier_result(pairs[i], i, e, run.grids_of(i)) for i, e in earlier.items()}
    described: dict[int, Outcome] = {}
    held = _Held(held_bytes if joint else 0)
    todo = [i for i in range(len(pairs)) if i not in earlier]
    with tqdm(total=len(pairs), initial=len(earlier), disable=not progress, desc="pairs",
              unit="pair") as bar:
        for i, outcome in run.outcomes(todo, options, held.keep):
            results[i] = _pair_result(pairs[i], i, outcome, run.grids_of(i))
            described[i] = outcome
            bar.update()
            if on_pair is not None:
                on_pair(i, results[i])
    results = [results[i] for i in range(len(pairs))]
    if not joint:
        return DatasetFit(results, None)
    usable = _usable(run, results, described, held)
    return _dataset_fit(results, usable.items, pairs, held, client, options, progress,
                        usable.notes)


# ---------------------------------------------------------------- where each pair runs


class _Run:
    """Where and how each pair is fitted or described: the cluster or here, and its grids."""

    def __init__(self, client, pairs, options, retries, grids):
        self.client, self.pairs, self.retries, self.grids = client, pairs, retries, grids
        self.spatial_axes = options.get("spatial_axes")

    def grids_of(self, i: int) -> GridPair | None:
        """Pair ``i``'s grids (None when none were asked for, or they could not be made)."""
        spec = None if self.grids is None else self.grids[i]
        return spec if isinstance(spec, GridPair) else None

    def outcomes(self, indexes, options, keep):
        """The pairs' outcomes as they finish: on the cluster, or in process."""
        refused = [i for i in indexes if self.grids is not None and isinstance(self.grids[i], str)]
        for i in refused:
            yield i, Outcome(error=self.grids[i])
        indexes = [i for i in indexes if i not in set(refused)]
        where = dict(grids=self.grids, spatial_axes=self.spatial_axes)
        if self.client is None:
            yield from in_process(self.pairs, indexes, options, keep, **where)
        else:
            yield from on_cluster(self.client, self.pairs, indexes, options, retries=self.retries,
                                  **where)


def _check_earlier(earlier, n: int) -> dict:
    """``earlier`` as a dict of `EarlierFit` by pair index; refuse an index out of range."""
    earlier = dict(earlier or {})
    outside = sorted(i for i in earlier if not (isinstance(i, (int, np.integer)) and 0 <= i < n))
    if outside:
        raise ValueError(f"earlier names pair(s) {outside[:5]} but pairs has {n} (indexes 0 to "
                         f"{n - 1})")
    bad = [type(e).__name__ for e in earlier.values() if not isinstance(e, EarlierFit)]
    if bad:
        raise TypeError(f"earlier must map pair indexes to EarlierFit, got {bad[0]}")
    return earlier


def _label(item, i: int, side: str) -> str:
    return f"{side}[{i}]" if isinstance(item, np.ndarray) else str(item)


def _pair_result(pair, i: int, outcome: Outcome, grids: GridPair | None) -> PairResult:
    return PairResult(_label(pair[0], i, "reference"), _label(pair[1], i, "target"),
                      fit=outcome.fit, error=outcome.error, grids=grids)


def _earlier_result(pair, i: int, earlier: EarlierFit, grids: GridPair | None) -> PairResult:
    return replace(_pair_result(pair, i, Outcome(error=earlier.error), grids), earlier=earlier)


class _Held:
    """Pairs' pixels kept in process for the joint fit while they fit a budget of bytes."""

    def __init__(self, budget: int):
        self.budget, self.total, self.pixels = budget, 0, {}

    def keep(self, i: int, a, b) -> None:
        self.total += a.nbytes + b.nbytes
        if self.total > self.budget:
            self.pixels.clear()  # over the budget: the joint fit reads lazily
        else:
            self.pixels[i] = (a, b)

    def fits(self, usable) -> bool:
        """Whether these pairs' pixels fit the budget."""
        return sum(u.nbytes for u in usable) <= self.budget


def _dataset_fit(results, usable, pairs, held, client, options, progress, notes) -> DatasetFit:
    """The per-pair results with the joint fit over ``usable``."""
    joint_fit, n_joint, error = None, 0, None
    if usable:
        try:
            with steps_bar("joint fit", disable=not progress, then=options.get("callback")) as step:
                joint_fit, group, note = _joint_fit(usable, pairs, held, client,
                                                    {**options, "callback": step})
            n_joint = len(group)
            joint_fit = _with_spread(joint_fit, group)
        except (OSError, ValueError, TypeError) as err:
            error = f"{type(err).__name__}: {err}"
            note = f"the joint fit failed: {error}"
        if note:
            notes.append(note)
        if joint_fit is not None:
            notes += [f.text for f in joint_fit.findings if f.code == "joint_spread"]
    return DatasetFit(results, joint_fit, notes, n_joint, error)


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


def _labels(results) -> list[str]:
    """A short name per pair for messages: the target's file name (its path if names repeat)."""
    names = [Path(r.target).name for r in results]
    return names if len(set(names)) == len(names) else [r.target for r in results]


def _with_spread(joint: BlurFit, group: list[_Usable]) -> BlurFit:
    """``joint`` with the ``joint_spread`` finding and error bar when the pairs' sigmas disagree.

    ``group``: the pairs the joint fit used.
    """
    # the joint fit compared a sample of its frames already: the pairs' own fits, all of them and
    # named, replace that finding (and its error bar the joint fit's own)
    frames = next((f for f in joint.findings if f.code == "joint_spread"), None)
    own = frames.values["own_stderr"] if frames else joint.sigma_stderr
    kept = tuple(f for f in joint.findings if f.code != "joint_spread")
    spread = joint_spread([u.sigma for u in group], [u.sigma_stderr for u in group],
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
                        "progress, client, joint, held_bytes, earlier, on_pair, retries and fit_blur's "
                        f"options: {', '.join(sorted(allowed))}")
    loss = options.get("loss", "l2")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}; got {loss!r}")


@dataclass
class _Usable:
    """A pair the joint fit may use: its place, shapes, dtypes and grids, and its own sigma."""

    index: int
    target: str
    shape: tuple
    dtypes: tuple
    sigma: tuple
    sigma_stderr: tuple
    target_shape: tuple | None = None  # None: the reference's
    grids: tuple | None = None  # (reference, target) grids; None: fitted on one grid

    @property
    def shapes(self) -> tuple:
        return self.shape, self.target_shape or self.shape

    @property
    def key(self) -> tuple:
        """What pairs fitted jointly share: shapes and grids."""
        return self.shapes, self.grids

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(shape)) * np.dtype(d).itemsize for shape, d in zip(self.shapes, self.dtypes))


class _UsablePairs(NamedTuple):
    items: list[_Usable]
    notes: list[str]


def _usable(run: _Run, results, described, held) -> _UsablePairs:
    """The fitted pairs with their shapes; pairs fitted earlier are read (described) for it."""
    earlier = [i for i, r in enumerate(results) if r.earlier is not None and r.error is None]
    if earlier:
        described = {**described, **dict(run.outcomes(earlier, None, held.keep))}
    lost = [results[i].target for i in earlier if described[i].error is not None]
    notes = [f"{len(lost)} pair(s) fitted earlier could not be read for the joint fit and are "
             f"left out of it: {', '.join(lost[:5])}{' ...' if len(lost) > 5 else ''}"] if lost else []
    items = []
    for i, r in enumerate(results):
        own, seen = r.fit or r.earlier, described[i]
        if r.error is None and seen.error is None:
            items.append(_Usable(i, r.target, seen.shape, seen.dtypes, own.sigma, own.sigma_stderr,
                                 seen.target_shape, seen.grids))
    return _UsablePairs(items, notes)


def _grids_text(grids: tuple | None) -> str:
    if grids is None:
        return "one grid"
    return " and ".join(f"{role} pixel size {' x '.join(f'{v:.6g}' for v in g.scale)}"
                        for role, g in zip(("reference", "target"), grids))


def _group_note(keys: Counter, key: tuple, count: int) -> str | None:
    """Why some pairs are left out of the joint fit: other shapes, or other grids."""
    if len(keys) == 1:
        return None
    shapes = {k[0] for k in keys}
    grids = {k[1] for k in keys}
    (shape, target_shape), grid = key
    if len(grids) == 1 and shape == target_shape:
        return (f"pairs have {len(shapes)} different shapes; the joint fit uses the {count} "
                f"pairs of shape {shape}")
    shown = f"shape {shape}" if shape == target_shape else f"shapes {shape} and {target_shape}"
    return (f"pairs are on {len(keys)} different grids (pixel sizes or shapes) and one sigma "
            f"needs one: the joint fit uses the {count} pairs of {shown} with {_grids_text(grid)}")


def _joint_fit(usable, pairs, held, client, options):
    """One sigma over the usable pairs of the commonest shapes and grids: (fit, those pairs, note).

    In memory from ``held`` (or read again) while the pairs fit its budget; else read lazily
    via dask, on the cluster when there is one.
    """
    import dask

    keys = Counter(u.key for u in usable)
    key, count = keys.most_common(1)[0]
    note = _group_note(keys, key, count)
    group = [u for u in usable if u.key == key]
    in_memory = [p for u in group for p in pairs[u.index] if isinstance(p, np.ndarray)]
    # a rotated or shifted kernel is fitted on images in memory only: read them here
    whole_gaussian = options.get("full_covariance") or options.get("shift")
    local = client is None or bool(in_memory) or bool(whole_gaussian)
    if local and (all(u.index in held.pixels for u in group) or held.fits(group)):
        refs, tgts = _stacked(group, pairs, held)
    else:
        refs, tgts = _lazy_stack(group, pairs)
    options = dict(options)
    ndim = len(group[0].shape)
    spatial = options.pop("spatial_axes", None)  # axes of one image; the stack adds axis 0
    axes = (tuple(range(1, 1 + ndim)) if spatial is None else tuple(a % ndim + 1 for a in spatial))
    if group[0].grids is not None:
        options.update(reference_grid=group[0].grids[0], target_grid=group[0].grids[1])
    with dask.config.set(scheduler="threads" if local else client):
        return fit_blur(refs, tgts, spatial_axes=axes, **options), group, note


def _stacked(group, pairs, held):
    """The group's pixels stacked in memory (kept ones reused, the others read)."""
    images = [held.pixels.get(u.index) or tuple(map(load, pairs[u.index])) for u in group]
    return np.stack([a for a, _ in images]), np.stack([b for _, b in images])


def _lazy_stack(group, pairs):
    """The group as dask stacks with one pair per block, read where the block is computed."""
    import dask
    import dask.array as da

    read = dask.delayed(load, pure=True)
    return tuple(da.stack([da.from_delayed(read(pairs[u.index][side]), u.shapes[side],
                                           dtype=u.dtypes[side]) for u in group]) for side in (0, 1))
