"""The result of a blur fit."""

from __future__ import annotations

import json
from dataclasses import InitVar, dataclass, field

import numpy as np
from scipy import ndimage

from ._adequacy import Transfer
from ._finding import Finding, plain
from ._gaussian import GaussianKernel
from ._resample import axis_sampling, resample
from ._summary import angle_of, principal, summary_lines
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
        Standard error per axis. With ``reference_noise`` other than 0 (the default) a sandwich
        over frequencies that holds for noise in both images and residuals that are not white,
        including the uncertainty of an estimated noise level (docs/design.md section 16);
        with ``reference_noise=0`` Gauss-Newton (section 8), which assumes white residuals.
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
        Plain-language findings, one sentence each: the ``text`` of each of ``findings``.
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
    covariance : ndarray, shape (d, d)
        The kernel's covariance in px^2 (diagonal ``sigma**2`` unless ``full_covariance``).
    shift : tuple of float
        The kernel's centre in px (zeros unless ``shift_fitted``): the target is the reference
        moved by ``+shift``, as `scipy.ndimage.shift` moves it.
    covariance_stderr, shift_stderr
        Standard errors of each covariance entry and each shift component (the same kinds as
        ``sigma_stderr``).
    full_covariance, shift_fitted : bool
        Whether the covariance's off-diagonal entries and the shift were fitted.
    reference_noise : float
        The reference's white-noise standard deviation (intensity units; the image the kernel is
        applied to: the target when ``reverse``): estimated from the pair with
        ``reference_noise="auto"`` (also when too small to correct for), the value given, or 0.0
        for the noise-free model.
    reference_noise_corrected : bool
        The fit was corrected for that noise (a plain fit would overstate sigma).
    grids : dict or None
        For a fit across pixel grids (``reference_grid``/``target_grid``), the grids used:
        ``{"reference": Grid, "target": Grid}``; else None. ``covariance``, ``sigma``, ``shift``
        and their errors are then in the pixels of the image the kernel is applied to (the
        reference's; the target's when ``reverse``).
    grid_shapes : dict or None
        The spatial shapes of the two images of a fit across grids, ``{"reference": ...,
        "target": ...}``: `fitted` and `residual` make images of the target's.
    findings : tuple of Finding
        The findings as data, in the order of ``notes``: each a ``code`` (``"misaligned"``,
        ``"brightness"``, ...), a ``suggestion`` (the `napari_blurfit.fit_blur` options to refit
        with), the ``values`` behind it and its ``text``. A result built with ``notes`` alone
        gets one ``"note"`` finding per note.
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
    notes: InitVar[tuple[str, ...]] = ()  # a view of ``findings`` on a result: see below the class
    profile: dict = field(default_factory=dict, repr=False, compare=False)
    r2: float = float("nan")
    r2_linear: float = float("nan")
    transfer: Transfer | None = field(default=None, repr=False, compare=False)
    covariance: np.ndarray | None = field(default=None, compare=False)
    shift: tuple[float, ...] = ()
    covariance_stderr: np.ndarray | None = field(default=None, repr=False, compare=False)
    shift_stderr: tuple[float, ...] = ()
    full_covariance: bool = False
    shift_fitted: bool = False
    reference_noise: float = 0.0
    reference_noise_corrected: bool = False
    findings: tuple[Finding, ...] = field(default=(), repr=False)
    grids: dict | None = field(default=None, repr=False, compare=False)
    grid_shapes: dict | None = field(default=None, repr=False, compare=False)

    def __post_init__(self, notes):
        d = len(self.sigma)
        object.__setattr__(self, "findings", _findings(tuple(self.findings), tuple(notes)))
        if self.covariance is None:  # results built by hand (failed fits): the diagonal model
            object.__setattr__(self, "covariance", np.diag(np.square(self.sigma)))
            object.__setattr__(self, "covariance_stderr", np.full((d, d), np.nan))
        if not self.shift:
            object.__setattr__(self, "shift", (0.0,) * d)
            object.__setattr__(self, "shift_stderr", (float("nan"),) * d)

    @property
    def kernel(self) -> GaussianKernel:
        """The fitted kernel as a `GaussianKernel` (covariance and shift)."""
        return GaussianKernel(self.covariance, self.shift)

    @property
    def principal_sigmas(self) -> tuple[float, ...]:
        """Standard deviations along the kernel's principal axes, largest first (px)."""
        return tuple(float(s) for s in principal(self.covariance)[0])

    @property
    def principal_axes(self) -> np.ndarray:
        """Unit direction of each principal sigma (columns, in array-axis order)."""
        return principal(self.covariance)[1]

    @property
    def angle(self) -> float | None:
        """2D: angle of the major axis from +x (columns) towards +y (rows), degrees in (-90, 90]."""
        return angle_of(self.covariance)

    @property
    def basicsr(self) -> tuple[float, float, float] | None:
        """2D: ``(sigma_x, sigma_y, theta)`` of BasicSR's ``sigma_matrix2`` (theta in radians).

        ``sigma_x >= sigma_y`` are the principal sigmas; x is the last axis (columns), y the
        rows, theta turns the major axis from +x towards +y.
        """
        if len(self.sigma) != 2:
            return None
        major, minor = self.principal_sigmas
        return (major, minor, float(np.radians(self.angle)))

    def in_world_units(self, scale=None) -> dict:
        """Sigma, covariance, principal sigmas and shift in world units (a layer's ``scale``).

        ``scale`` has one pixel size per spatial axis (or per image axis: the spatial ones are
        taken). A fit across grids needs none: the scale of the grid the kernel was sampled on
        (the reference's; the target's when ``reverse``). The model stays the pixel model; this
        is only its presentation.
        """
        if scale is None:
            if self.grids is None:
                raise TypeError("in_world_units needs a scale (world units per pixel) unless the "
                                "fit was made across grids (reference_grid/target_grid)")
            scale = self._source_grid.scale
        scale = np.asarray(scale, dtype=np.float64)
        if len(scale) != len(self.sigma):
            scale = scale[list(self.spatial_axes)]
        world_cov = self.covariance * np.outer(scale, scale)
        return {"sigma": tuple(float(s) for s in np.array(self.sigma) * scale),
                "covariance": world_cov,
                "principal_sigmas": tuple(float(v) for v in principal(world_cov)[0]),
                "shift": tuple(float(s) for s in np.array(self.shift) * scale)}

    def sigma_on(self, grid) -> tuple[float, ...]:
        """The fitted sigma per axis in the pixels of another grid (a `Grid` or its ``scale``).

        World sigma (``in_world_units()["sigma"]``) over that grid's pixel size, per axis.
        """
        scale = grid["scale"] if hasattr(grid, "keys") else grid
        scale = np.resize(np.asarray(scale, dtype=np.float64), len(self.sigma))
        return tuple(float(s) for s in np.array(self.in_world_units()["sigma"]) / scale)

    @property
    def _source_grid(self):
        """The grid the kernel is sampled on (the reference's; the target's when reversed)."""
        return self.grids["target" if self.reverse else "reference"]

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
        if self.full_covariance or any(self.shift):
            out = self._apply_whole(arr).astype(dtype, copy=False)
        else:
            sigma = [0.0] * arr.ndim
            for axis, s in zip(self.spatial_axes, self.sigma):
                sigma[axis] = s
            out = ndimage.gaussian_filter(arr, sigma, truncate=self.truncate, mode="reflect")
        if self.gain_offset:
            out = out * dtype(self.gain) + dtype(self.offset)
        return out

    def _apply_whole(self, arr: np.ndarray) -> np.ndarray:
        """The rotated/shifted kernel over the spatial axes (moved last and back)."""
        d = len(self.spatial_axes)
        last = tuple(range(arr.ndim - d, arr.ndim))
        moved = np.moveaxis(arr, self.spatial_axes, last)
        return np.moveaxis(self.kernel.apply(moved, self.truncate), last, self.spatial_axes)

    def fitted(self, reference, target=None) -> np.ndarray:
        """The fitted blurred image: the model applied to ``reference`` (to ``target`` if reversed).

        Across grids it is on the target's grid (the reference's if reversed): NaN where a
        pixel's footprint lies outside the other image's extent.
        """
        blurred = self.apply(target if self.reverse else reference)
        return blurred if self.grids is None else self._resampled(blurred)

    def residual(self, reference, target) -> np.ndarray:
        """What the model leaves: ``target - fitted`` (``reference - fitted`` if reversed)."""
        source, goal = (target, reference) if self.reverse else (reference, target)
        goal = goal.astype(np.float64) if is_dask(goal) else np.asarray(goal, dtype=np.float64)
        return goal - self.fitted(reference, target)

    def _resampled(self, image) -> np.ndarray:
        """``image`` (on the kernel's grid) sampled on the other grid, NaN outside its extent."""
        source, destination = ("target", "reference") if self.reverse else ("reference", "target")
        image = np.asarray(image, dtype=np.float64)
        d = len(self.spatial_axes)
        last = tuple(range(image.ndim - d, image.ndim))
        moved = np.moveaxis(image, self.spatial_axes, last)
        shape_in, shape_out = self.grid_shapes[source], self.grid_shapes[destination]
        if tuple(moved.shape[-d:]) != tuple(shape_in):
            raise ValueError(f"the {source} has spatial shape {tuple(moved.shape[-d:])}; this fit "
                             f"was made with one of {tuple(shape_in)}")
        samplings = [axis_sampling(self.grids[source], shape_in[k], self.grids[destination],
                                   shape_out[k], k) for k in range(d)]
        out = np.full(moved.shape[:-d] + tuple(shape_out), np.nan)
        inside = (Ellipsis,) + tuple(s.inside for s in samplings)
        out[inside] = resample(moved, [s.weights for s in samplings], moved.ndim - d)
        return np.moveaxis(out, last, self.spatial_axes)

    def to_dict(self) -> dict:
        """Plain-Python (JSON-ready) fields, without the profile (the transfer curve as lists).

        ``findings`` are dicts of ``code``, ``suggestion``, ``values`` and ``text``.
        """
        d = {k: getattr(self, k) for k in self.__dataclass_fields__
             if k not in ("profile", "transfer")}
        d["transfer"] = None if self.transfer is None else self.transfer.to_dict()
        d["covariance"] = np.asarray(self.covariance).tolist()
        d["covariance_stderr"] = np.asarray(self.covariance_stderr).tolist()
        d["shift"], d["shift_stderr"] = list(self.shift), list(self.shift_stderr)
        d["principal_sigmas"] = list(self.principal_sigmas)
        d["angle"] = self.angle
        d["basicsr"] = None if self.basicsr is None else list(self.basicsr)
        d["sigma"] = list(self.sigma)
        d["sigma_stderr"] = list(self.sigma_stderr)
        d["spatial_axes"] = list(self.spatial_axes)
        d["sigma_bounds"] = [list(b) for b in self.sigma_bounds]
        d["notes"] = list(self.notes)
        d["findings"] = [f.to_dict() for f in self.findings]
        d["grids"] = None if self.grids is None else {k: g.to_dict() for k, g in self.grids.items()}
        d["grid_shapes"] = None if self.grid_shapes is None else {
            k: list(v) for k, v in self.grid_shapes.items()}
        return plain(d)

    def to_json(self, **kwargs) -> str:
        """`to_dict` as JSON text (NaN written as null)."""
        def clean(v):
            if isinstance(v, float) and not np.isfinite(v):
                return None
            if isinstance(v, list):
                return [clean(x) for x in v]
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return v
        return json.dumps({k: clean(v) for k, v in self.to_dict().items()}, **kwargs)

    def summary(self) -> str:
        """A few readable lines, one per finding at the end.

        Sigma (with the principal sigmas and angle of a rotated kernel, the shift when fitted),
        gain and offset, loss, r2 and the direction; the same lines as the ``blurfit`` command
        prints, with options named as `napari_blurfit.fit_blur` takes them.
        """
        return "\n".join(summary_lines(self))

    def __repr__(self) -> str:
        sig = ", ".join(f"{v:.4g}" for v in self.sigma)
        flags = [name for name, on in (("at_bound", self.at_bound),
                                       ("not identifiable", not self.identifiable),
                                       ("target sharper", self.target_sharper)) if on]
        extra = f", gain={self.gain:.4g}, offset={self.offset:.4g}" if self.gain_offset else ""
        tail = f", flags={flags}" if flags else ""
        return f"BlurFit(sigma=({sig}){extra}, loss={self.loss:.4g} [{self.loss_name}]{tail})"


def _findings(findings: tuple[Finding, ...], notes: tuple[str, ...]) -> tuple[Finding, ...]:
    """A result's findings from what it was built with: its findings, else its notes alone.

    Findings decide: ``notes`` is their view, so ``dataclasses.replace(fit, findings=...)``
    (which passes the old notes along) gives notes that follow the new findings.
    """
    return findings if findings else tuple(Finding("note", {}, {}, n) for n in notes)


def _notes(fit: BlurFit) -> tuple[str, ...]:
    """Plain-language findings, one sentence each: the ``text`` of each of ``fit.findings``."""
    return tuple(f.text for f in fit.findings)


# ``notes`` is a constructor argument (a result built by hand may give notes alone) and, on a
# result, a view of ``findings``: the property is set once the dataclass is made, so that its
# ``__init__`` keeps ``()`` as the argument's default
BlurFit.notes = property(_notes)
