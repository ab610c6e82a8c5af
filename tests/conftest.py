"""Shared fixtures: real images from scikit-image, blurred with known sigmas."""

# The fast loop is `pytest -m "not slow"` (the core: accuracy, options, validation, maths, losses;
# about a minute). Plain `pytest` runs everything, as CI does. Every `gui` test is also `slow`.

import numpy as np
import pytest
from skimage import data


def pytest_collection_modifyitems(config, items):
    """Refuse a ``gui`` test that is not also ``slow``: the fast loop never opens a viewer."""
    bad = [item.nodeid for item in items
           if item.get_closest_marker("gui") and not item.get_closest_marker("slow")]
    if bad:
        raise pytest.UsageError("gui tests must also be marked slow: " + ", ".join(bad))


def _crop(img, size):
    y0 = (img.shape[0] - size) // 2
    x0 = (img.shape[1] - size) // 2
    return np.ascontiguousarray(img[y0 : y0 + size, x0 : x0 + size])


@pytest.fixture(scope="session")
def camera():
    """The cameraman photograph, float64, 256x256 centre crop."""
    return _crop(data.camera(), 256).astype(np.float64)


@pytest.fixture(scope="session")
def cell():
    """A quantitative-phase micrograph of a cell (CC0), float64, 256x256 crop."""
    return _crop(data.cell(), 256).astype(np.float64)


@pytest.fixture(scope="session")
def coins():
    """Coins photograph, float64, 192x192 crop."""
    return _crop(data.coins(), 192).astype(np.float64)


@pytest.fixture(scope="session")
def volume():
    """A 3D volume built from real image rows: 24 x 96 x 96 slices of the moon photograph."""
    moon = data.moon().astype(np.float64)
    return np.stack([moon[8 * i : 8 * i + 96, 100 + 4 * i : 196 + 4 * i] for i in range(24)])
