"""napari-blurfit: find the Gaussian blur that turns image A into image B.

The fitting core (`fit_blur`, `fit_blur_stack`, `blur_map`) needs only numpy and scipy (dask for
lazy inputs); the napari widget lives in `napari_blurfit._widget` and is imported only by napari.
"""

from ._finding import Finding
from ._result import BlurFit, BlurFitWarning
from .blurmap import BlurMap, blur_map
from .fit import fit_blur
from .grids import Grid
from .stack import fit_blur_stack

__version__ = "0.1.0"
__all__ = ["BlurFit", "BlurFitWarning", "BlurMap", "Finding", "Grid", "blur_map", "fit_blur",
           "fit_blur_stack"]
