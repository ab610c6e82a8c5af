"""Fit napari layers: the bridge between layers and the core, without Qt.

Used by the dock widget (inside its worker thread) and from the napari console::

    from napari_blurfit.layers import fit_layers
    fit = fit_layers(viewer, "cell reference", "cell target", gain_offset=True)

Outputs are ``"<target> fit"`` and ``"<target> residual"`` image layers with the target's scale and
translate; re-running updates them in place. Input layers are never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._result import BlurFit
from ._validate import is_dask
from .fit import fit_blur

MODES = ("whole image/volume", "current slice", "frames jointly", "per frame", "blur map")
RESIDUAL_COLORMAP = "bwr"


@dataclass
class LayerFit:
    """What a layer fit produced: the fit (or per-frame fits / blur map) and layers to show."""

    fit: BlurFit | None
    layers: list = field(default_factory=list)  # napari LayerDataTuples
    frames: list | None = None  # per-frame fits ("per frame" mode)
    blur_map: object = None
    sigma_world: tuple | None = None
    units: tuple | None = None


def image_data(layer, role: str) -> object:
    """The array behind an image layer, checked (level 0 of a multiscale layer)."""
    from napari.layers import Image

    if not isinstance(layer, Image):
        kind = type(layer).__name__ if layer is not None else "nothing"
        raise TypeError(f"{role} must be an image layer; got {kind}")
    if getattr(layer, "rgb", False):
        raise ValueError(f"{role} layer {layer.name!r} is RGB; split its channels or convert it "
                         "to grayscale first")
    return layer.data[0] if layer.multiscale else layer.data


def check_pair(reference, target) -> None:
    """Raise a clear error when the two layers cannot be fitted against each other."""
    a, b = image_data(reference, "reference"), image_data(target, "target")
    if reference is target:
        raise ValueError(f"reference and target are the same layer {reference.name!r}; "
                         "choose two different layers")
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"reference {reference.name!r} {tuple(a.shape)} and target "
                         f"{target.name!r} {tuple(b.shape)} differ in shape")


def mask_data(mask_layer, shape) -> np.ndarray | None:
    """Boolean mask from a Labels layer (nonzero) or a Shapes layer (inside any shape)."""
    if mask_layer is None:
        return None
    from napari.layers import Labels, Shapes

    if isinstance(mask_layer, Labels):
        m = np.asarray(mask_layer.data) != 0
    elif isinstance(mask_layer, Shapes):
        m = np.asarray(mask_layer.to_labels(labels_shape=shape)) != 0
    else:
        raise TypeError(f"mask must be a Labels or Shapes layer; got {type(mask_layer).__name__}")
    if m.shape != tuple(shape):
        raise ValueError(f"mask layer {mask_layer.name!r} has shape {m.shape}, the images {tuple(shape)}")
    return m


def _units(layer, axes) -> tuple[str, ...]:
    try:
        return tuple(str(layer.units[a]) for a in axes)
    except (AttributeError, IndexError):
        return ("",) * len(axes)


def _plane_index(layer, world_point, ndim):
    """Data index of the 2D plane of an nD layer that the viewer shows at ``world_point``."""
    if world_point is None:
        return (0,) * (ndim - 2)
    data = np.asarray(layer.world_to_data(tuple(world_point)[-ndim:]))
    shape = layer.data.shape
    return tuple(int(np.clip(np.round(x), 0, n - 1)) for x, n in zip(data[: ndim - 2], shape))


def run_layer_fit(reference, target, *, mask_layer=None, mode: str = "whole image/volume", world_point=None,
                  tile: int = 128, callback=None, **options) -> LayerFit:
    """Fit ``target`` against ``reference`` (napari image layers) and build the output layers.

    Heavy work only; touches no viewer, so it can run in a worker thread.

    Parameters
    ----------
    reference, target : napari.layers.Image
    mask_layer : napari.layers.Labels or napari.layers.Shapes, optional
    mode : str
        ``"whole image/volume"`` (every axis spatial, 2D/3D), ``"current slice"`` (the 2D plane
        shown by the viewer),
        ``"frames jointly"`` (last two axes spatial, one sigma over the others), ``"per frame"``
        (one fit per 2D frame) or ``"blur map"`` (fits on tiles of a 2D image).
    world_point : sequence of float, optional
        The viewer's ``dims.point`` (world coordinates) for ``"current slice"``; default: the first plane.
    tile : int
        Tile size for ``"blur map"``.
    callback : callable, optional
        Passed to the core; raising in it cancels.
    **options
        Passed to `napari_blurfit.fit_blur`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    check_pair(reference, target)
    a, b = image_data(reference, "reference"), image_data(target, "target")
    mask = mask_data(mask_layer, a.shape)
    scale, translate = np.asarray(target.scale), np.asarray(target.translate)
    ndim = a.ndim
    if mode == "current slice":
        if ndim < 2:
            raise ValueError("'current slice' mode needs at least 2D layers")
        index = _plane_index(target, world_point, ndim)
        a, b = np.asarray(a[index]), np.asarray(b[index])
        mask = None if mask is None else mask[index]
        scale, translate = scale[-2:], translate[-2:]
    elif mode in ("frames jointly", "per frame", "blur map"):
        if ndim < 2 or (mode == "blur map" and ndim != 2):
            raise ValueError(f"{mode!r} mode needs {'2D' if mode == 'blur map' else 'nD'} layers")
        options = {**options, "spatial_axes": (-2, -1)}
    spatial_axes = options.get("spatial_axes") or tuple(range(a.ndim))
    axes_in_layer = [ax % a.ndim + (ndim - a.ndim) for ax in spatial_axes]
    units = _units(target, axes_in_layer)
    meta_base = {"reference": reference.name, "target": target.name, "mode": mode}

    if mode == "per frame":
        from .stack import fit_blur_stack

        options.pop("spatial_axes")
        frames = fit_blur_stack(a, b, spatial_axes=(-2, -1), mask=mask, callback=callback,
                                **options)
        return LayerFit(None, [], frames=frames, units=units)
    if mode == "blur map":
        from .blurmap import blur_map

        options.pop("spatial_axes")
        bm = blur_map(a, b, tile=tile, callback=callback, **{k: v for k, v in options.items()
                                                               if k in ("loss", "per_axis",
                                                                        "gain_offset", "sigma_bounds")})
        sigma_img = bm.full_resolution().mean(axis=-1)
        finite = sigma_img[np.isfinite(sigma_img)]
        hi = float(finite.max()) if finite.size else 1.0
        lo = float(finite.min()) if finite.size else 0.0
        layer = (sigma_img, {"name": f"{target.name} blur map", "scale": tuple(scale),
                             "translate": tuple(translate), "units": tuple(target.units),
                             "colormap": "viridis",
                             "contrast_limits": (lo, hi if hi > lo else lo + 1.0),
                             "metadata": {"blurfit": {**meta_base, "tile": tile}}}, "image")
        return LayerFit(None, [layer], blur_map=bm, units=units)

    fit = fit_blur(a, b, mask=mask, callback=callback, **options)
    if callback is not None:
        callback("making the fitted and residual images")
    source, goal = (b, a) if fit.reverse else (a, b)
    # a lazy stack gets lazy output layers, which napari computes frame by frame as shown
    lazy = mode == "frames jointly" and is_dask(source)
    if not lazy:
        source, goal = np.asarray(source), np.asarray(goal)
    fitted = fit.apply(source).astype(np.float32)  # one filter pass serves both output layers
    residual = (goal - fitted).astype(np.float32)
    first = (0,) * (residual.ndim - 2) if lazy else ...  # contrast limits from the first frame
    shown_goal, shown_residual = np.asarray(goal[first]), np.asarray(residual[first])
    bound = float(np.nanpercentile(np.abs(shown_residual), 99.9)) or 1.0
    lo, hi = float(np.nanmin(shown_goal)), float(np.nanmax(shown_goal))
    meta = {"blurfit": {**meta_base, **fit.to_dict()}}
    common = {"scale": tuple(scale), "translate": tuple(translate), "metadata": meta,
              "units": tuple(target.units)[-len(scale):]}
    name = (reference if fit.reverse else target).name
    layers = [
        (fitted, {"name": f"{name} fit", "colormap": "gray",
                  "contrast_limits": (lo, hi if hi > lo else lo + 1.0), **common}, "image"),
        (residual, {"name": f"{name} residual", "colormap": RESIDUAL_COLORMAP,
                    "contrast_limits": (-bound, bound), **common}, "image"),
    ]
    world = tuple(s * float(scale[ax]) for s, ax in
                  zip(fit.sigma, [a_ % len(scale) for a_ in spatial_axes]))
    return LayerFit(fit, layers, sigma_world=world, units=units)


def show_layers(viewer, result: LayerFit) -> list:
    """Add a fit's output layers, or update same-named image layers in place; returns the layers.

    A blur map also gets its colorbar shown on the canvas (where napari's layers have one), so
    its range reads off the view.
    """
    from napari.layers import Image

    out = []
    for data, kwargs, _ in result.layers:
        name = kwargs["name"]
        if name in viewer.layers and isinstance(viewer.layers[name], Image):
            layer = viewer.layers[name]
            layer.data = data
            for key in ("scale", "translate", "units", "metadata", "contrast_limits", "colormap"):
                if key in kwargs:
                    setattr(layer, key, kwargs[key])
        else:
            layer = viewer.add_image(data, **kwargs)
        if result.blur_map is not None and hasattr(layer, "colorbar"):
            layer.colorbar.visible = True
        out.append(layer)
    return out


def fit_layers(viewer, reference, target, *, mask=None, mode: str = "whole image/volume", show: bool = True,
               **options):
    """Fit two layers of ``viewer`` (given by name or as layers) and show fit and residual.

    The console counterpart of the dock widget: same computation, same output layers.

    Parameters
    ----------
    viewer : napari.Viewer
    reference, target : str or napari.layers.Image
    mask : str or napari.layers.Labels or napari.layers.Shapes, optional
    mode : str
        See `run_layer_fit`.
    show : bool
        Add/update the output layers.
    **options
        Passed to `napari_blurfit.fit_blur` (``loss``, ``per_axis``, ``gain_offset``, ...).

    Returns
    -------
    BlurFit or list of BlurFit or BlurMap
        The fit; per-frame fits in ``"per frame"`` mode; the map in ``"blur map"`` mode.
    """
    def get(x):
        return viewer.layers[x] if isinstance(x, str) else x

    result = run_layer_fit(get(reference), get(target), mask_layer=get(mask), mode=mode,
                           world_point=viewer.dims.point, **options)
    if show:
        show_layers(viewer, result)
    if mode == "per frame":
        return result.frames
    if mode == "blur map":
        return result.blur_map
    return result.fit
