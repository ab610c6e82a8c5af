"""How the ``blurfit`` command writes results: JSON text, CSV rows (`napari_blurfit.cli`)."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np

from ._finding import Vocabulary, plain
from ._pair_grids import ROLES
from ._summary import axis_names, stderr_values
from .grids import Grid


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
    """The `fit_blur` options the run used, JSON-ready (the mask by its file, grids as dicts)."""
    return clean({**{k: v.to_dict() if isinstance(v, Grid) else v for k, v in opts.items()
                     if k not in ("mask", "callback")}, "mask": args.mask})


# ---------------------------------------------------------------- pixel sizes and world units


def world_sigma(fit, pair) -> dict | None:
    """The fit's sigma in world units and in each image's pixels; None without a pixel size.

    ``pair``: the pair's `napari_blurfit._pair_grids.GridPair`. A fit without grids was made on
    one grid, which both images share: the one pixel size known.
    """
    if pair is None or pair.grids == (None, None):
        return None
    ndim = len(fit.sigma)
    grids = [None if g is None else Grid.of(g, ndim, f"{role}_grid") for g, role in zip(pair.grids, ROLES)]
    if getattr(fit, "grids", None):
        world = fit.in_world_units()["sigma"]
        pixels = [None if g is None else tuple(w / s for w, s in zip(world, g.scale)) for g in grids]
    else:
        world = fit.in_world_units(next(g for g in grids if g is not None).scale)["sigma"]
        pixels = [tuple(fit.sigma)] * 2
    return {"unit": pair.unit, "sigma": list(world), "sigma_reference_px": list(pixels[0]),
            "sigma_target_px": list(pixels[1])}


def size_json(fit, pair, ndim: int | None = None) -> dict:
    """``pixel_size`` (each image's, in ``unit``, and where from) and ``world`` (`world_sigma`).

    Empty when neither image has a pixel size; ``world`` only with a fit. Sizes are per spatial
    axis (``ndim``: the fit's by default; one size given for all is repeated).
    """
    if pair is None or pair.grids == (None, None):
        return {}
    ndim = ndim or (len(fit.sigma) if fit is not None else None)
    sizes = {"unit": pair.unit}
    for role, grid, source in zip(ROLES, pair.grids, pair.sources):
        if grid is not None and ndim:
            grid = Grid.of(grid, ndim, f"{role}_grid")
        sizes[role] = None if grid is None else {**grid.to_dict(), "from": source}
    out = {"pixel_size": sizes}
    if fit is not None:
        out["world"] = world_sigma(fit, pair)
    return clean(out)


def world_lines(fit, pair) -> list[str]:
    """The summary's line of sigma in world units and in each image's pixels (none without sizes)."""
    world = world_sigma(fit, pair)
    if world is None:
        return []
    unit = world["unit"] or "(world units)"
    names = axis_names(len(world["sigma"]))
    keys = ("sigma", "sigma_reference_px", "sigma_target_px")
    one = all(np.allclose(world[k], world[k][0], rtol=1e-12) for k in keys)  # round in all three

    def values(key):
        return f"{world[key][0]:.4g}" if one else ", ".join(f"{v:.4g}" for v in world[key])

    label = "sigma" if one else f"sigma_{', sigma_'.join(names)}"
    return [f"in world     = {label} {values('sigma')} {unit}; in reference px "
            f"{values('sigma_reference_px')}; in target px {values('sigma_target_px')}"]


def size_columns(fit, pair, d: int) -> dict:
    """A CSV row's pixel-size columns: the unit, each image's scale, the world sigma (blank if none)."""
    names = axis_names(d)
    sizes = size_json(fit, pair) if fit is not None else {}
    row = {"unit": (sizes.get("pixel_size") or {}).get("unit") or ""}
    for role in ROLES:
        grid = (sizes.get("pixel_size") or {}).get(role) or {}
        row.update({f"{role}_scale_{n}": v for n, v in zip(names, grid.get("scale") or [""] * d)})
    world = sizes.get("world") or {}
    row.update({f"world_sigma_{n}": v for n, v in zip(names, world.get("sigma") or [""] * d)})
    return row


def fit_row(fit, words: Vocabulary, pair=None, sizes: bool | None = None) -> dict:
    """One CSV row's fit columns, named by axis as the text output names them (sigma_y, ...).

    With pixel sizes (``pair``, or ``sizes`` True: their columns, blank) the `size_columns`.
    """
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
    if sizes or (sizes is None and size_json(None, pair)):
        row.update(size_columns(fit, pair, len(d["sigma"])))
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
