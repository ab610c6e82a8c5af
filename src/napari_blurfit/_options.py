"""`FitOptions`: every option of a fit, validated once, passed to every entry point as one object.

Entry points that take ``**options`` (`fit_blur_stack`, `blur_map`, `fit_pairs`, the widget,
the CLI) build a `FitOptions` from them: a misspelt or unknown option is a `TypeError` that
names it, and an option an entry point cannot honour is refused there by name
(`FitOptions.refuse`), never filtered out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._losses import LOSSES, Loss, get_loss


@dataclass(frozen=True)
class FitOptions:
    """What to fit and how; see `napari_blurfit.fit_blur` for each field's meaning."""

    loss: str = "l2"
    per_axis: bool = False
    gain_offset: bool = False
    full_covariance: bool = False
    shift: bool = False
    mask: Any = None
    spatial_axes: Any = None
    sigma_bounds: Any = (0.0, None)
    exclude_border: Any = 0
    reverse: bool = False
    huber_delta: float | None = None
    truncate: float = 4.0
    workers: int | None = None
    warn: bool = True
    callback: Callable[[str], None] | None = None
    reference_noise: float | str = "auto"
    reference_grid: Any = None
    target_grid: Any = None

    def __post_init__(self):
        objective = get_loss(self.loss) if isinstance(self.loss, str) else None
        if objective is None:
            raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}; got {self.loss!r}")
        for name in ("per_axis", "gain_offset", "full_covariance", "shift", "reverse", "warn"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not (isinstance(self.truncate, (int, float)) and np.isfinite(self.truncate)
                and self.truncate > 0):
            raise ValueError(f"truncate must be a positive number, got {self.truncate!r}")
        if self.huber_delta is not None and not (
                isinstance(self.huber_delta, (int, float)) and np.isfinite(self.huber_delta)
                and self.huber_delta > 0):
            raise ValueError(f"huber_delta must be a positive number, got {self.huber_delta!r}")
        if self.huber_delta is not None and not objective.has_threshold:
            raise ValueError(f"huber_delta applies to loss='huber' only; got loss={self.loss!r}")
        _check_reference_noise(self.reference_noise)
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable, got {type(self.callback).__name__}")

    @classmethod
    def from_kwargs(cls, where: str, options: dict) -> FitOptions:
        """Options given by keyword to the entry point ``where``; unknown names are refused."""
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"{where} got unknown option(s) {', '.join(map(repr, unknown))}; "
                            f"valid options: {', '.join(f.name for f in dataclasses.fields(cls))}")
        return cls(**options)

    @property
    def objective(self) -> Loss:
        """The `Loss` object named by ``loss`` (its ``delta`` is set by the fit)."""
        return get_loss(self.loss, delta=self.huber_delta or 0.0)

    @property
    def sigma_per_axis(self) -> bool:
        """The search has one sigma per axis (a rotated ellipse starts from the per-axis fit)."""
        return self.per_axis or self.full_covariance

    @property
    def whole_gaussian(self) -> bool:
        """A rotated or shifted kernel: not diagonal in the DCT, fitted in image space."""
        return self.full_covariance or self.shift

    def replace(self, **changes) -> FitOptions:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def refuse(self, where: str, *names: str, why: str) -> None:
        """Raise if any option in ``names`` differs from its default: ``where`` cannot honour it."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in names:
            value = getattr(self, name)
            if value is not None and not _equal(value, defaults[name]):
                raise ValueError(f"{where} cannot honour {name}={_short(value)}: {why}")

    def as_kwargs(self) -> dict:
        """The fields as keyword arguments for `napari_blurfit.fit_blur`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _check_reference_noise(value) -> None:
    """``"auto"``, or a finite noise standard deviation >= 0 (a bool or other text is refused)."""
    if isinstance(value, str) and value == "auto":
        return
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))
    if not (number and np.isfinite(value) and value >= 0):
        raise ValueError("reference_noise must be 'auto' or the reference's noise standard "
                         f"deviation, a number >= 0 (0: a noise-free reference); got {value!r}")


def _equal(a, b) -> bool:
    try:
        return bool(np.all(np.asarray(a, dtype=object) == np.asarray(b, dtype=object)))
    except (ValueError, TypeError):
        return False


def _short(value) -> str:
    if isinstance(value, np.ndarray):
        return f"<array {value.shape}>"
    return repr(value)
