"""Pixel grids: where an image's pixels lie in world coordinates, and how a camera samples them.

Two layers of one sample rarely share a grid: a widefield and a confocal image at 0.108 and
0.065 um/px, a network's 4x super-resolved output beside its input, a volume cropped 3 px on
each side. A `Grid` says where each pixel of an image lies (``scale``: world units per pixel;
``translate``: the world position of pixel 0's centre, per spatial axis) and, for the image the
blur is measured on, how its pixels sample the world (``sampling``). `napari_blurfit.fit_blur`
takes one for each image (docs/design.md section 18).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

SAMPLINGS = ("area", "point")


@dataclass(frozen=True)
class Grid:
    """An axis-aligned pixel grid over the spatial axes.

    Parameters
    ----------
    scale : float or sequence of float
        World units per pixel, one per spatial axis (one number: every axis). Positive.
    translate : float or sequence of float, optional
        World position of the centre of pixel 0 per axis; default 0.
    sampling : {"area", "point"}
        How the image's pixels sample the world when it is the image the blur is measured on:
        ``"area"`` (a camera: the mean over the pixel's footprint, a box of ``scale`` centred on
        it) or ``"point"`` (the value at the pixel's centre). Ignored for the image the kernel
        is applied to.

    Notes
    -----
    A grid reads like a mapping too (``grid["scale"]``), so that a dict and a `Grid` are
    interchangeable wherever the package returns one.
    """

    scale: tuple[float, ...]
    translate: tuple[float, ...] | None = None
    sampling: str = "area"

    def __post_init__(self):
        scale = _floats(self.scale, "scale")
        translate = (0.0,) * len(scale) if self.translate is None else _floats(self.translate, "translate")
        if len(scale) == 1 and len(translate) > 1:
            scale = scale * len(translate)
        if len(translate) == 1 and len(scale) > 1:
            translate = translate * len(scale)
        if len(scale) != len(translate):
            raise ValueError(f"a grid's scale {scale} and translate {translate} name different numbers "
                             "of axes")
        if not all(np.isfinite(scale)) or min(scale) <= 0:
            raise ValueError(f"a grid's scale must be positive and finite, got {scale}")
        if not all(np.isfinite(translate)):
            raise ValueError(f"a grid's translate must be finite, got {translate}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"a grid's sampling must be 'area' or 'point', got {self.sampling!r}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "translate", translate)

    @classmethod
    def of(cls, value, ndim: int, name: str) -> Grid:
        """``value`` (a `Grid`, or a mapping of ``scale``, ``translate``, ``sampling``) on ``ndim`` axes.

        One number for an axis-wise field is repeated over the ``ndim`` axes; ``name`` is what
        an error calls the grid (``"reference_grid"``).
        """
        if isinstance(value, Grid):
            grid = value
        elif isinstance(value, Mapping):
            unknown = sorted(set(value) - {"scale", "translate", "sampling"})
            if unknown or "scale" not in value:
                raise ValueError(f"{name} needs a 'scale' and may have 'translate' and 'sampling'; "
                                 f"got keys {sorted(value)}")
            grid = cls(value["scale"], value.get("translate"), value.get("sampling", "area"))
        else:
            raise TypeError(f"{name} must be a napari_blurfit.Grid or a mapping with 'scale', "
                            f"got {type(value).__name__}")
        if grid.ndim == 1 and ndim > 1:
            grid = cls(grid.scale * ndim, grid.translate * ndim, grid.sampling)
        if grid.ndim != ndim:
            raise ValueError(f"{name} has {grid.ndim} axes ({grid.scale}); the images have {ndim} "
                             "spatial axes")
        return grid

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.scale)

    def extent(self, shape) -> tuple[np.ndarray, np.ndarray]:
        """World coordinates of the first and last pixel edges per axis, for an image of ``shape``."""
        scale, translate = np.array(self.scale), np.array(self.translate)
        return translate - scale / 2, translate + (np.asarray(shape) - 0.5) * scale

    def to_dict(self) -> dict:
        """``{"scale": [...], "translate": [...], "sampling": ...}`` (JSON-ready)."""
        return {"scale": list(self.scale), "translate": list(self.translate), "sampling": self.sampling}

    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def keys(self):
        """The field names, as a mapping has them."""
        return ("scale", "translate", "sampling")


def _floats(value, what: str) -> tuple[float, ...]:
    try:
        arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        raise TypeError(f"a grid's {what} must be a number or a sequence of numbers, got {value!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"a grid's {what} must be a number or a flat sequence, got {value!r}")
    return tuple(float(v) for v in arr)
