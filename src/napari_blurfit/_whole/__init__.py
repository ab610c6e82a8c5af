"""Exact fit of a whole kernel: a rotated, elliptical, shifted Gaussian (docs/design.md section 10).

A full covariance or a shift breaks the even symmetry that makes the L2 loss diagonal in the DCT,
so the model is evaluated in space, exactly, by FFT. The parts, each in its own module:

- `spectrum`: the cached spectrum of the reflect-padded reference; models and lag correlations.
- `problem`: one fit's kernel model, loss and data; points, gradients and Hessians.
- `kernel_space`: the whole image's Gauss-Newton matrix from the reference's statistics.
- `solver`: Levenberg-Marquardt with secant updates and a termination status.
- `strategy`: starts, crops, the chord method, a problem built ahead; `fit_whole_gaussian`.
"""

from .problem import Problem, Settings
from .solver import Status
from .strategy import FullFit, fit_whole_gaussian, holds, multistart

__all__ = ["FullFit", "Problem", "Settings", "Status", "fit_whole_gaussian", "holds", "multistart"]
