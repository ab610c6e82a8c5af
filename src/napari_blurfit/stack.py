"""`fit_blur_stack`: one fit per frame of a stack or time series.

A frame that cannot be fitted (blank, all NaN) gives a result with NaN sigma and the reason in
``notes``; it never aborts the stack. For one sigma over all frames use
``fit_blur(..., spatial_axes=...)`` instead, which sums the frames' statistics and solves once.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np

from ._finding import Finding
from ._grid_pair import grids_given
from ._options import FitOptions
from ._result import BlurFit, BlurFitWarning
from ._validate import as_image, as_image_pair, is_dask, normalize_spatial_axes
from .fit import fit_blur


def failed_fit(reason: str, spatial_axes, *, loss: str = "l2", per_axis: bool = False,
               gain_offset: bool = False) -> BlurFit:
    """A result that says no fit exists here: NaN sigma, the reason as its ``"no_fit"`` finding."""
    d = len(spatial_axes)
    nan = float("nan")
    return BlurFit(sigma=(nan,) * d, sigma_stderr=(nan,) * d, gain=nan, offset=nan, loss=nan,
                   loss_name=loss, per_axis=per_axis, gain_offset=gain_offset, reverse=False,
                   spatial_axes=tuple(spatial_axes), sigma_bounds=((nan, nan),) * d, n_pixels=0,
                   n_excluded=0, n_nonfinite=0, at_bound=False, identifiable=False,
                   target_sharper=False, huber_delta=None, truncate=4.0,
                   findings=(Finding("no_fit", {}, {"reason": reason}, f"no fit: {reason}"),))


def _fit_frame(a, b, mask, spatial, options: FitOptions, callback=None):
    try:
        return fit_blur(np.asarray(a), np.asarray(b),
                        **options.replace(mask=mask, callback=callback).as_kwargs())
    except (ValueError, TypeError) as err:
        return failed_fit(str(err), spatial, loss=options.loss, per_axis=options.per_axis,
                          gain_offset=options.gain_offset)


def _check_frames_match(ref, tgt, spatial) -> None:
    """Reference and target must have the same frames (their spatial axes may differ across grids)."""
    frames = [[arr.shape[ax] for ax in range(arr.ndim) if ax not in spatial] for arr in (ref, tgt)]
    if ref.ndim != tgt.ndim or frames[0] != frames[1]:
        raise ValueError(f"reference and target must have the same frames; got reference "
                         f"{tuple(ref.shape)} and target {tuple(tgt.shape)} with spatial_axes "
                         f"{tuple(spatial)}")


def fit_blur_stack(reference, target, *, spatial_axes=(-2, -1), mask=None, callback=None,
                   **options) -> list[BlurFit]:
    """Fit every frame of a stack separately.

    Parameters
    ----------
    reference, target : array_like
        Stacks of equal shape (numpy or dask). Axes not in ``spatial_axes`` index frames. With
        ``reference_grid``/``target_grid`` (images on different grids, see
        `napari_blurfit.fit_blur`) only the frames must match.
    spatial_axes : sequence of int
        The 2 or 3 spatial axes of each frame.
    mask : array_like of bool, optional
        The stack's shape or one frame's shape.
    callback : callable, optional
        Called as ``callback(stage)`` before each frame (and inside each fit); raising stops.
    **options
        Every other option of `napari_blurfit.fit_blur` (``loss``, ``per_axis``,
        ``gain_offset``, ``reverse``, ``exclude_border``, ...), applied to each frame; an
        unknown name is a TypeError. ``warn`` (default True) warns once for the frames that
        could not be fitted; each frame's own findings are in its ``notes``.

    Returns
    -------
    list of BlurFit
        One per frame, frames in C order over the non-spatial axes. ``sigma`` is in the frame's
        own axes (``spatial_axes`` of each result counts axes of a frame).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from napari_blurfit import fit_blur_stack
    >>> rng = np.random.default_rng(0)
    >>> sharp = np.stack([ndimage.zoom(rng.random((16, 16)), 4) for _ in range(3)])
    >>> blurred = np.stack([ndimage.gaussian_filter(f, s) for f, s in zip(sharp, (1, 2, 3))])
    >>> [round(f.sigma[0], 3) for f in fit_blur_stack(sharp, blurred)]
    [1.0, 2.0, 3.0]
    """
    opts = FitOptions.from_kwargs("fit_blur_stack", options)
    warn, opts = opts.warn, opts.replace(warn=False)
    if grids_given(opts):  # frames must match; the spatial axes differ across grids
        ref, tgt = as_image(reference, "reference"), as_image(target, "target")
    else:
        ref, tgt = as_image_pair(reference, target)
    spatial = normalize_spatial_axes(spatial_axes, ref.ndim, ref.shape, "reference")
    _check_frames_match(ref, tgt, spatial)
    frame_axes = [ax for ax in range(ref.ndim) if ax not in spatial]
    if not frame_axes:
        raise ValueError(f"spatial_axes {tuple(spatial_axes)} leave no frame axis; use fit_blur "
                         "for a single image")
    if mask is not None:
        mask = np.asarray(mask)
    frame_ids = list(itertools.product(*[range(ref.shape[ax]) for ax in frame_axes]))
    spatial_local = tuple(range(len(spatial)))

    def index(fid):
        idx = [slice(None)] * ref.ndim
        for ax, i in zip(frame_axes, fid):
            idx[ax] = i
        return tuple(idx)

    measured = ref if opts.reverse else tgt  # the mask is on the grid the loss is measured on

    def frame_mask(fid):
        if mask is None or mask.shape == tuple(measured.shape[ax] for ax in spatial):
            return mask
        return mask[index(fid)]

    if is_dask(ref) or is_dask(tgt):
        import dask

        tasks = [dask.delayed(_fit_frame)(ref[index(f)], tgt[index(f)], frame_mask(f),
                                          spatial_local, opts) for f in frame_ids]
        fits = list(dask.compute(*tasks))
    else:
        fits = []
        for n, fid in enumerate(frame_ids):
            if callback is not None:
                callback(f"frame {n + 1}/{len(frame_ids)}")
            fits.append(_fit_frame(ref[index(fid)], tgt[index(fid)], frame_mask(fid),
                                   spatial_local, opts, callback))
    failed = [i for i, f in enumerate(fits) if np.isnan(f.sigma[0])]
    if failed and warn:
        warnings.warn(f"{len(failed)} of {len(fits)} frame(s) could not be fitted (sigma NaN): "
                      f"frames {failed[:10]}{'...' if len(failed) > 10 else ''}",
                      BlurFitWarning, stacklevel=2)
    return fits
