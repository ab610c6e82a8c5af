"""How ``blurfit`` runs many pairs (`napari_blurfit.cli`): where, and what it writes as they finish.

Each pair's result is printed (a text line, or one JSON Lines record) and appended to ``--csv``
as soon as it is known, so a killed run leaves every finished pair behind, each row whole;
``--resume`` reads that CSV back and fits only the pairs it lacks. Which run wrote a CSV is kept
beside it (`options_path`), so a resume with other options is refused rather than mixed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from ._cli_output import CsvRows, clean, fit_json, fit_row, read_csv_rows, size_json
from ._finding import Vocabulary
from ._summary import axis_names, sigma_parts, summary_lines
from .dataset import DatasetFit, EarlierFit, PairResult

JOINT = "JOINT"  # the reference column of the joint fit's row


@contextmanager
def cluster(scheduler: str | None, workers: int | None):
    """The client ``--scheduler``/``--workers`` ask for (closed afterwards), else False."""
    if scheduler is None and workers is None:
        yield False  # in process, even if a client were active
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("--workers and --scheduler need dask.distributed: pip install distributed "
                         "(or napari-blurfit[dask])") from None
    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as local, Client(local) as client:
        yield client


# ---------------------------------------------------------------- --resume


def options_path(csv_path) -> Path:
    """Where the options of the run that writes ``csv_path`` are kept."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.name + ".options.json")


def _plain_json(value):
    """``value`` as JSON reads it back (tuples as lists), for comparing options."""
    return json.loads(json.dumps(value))


@dataclass
class Resumed:
    """What an interrupted run's CSV holds: the pairs fitted, by index, and its columns."""

    earlier: dict[int, EarlierFit] = field(default_factory=dict)
    sharper: int = 0  # earlier pairs whose target looked sharper
    columns: list[str] | None = None


def _number(text: str) -> float:
    """A CSV cell as a number (blank: NaN, as an error bar not worth printing)."""
    return float(text) if text else math.nan


def _earlier_fit(row: dict, d: int) -> EarlierFit:
    """A CSV row as the pair's `EarlierFit`."""
    if row.get("error"):
        return EarlierFit(None, None, row["error"])
    names = axis_names(d)
    return EarlierFit(tuple(_number(row[f"sigma_{n}"]) for n in names),
                      tuple(_number(row[f"stderr_{n}"]) for n in names))


def _check_columns(path, columns: list[str]) -> int:
    """Refuse a CSV blurfit did not write; the number of spatial axes its columns name."""
    d = sum(c.startswith("sigma_") for c in columns)
    ours = columns[:2] == ["reference", "target"] and columns[-1] == "error"
    if not ours or (d == 0 and len(columns) > 3):
        raise ValueError(f"--resume: the columns of {path} ({', '.join(columns)}) are not those "
                         "blurfit --csv writes; give the CSV of the interrupted run")
    return d


def _check_options(path, record: dict, words: Vocabulary) -> None:
    """Refuse to resume a CSV written with other options (or whose options are unknown)."""
    kept = options_path(path)
    if not kept.is_file():
        raise ValueError(f"--resume: {kept} is missing, so the options {path} was written with "
                         "are unknown; run without --resume to start again")
    then = json.loads(kept.read_text())["options"]
    now = _plain_json(record)
    differ = sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k))
    if differ:
        said = ", ".join(f"{words.names.get(k, k)} {then.get(k)!r} then, {now.get(k)!r} now"
                         for k in differ)
        raise ValueError(f"--resume: {path} was written with other options ({said}); rerun "
                         "with the same options, or without --resume to start again")


def read_resume(path, labels: list[tuple[str, str]], record: dict, words: Vocabulary) -> Resumed:
    """The pairs an interrupted run wrote to ``path`` (missing or empty: none).

    ``labels``: (reference, target) as this run names its pairs; ``record``: its options. The
    joint fit's row and a row cut short by the kill are dropped from the file (rewritten whole,
    then moved into place), so the rows kept are each pair at most once.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return Resumed()
    _check_options(path, record, words)
    columns, rows, whole = read_csv_rows(path)
    if columns is None:
        return Resumed()
    d = _check_columns(path, columns)
    index = {label: i for i, label in enumerate(labels)}
    kept = [row for row in rows if row["reference"] != JOINT]
    resumed = Resumed(columns=columns)
    for row in kept:
        i = index.get((row["reference"], row["target"]))
        if i is None or i in resumed.earlier:
            why = "is not among this run's pairs" if i is None else "is in it twice"
            raise ValueError(f"--resume: the pair {row['reference']}, {row['target']} of {path} "
                             f"{why}; resume with the same inputs and an unedited CSV")
        resumed.earlier[i] = _earlier_fit(row, d)
        resumed.sharper += row.get("target_sharper") == "True"
    if len(kept) < len(rows) or not whole:
        _rewrite(path, columns, kept)
    return resumed


def _rewrite(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Replace ``path`` by these rows in one step (a kill leaves the old file or the new one)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    with CsvRows(temporary, columns) as out:
        for row in rows:
            out.write(row)
    os.replace(temporary, path)


def write_options(path, record: dict) -> None:
    """Keep the options of the run that writes the CSV ``path`` beside it.

    Not for a CSV that is no regular file (``/dev/stdout``): such a run cannot be resumed.
    """
    if Path(path).exists() and not Path(path).is_file():
        return
    options_path(path).write_text(json.dumps({"blurfit": __version__,
                                              "options": _plain_json(record)}, indent=1) + "\n")


# ---------------------------------------------------------------- results as they finish


def _sigma_text(fit) -> str:
    """``sigma = 2.5 px +/- 0.012 (all axes: y, x)`` or ``sigma_y = 2.52 px +/- 0.01, sigma_x = ...``."""
    return ", ".join(f"{label} = {value}" for label, value in sigma_parts(fit))


class ManyOutput:
    """Where a dataset's results go as they arrive: stdout (text or JSON Lines) and ``--csv``.

    Parameters
    ----------
    out : object with ``show(text)``
        Standard output.
    words : Vocabulary
        The command's flag words for notes and messages.
    as_json : bool
        JSON Lines: one record per pair, then the joint fit's (reference ``JOINT``).
    csv_path : str or None
        The CSV to append rows to.
    resumed : Resumed
        The rows already in it (``--resume``).
    sizes : bool
        Whether pairs may have pixel sizes: every CSV row gets their columns (blank if none).
    """

    def __init__(self, out, words: Vocabulary, *, as_json: bool, csv_path, resumed: Resumed,
                 sizes: bool = False):
        self.out, self.words, self.as_json, self.csv_path = out, words, as_json, csv_path
        self.sizes = sizes
        self.write_failed = False
        self.rows = None
        if csv_path:
            self.rows = self._guarded(lambda: CsvRows(csv_path, resumed.columns,
                                                      append=resumed.columns is not None))

    def _guarded(self, write):
        """Run a CSV write; the first failure is said once and ends the CSV (printing goes on)."""
        if self.write_failed:
            return None
        try:
            return write()
        except (OSError, ValueError) as err:
            print(f"blurfit: error: could not write --csv {self.csv_path}: {err} (the results "
                  "are printed)", file=sys.stderr)
            self.write_failed = True
            self.rows = None
            return None

    def _row(self, row: dict) -> None:
        if self.rows is not None:
            self._guarded(lambda: self.rows.write(row))

    def pair(self, index: int, result: PairResult) -> None:
        """One pair's result, as it finishes."""
        error = None if result.error is None else self.words.text(result.error)
        if self.as_json:
            self.out.show(json.dumps({"reference": result.reference, "target": result.target,
                                      "fit": fit_json(result.fit, self.words) if result.fit else None,
                                      "error": error, **size_json(result.fit, result.grids)}))
        elif result.fit is None:
            self.out.show(f"{result.target}: SKIPPED ({error})")
        else:
            self.out.show("\n".join([f"{result.target}: {_sigma_text(result.fit)}, "
                                     f"loss = {result.fit.loss:.6g}"]
                                    + [f"    note: {self.words.finding(f)}"
                                       for f in result.fit.findings]))
        row = fit_row(result.fit, self.words, result.grids, self.sizes) if result.fit else {}
        self._row({"reference": result.reference, "target": result.target, **row, "error": error or ""})

    def finish(self, result: DatasetFit, options: dict) -> None:
        """The joint fit (printed, and the CSV's last row), then the CSV closed."""
        joint = result.joint
        notes = [self.words.text(n) for n in result.notes]
        tried = joint is not None or result.joint_error is not None
        error = None if joint else self.words.text(result.joint_error or "")
        head = {"reference": JOINT, "target": f"{result.n_joint} pairs"}
        if self.as_json and tried:
            self.out.show(json.dumps(clean({
                **head, "fit": fit_json(joint, self.words) if joint else None, "error": error,
                "joint_pairs": result.n_joint, "pairs": len(result.pairs), "notes": notes,
                "options": options})))
        elif not self.as_json:
            self._print_joint(result, notes)
        if tried:
            row = fit_row(joint, self.words, None, self.sizes) if joint else {}
            self._row({**head, **row, "error": error or ""})
        if self.rows is not None:
            self._guarded(self.rows.close)

    def _print_joint(self, result: DatasetFit, notes: list[str]) -> None:
        lines = []
        joint_notes = set(result.joint.notes) if result.joint else set()
        if result.joint:  # its findings (the pairs' spread among them) are its notes
            n_total = len(result.pairs)
            lines += [f"\njoint fit over {result.n_joint} pair(s)"
                      + (f" of {n_total}" if result.n_joint < n_total else "") + ":"]
            lines += summary_lines(result.joint, self.words)
        lines += [f"note: {text}" for note, text in zip(result.notes, notes) if note not in joint_notes]
        if lines:
            self.out.show("\n".join(lines))
