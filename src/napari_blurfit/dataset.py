"""Fit many image pairs: one result per pair and one sigma fitted jointly over all of them.

One unreadable or degenerate pair is reported and skipped; it never aborts the batch. The joint fit
reuses the pairs already read while they fit a memory budget; beyond it, it reads them lazily
through dask, so its memory does not grow with the number of pairs.
"""

from __future__ import annotations

import csv
import glob
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._result import BlurFit
from .fit import fit_blur
from .io import read_image


@dataclass
class PairResult:
    """One pair's outcome: a fit, or the reason it was skipped."""

    reference: str
    target: str
    fit: BlurFit | None = None
    error: str | None = None


@dataclass
class DatasetFit:
    """Per-pair results and the joint fit (None if no pair could be used)."""

    pairs: list[PairResult]
    joint: BlurFit | None
    notes: list[str] = field(default_factory=list)

    @property
    def n_failed(self) -> int:
        """Pairs that were skipped."""
        return sum(p.error is not None for p in self.pairs)


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def find_pairs(reference: str, target: str) -> list[tuple[Path, Path]]:
    """Pairs from two files, two folders (matched by file name) or two glob patterns.

    Globs are matched by file name when the names coincide, otherwise in sorted order.
    """
    ref, tgt = Path(reference), Path(target)
    if ref.is_dir() and tgt.is_dir():
        refs = {p.name: p for p in sorted(ref.iterdir()) if p.is_file()}
        tgts = {p.name: p for p in sorted(tgt.iterdir()) if p.is_file()}
        common = sorted(set(refs) & set(tgts))
        if not common:
            raise ValueError(f"no file name is in both {ref} and {tgt}")
        return [(refs[n], tgts[n]) for n in common]
    if _has_magic(reference) or _has_magic(target):
        refs = [Path(p) for p in sorted(glob.glob(reference))]
        tgts = [Path(p) for p in sorted(glob.glob(target))]
        if not refs or not tgts:
            empty = reference if not refs else target
            raise ValueError(f"the pattern {empty!r} matches no file")
        by_name = {p.name: p for p in tgts}
        if all(p.name in by_name for p in refs) and len(refs) == len(tgts):
            return [(p, by_name[p.name]) for p in refs]
        if len(refs) != len(tgts):
            raise ValueError(f"{len(refs)} reference and {len(tgts)} target files; the patterns "
                             "must match the same number of files (or the same file names)")
        return list(zip(refs, tgts))
    return [(ref, tgt)]


def read_pairs_csv(path) -> list[tuple[Path, Path]]:
    """Pairs from a CSV with columns ``reference,target`` (header optional; paths relative to it)."""
    path = Path(path)
    rows = [r for r in csv.reader(path.read_text().splitlines()) if r and any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["reference", "target"]:
        rows = rows[1:]
    pairs = []
    for i, row in enumerate(rows, 1):
        if len(row) < 2:
            raise ValueError(f"{path}: row {i} needs two columns (reference, target)")
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
        Show a progress bar (tqdm, on stderr).
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
    """
    from tqdm.auto import tqdm

    results, usable = [], []
    held: list | None = [] if joint else None  # the pairs' pixels, while within held_bytes
    held_total = 0
    options = {"warn": False, **options}
    for ref_path, tgt_path in tqdm(pairs, disable=not progress, desc="pairs", unit="pair"):
        item = PairResult(str(ref_path), str(tgt_path))
        try:
            a, b = read_image(ref_path), read_image(tgt_path)
            item.fit = fit_blur(a, b, **options)
            usable.append(_Usable(ref_path, tgt_path, a.shape, a.dtype, b.dtype))
            if held is not None:
                held.append((a, b))
                held_total += a.nbytes + b.nbytes
                if held_total > held_bytes:
                    held = None
        except (OSError, ValueError, TypeError) as err:
            item.error = f"{type(err).__name__}: {err}"
        results.append(item)
    notes = [f"skipped {r.reference} / {r.target}: {r.error}" for r in results if r.error]
    joint_fit = None
    if joint and usable:
        joint_fit, note = _joint_fit(usable, held, options)
        if note:
            notes.append(note)
    return DatasetFit(results, joint_fit, notes)


@dataclass
class _Usable:
    reference: Path
    target: Path
    shape: tuple
    ref_dtype: object
    tgt_dtype: object


def _joint_fit(usable, held, options):
    """One sigma over all usable pairs of the commonest shape.

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
    return fit_blur(refs, tgts, spatial_axes=axes, **options), note
