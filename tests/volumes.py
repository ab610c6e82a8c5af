"""3D test volumes from real images: textured stacks and bead slides (issue 21's cases)."""

import numpy as np
from scipy import ndimage
from skimage import data

from napari_blurfit._gaussian import GaussianKernel


def _sources() -> list[np.ndarray]:
    """Real photographs and micrographs of scikit-image, grey, in [0, 1]."""
    images = [data.brick(), data.grass(), data.gravel(), data.camera(), data.moon(),
              data.astronaut()[..., 1], data.coffee()[..., 0], data.chelsea()[..., 2],
              data.cell(), data.coins(), data.page()]
    return [np.asarray(i, dtype=np.float64) / 255.0 for i in images]


def textured(shape, seed: int = 0, spacing: float = 4.0) -> np.ndarray:
    """A volume with real texture in every direction.

    Key planes every ``spacing`` slices are independent windows of real images (randomly chosen,
    flipped); the slices between are their cubic interpolation. A stack of shifted windows of one
    image would be constant along a direction, which a 3D covariance cannot be fitted through.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    sources = _sources()
    keys = []
    for _ in range(int(np.ceil(nz / spacing)) + 4):
        image = sources[rng.integers(len(sources))]
        image = np.pad(image, [(0, max(0, ny - image.shape[0])), (0, max(0, nx - image.shape[1]))],
                       mode="symmetric")
        y0, x0 = rng.integers(0, image.shape[0] - ny + 1), rng.integers(0, image.shape[1] - nx + 1)
        window = image[y0 : y0 + ny, x0 : x0 + nx]
        keys.append(window[:: rng.choice([-1, 1]), :: rng.choice([-1, 1])])
    z = (np.arange(nz) + 2 * spacing) / spacing
    coords = np.meshgrid(z, np.arange(ny), np.arange(nx), indexing="ij")
    return ndimage.map_coordinates(np.stack(keys), coords, order=3, mode="nearest")


def beads(shape, n: int = 300, seed: int = 0, texture: float = 0.05, amplitude: float = 1000.0):
    """A bead slide: ``n`` bright points on a fine random texture, float32 counts."""
    rng = np.random.default_rng(seed)
    volume = ndimage.gaussian_filter(texture * amplitude * rng.random(shape), 0.6)
    volume[tuple(rng.integers(0, s, n) for s in shape)] += amplitude
    return volume.astype(np.float32)


def blurred(volume, covariance, shift=None, *, noise: float = 0.0, seed: int = 1) -> np.ndarray:
    """``volume`` blurred and moved by an exact Gaussian, plus noise of ``noise`` times its range."""
    out = GaussianKernel(np.asarray(covariance, float), shift).apply(volume)
    if noise:
        out += np.random.default_rng(seed).normal(0.0, noise * np.ptp(out), out.shape)
    return out.astype(volume.dtype)


def rotated(sigmas, degrees) -> np.ndarray:
    """Covariance of principal ``sigmas`` (z, y, x) turned by ``degrees`` about x, then about z."""
    a, b = np.deg2rad(degrees)
    about_x = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_z = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    turn = about_x @ about_z
    return turn @ np.diag(np.asarray(sigmas, float) ** 2) @ turn.T


def covariance_error(fitted, true) -> float:
    """``||S^-1/2 C S^-1/2 - I||_F``: every direction's relative variance error (issue 21's measure)."""
    w, v = np.linalg.eigh(np.asarray(true, float))
    root = v @ np.diag(w**-0.5) @ v.T
    return float(np.linalg.norm(root @ np.asarray(fitted, float) @ root - np.eye(len(w))))
