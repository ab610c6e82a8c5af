"""napari-blurfit: which Gaussian blur turns image A into image B?

The fitting core (`fit_blur`, `fit_blur_stack`, `blur_map`) needs only numpy and scipy (dask
optionally); the napari widget lives in `napari_blurfit._widget` and is imported only by napari.
"""

from ._result import BlurFit, BlurFitWarning
from .fit import fit_blur

__version__ = "0.1.0"
__all__ = ["BlurFit", "BlurFitWarning", "fit_blur"]
