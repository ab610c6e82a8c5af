"""One sigma over a stack, one per frame, and a blur map where blur varies across the field."""

import numpy as np
from scipy import ndimage

from napari_blurfit import blur_map, fit_blur, fit_blur_stack
from napari_blurfit.sample_data import load_sample_pair

reference, _ = load_sample_pair()
reference = reference.astype(np.float32)
frames = np.stack([np.roll(reference, 20 * i, axis=1) for i in range(4)])
blurred = np.stack([ndimage.gaussian_filter(f, 1.0 + 0.5 * i) for i, f in enumerate(frames)])

# the frames are blurred differently: the joint fit says that one sigma does not describe them
joint = fit_blur(frames, blurred, spatial_axes=(-2, -1), warn=False)
print("one sigma for all frames:", joint.sigma, "+/-", joint.sigma_stderr)
print("findings:", [f.code for f in joint.findings], joint.notes)
print("per frame:", [round(f.sigma[0], 3) for f in fit_blur_stack(frames, blurred)])

# blur that grows from left to right
left_right = np.where(np.arange(reference.shape[1]) < 160,
                      ndimage.gaussian_filter(reference, 1.5), ndimage.gaussian_filter(reference, 3.0))
m = blur_map(reference, left_right, tile=64)
print("tile sigma (axis 0):\n", np.round(m.sigma[..., 0], 2))
print("full-resolution map shape:", m.full_resolution().shape)
