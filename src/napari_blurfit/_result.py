"""The result of a blur fit."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ._adequacy import Transfer
from ._validate import is_dask, working_dtype


class BlurFitWarning(UserWarning):
    """A fit returned, but its answer needs care (at a bound, not identifiable, wrong direction)."""


@dataclass(frozen=True)
class BlurFit:
    """A fitted Gaussian blur: ``target ~ gain * gaussian_filter(reference, sigma) + offset``.

    With ``reverse=True`` the roles are swapped: ``reference ~ gain * G_sigma * target + offset``.

    Attributes
    ----------
    sigma : tuple of float
        One sigma per spatial axis, in pixels, as `scipy.ndimage.gaussian_filter` takes it.
        An axis whose sigma is below 0.165 px (scipy's kernel is then the identity to within 1e-8)
        is reported as 0.
    sigma_stderr : tuple of float
        Gauss-Newton standard error per axis (DESIGN.md section 8). It assumes independent
        residuals and so understates the spread for real, correlated residuals.
    gain, offset : float
        1.0 and 0.0 unless fitted.
    loss : float
        The objective at the optimum as a mean over the pixels used.
    loss_name : str
        ``"l2"``, ``"l1"`` or ``"huber"``.
    n_pixels : int
        Pixels that counted in the loss.
    n_excluded : int
        Pixels left out (mask, border, non-finite).
    n_nonfinite : int
        Pixels left out because reference or target was NaN/inf there.
    at_bound : bool
        The optimum lies on a sigma bound: the true value may lie beyond it.
    identifiable : bool
        False when a sigma is below 0.3 px, where the sampled kernel is nearly ``[0, 1, 0]``.
    target_sharper : bool
        The target looks sharper than the reference (the fit collapsed to ~0 while the reverse
        direction finds a blur); refit with ``reverse=True``.
    notes : tuple of str
        Plain-language findings, one sentence each.
    profile : dict
        How the loss varies with sigma, for plots: ``{"sigma": (m,), "loss": (rows, m),
        "objective": str}``. For L2, the mean loss on the global search grid (per axis: the
        minimum over the other axes); for image-space fits, the evaluated points.
    r2 : float
        Share of the target's variance (about its mean, over the pixels used) that the fitted
        model explains: ``1 - RSS / SST``.
    r2_linear : float
        The same for the best linear filter of a free-form class that contains the fitted
        Gaussian (a free real factor per frequency shell: radial in 2D, lateral x axial in 3D),
        counted net of what it would gain on pure noise; ``r2 <= r2_linear <= 1``. A large gap
        says the blur is not Gaussian (docs/design.md section 12).
    transfer : Transfer
        ``frequency`` (cycles/px), ``measured`` (the pair's own transfer, gain removed) and
        ``model`` (the fitted Gaussian's), per radial frequency shell, for plotting.
    """

    sigma: tuple[float, ...]
    sigma_stderr: tuple[float, ...]
    gain: float
    offset: float
    loss: float
    loss_name: str
    per_axis: bool
    gain_offset: bool
    reverse: bool
    spatial_axes: tuple[int, ...]
    sigma_bounds: tuple[tuple[float, float], ...]
    n_pixels: int
    n_excluded: int
    n_nonfinite: int
    at_bound: bool
    identifiable: bool
    target_sharper: bool
    huber_delta: float | None
    truncate: float
    notes: tuple[str, ...] = ()
    profile: dict = field(default_factory=dict, repr=False, compare=False)
    r2: float = float("nan")
    r2_linear: float = float("nan")
    transfer: Transfer | None = field(default=None, repr=False, compare=False)

    def apply(self, image) -> np.ndarray:
        """The fitted model applied to ``image``: ``gain * gaussian_filter(image, sigma) + offset``.

        Spatial axes are those of the fit; other axes (frames) are not blurred. A dask array gives
        a lazy dask array (computed in blocks of whole frames, so exactly the same values).
        """
        if is_dask(image):
            frames = image.rechunk({axis: -1 for axis in self.spatial_axes})
            dtype = working_dtype(np.dtype(image.dtype), "image")
            return frames.map_blocks(self.apply, dtype=dtype)
        arr = np.asarray(image)
        dtype = working_dtype(arr.dtype, "image").type  # the fit's own dtype rule
        arr = arr.astype(dtype, copy=False)
        sigma = [0.0] * arr.ndim
        for axis, s in zip(self.spatial_axes, self.sigma):
            sigma[axis] = s
        out = ndimage.gaussian_filter(arr, sigma, truncate=self.truncate, mode="reflect")
        if self.gain_offset:
            out = out * dtype(self.gain) + dtype(self.offset)
        return out

    def fitted(self, reference, target=None) -> np.ndarray:
        """The fitted blurred image: the model applied to ``reference`` (to ``target`` if reversed)."""
        return self.apply(target if self.reverse else reference)

    def residual(self, reference, target) -> np.ndarray:
        """What the model leaves: ``target - fitted`` (``reference - fitted`` if reversed)."""
        source, goal = (target, reference) if self.reverse else (reference, target)
        goal = goal.astype(np.float64) if is_dask(goal) else np.asarray(goal, dtype=np.float64)
        return goal - self.apply(source)

    def to_dict(self) -> dict:
        """Plain-Python (JSON-ready) fields, without the profile (the transfer curve as lists)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__
             if k not in ("profile", "transfer")}
        d["transfer"] = None if self.transfer is None else self.transfer.to_dict()
        d["sigma"] = list(self.sigma)
        d["sigma_stderr"] = list(self.sigma_stderr)
        d["spatial_axes"] = list(self.spatial_axes)
        d["sigma_bounds"] = [list(b) for b in self.sigma_bounds]
        d["notes"] = list(self.notes)
        return d

    def to_json(self, **kwargs) -> str:
        """`to_dict` as JSON text (NaN written as null)."""
        def clean(v):
            if isinstance(v, float) and not np.isfinite(v):
                return None
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v
        return json.dumps({k: clean(v) for k, v in self.to_dict().items()}, **kwargs)

    def summary(self) -> str:
        """A few readable lines."""
        def fmt(values):
            return ", ".join(f"{v:.4g}" for v in values)
        lines = [
            f"sigma        = ({fmt(self.sigma)}) px   +/- ({fmt(self.sigma_stderr)})",
            f"gain, offset = {self.gain:.6g}, {self.offset:.6g}" + ("" if self.gain_offset else " (fixed)"),
            f"loss ({self.loss_name}) = {self.loss:.6g} over {self.n_pixels} pixels"
            + (f" ({self.n_excluded} excluded)" if self.n_excluded else ""),
            "direction    = "
            + ("reference ~ G * target (reverse)" if self.reverse else "target ~ G * reference"),
        ]
        lines.append(f"r2           = {self.r2:.6g} (a free linear filter: {self.r2_linear:.6g})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        sig = ", ".join(f"{v:.4g}" for v in self.sigma)
        flags = [name for name, on in (("at_bound", self.at_bound),
                                       ("not identifiable", not self.identifiable),
                                       ("target sharper", self.target_sharper)) if on]
        extra = f", gain={self.gain:.4g}, offset={self.offset:.4g}" if self.gain_offset else ""
        tail = f", flags={flags}" if flags else ""
        return f"BlurFit(sigma=({sig}){extra}, loss={self.loss:.4g} [{self.loss_name}]{tail})"
