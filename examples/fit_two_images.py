"""Fit the blur between the bundled sample pair, then reproduce the target with scipy."""

import numpy as np
from scipy import ndimage

from napari_blurfit import fit_blur
from napari_blurfit.sample_data import load_sample_pair

reference, target = load_sample_pair()
fit = fit_blur(reference, target, gain_offset=True, per_axis=True)
print(fit.summary())

# the fitted sigma is exactly what scipy.ndimage.gaussian_filter takes
remade = fit.gain * ndimage.gaussian_filter(reference.astype(np.float64), fit.sigma) + fit.offset
print("residual RMS:", float(np.sqrt(np.mean((target - remade) ** 2))))

robust = fit_blur(reference, target, gain_offset=True, loss="l1")
print("L1 sigma:", robust.sigma)
