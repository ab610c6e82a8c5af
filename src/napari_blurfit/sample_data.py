"""The bundled sample pair: a real micrograph and a defocused-looking second acquisition.

reference: a 320 x 320 crop of scikit-image's ``cell`` quantitative-phase image (CC0, 0.107 um
pixels). target: ``0.7 * gaussian_filter(reference, 2.5) + 12`` plus noise (sd 2), float32; see
``scripts/make_sample_data.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "cell_reference.tif"
TARGET = DATA / "cell_target.tif"
PIXEL_SIZE_UM = 0.107
TRUE_SIGMA, TRUE_GAIN, TRUE_OFFSET = 2.5, 0.7, 12.0


def load_sample_pair() -> tuple[np.ndarray, np.ndarray]:
    """Return ``(reference, target)`` as numpy arrays."""
    from .io import read_image

    return read_image(REFERENCE), read_image(TARGET)


def sample_layers():
    """Napari sample-data hook: two image layers with the micrograph's pixel size."""
    reference, target = load_sample_pair()
    scale = (PIXEL_SIZE_UM, PIXEL_SIZE_UM)
    units = ("micrometer", "micrometer")
    return [
        (reference, {"name": "cell reference", "scale": scale, "units": units}, "image"),
        (target, {"name": "cell target", "scale": scale, "units": units}, "image"),
    ]
