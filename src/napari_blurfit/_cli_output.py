"""How the ``blurfit`` command writes results: JSON text, CSV rows (`napari_blurfit.cli`)."""

from __future__ import annotations

import csv
import io
import json
import math

from ._finding import Vocabulary, plain
from ._summary import axis_names, stderr_values


def clean(value):
    """JSON-ready: plain Python (`napari_blurfit._finding.plain`), NaN/inf as None, recursively."""
    value = plain(value)
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def fit_json(fit, words: Vocabulary, curves: bool = False) -> dict:
    """One fit as JSON-ready data: notes in flag words, absurd errors as null.

    ``findings`` keep their code, suggestion (`napari_blurfit.fit_blur` options) and values; their
    text is the note in flag words. The curves (``transfer``, ``profile``) only if ``curves``.
    """
    d = fit.to_dict()
    del d["transfer"]
    d["sigma_stderr"] = stderr_values(fit)
    d["notes"] = [words.finding(f) for f in fit.findings]
    d["findings"] = [{**f, "text": note} for f, note in zip(d["findings"], d["notes"])]
    if curves:
        d["transfer"] = None if fit.transfer is None else fit.transfer.to_dict()
        d["profile"] = fit.profile
    return clean(d)


def json_text(value, width: int = 100, level: int = 0) -> str:
    """``value`` as JSON indented by 2, with short lists and objects on one line.

    A list or object goes on one line when that line fits ``width`` (a list of numbers always:
    a curve is one line), so one pair reads in a screenful.
    """
    line = json.dumps(value)
    if not isinstance(value, (dict, list)) or not value:
        return line
    numbers = isinstance(value, list) and all(
        isinstance(v, (int, float)) or v is None for v in value)
    if numbers or 2 * level + len(line) <= width:
        return line
    pad = "  " * (level + 1)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k)}: {json_text(v, width - len(k) - 4, level + 1)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * level + "}"
    items = [pad + json_text(v, width, level + 1) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + "  " * level + "]"


def options_json(opts: dict, args) -> dict:
    """The `fit_blur` options the run used, JSON-ready (the mask by its file)."""
    return clean({**{k: v for k, v in opts.items() if k not in ("mask", "callback")},
                   "mask": args.mask})


def fit_row(fit, words: Vocabulary) -> dict:
    """One CSV row's fit columns, named by axis as the text output names them (sigma_y, ...)."""
    d = fit_json(fit, words)
    names = axis_names(len(d["sigma"]))
    row = {f"sigma_{n}": s for n, s in zip(names, d["sigma"])}
    row.update({f"stderr_{n}": "" if s is None else s for n, s in zip(names, d["sigma_stderr"])})
    row.update({k: d[k] for k in ("gain", "offset", "loss", "r2", "r2_linear", "reference_noise", "at_bound",
                                  "identifiable", "target_sharper", "angle") if k in d})
    cov = d.get("covariance") or []
    row.update({f"cov_{names[i]}{names[j]}": cov[i][j]
                for i in range(len(cov)) for j in range(i, len(cov))})
    row.update({f"shift_{n}": s for n, s in zip(names, d.get("shift") or [])})
    row["notes"] = " | ".join(d["notes"])
    return row


def write_csv(path, rows: list[dict]) -> None:
    """Rows under a header of every column any row has, in first-seen order."""
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _is_fit_row(row: dict) -> bool:
    return any(k.startswith("sigma_") for k in row)


class CsvRows:
    """A CSV written one row at a time, each row in one write and flushed.

    A run killed at any moment leaves whole rows (a row is one short write to the file). The
    columns are those of the first fitted row (rows of skipped pairs wait for it, so the header
    does not depend on which pair finishes first), or given (``append``: those of the file).
    A later row's columns that the header lacks (a 3D pair among 2D ones) are left out.
    """

    def __init__(self, path, columns: list[str] | None = None, *, append: bool = False):
        self.columns = None
        self.waiting: list[dict] = []
        self.file = open(path, "a" if append else "w", newline="")
        if columns is not None and append:
            self.columns = list(columns)
        elif columns is not None:
            self._start(list(columns))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _line(self, row: dict) -> str:
        text = io.StringIO()
        csv.DictWriter(text, self.columns, restval="", extrasaction="ignore").writerow(row)
        return text.getvalue()

    def _put(self, text: str) -> None:
        self.file.write(text)
        self.file.flush()

    def _start(self, columns: list[str]) -> None:
        self.columns = columns
        self._put(self._line(dict(zip(columns, columns))))  # the header
        for row in self.waiting:
            self._put(self._line(row))
        self.waiting = []

    def write(self, row: dict) -> None:
        """Append one row (or keep it until the columns are known)."""
        if self.columns is None and not _is_fit_row(row):
            self.waiting.append(row)
            return
        if self.columns is None:
            self._start(list(row))
        self._put(self._line(row))

    def close(self) -> None:
        """Write rows still waiting (when no pair was fitted), then close the file."""
        if self.file.closed:
            return
        if self.columns is None and self.waiting:
            self._start(list(dict.fromkeys(k for row in self.waiting for k in row)))
        self.file.close()


def read_csv_rows(path) -> tuple[list[str] | None, list[dict], bool]:
    """A CSV's columns (None if it has none), its whole rows, and whether it ends with a whole row.

    A last line without its line end (a write cut short) is not a row.
    """
    with open(path, newline="") as fh:
        text = fh.read()
    whole = text.endswith("\n")
    if not whole:
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    return reader.fieldnames, rows, whole
