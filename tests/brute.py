"""Brute-force reference optimiser for the tests: dense sigma grid plus local refinement.

Deliberately independent of the package: every evaluation is a real scipy.ndimage.gaussian_filter
pass, and gain/offset are solved numerically for each sigma.
"""

import numpy as np
from scipy import ndimage, optimize, special


def loss_value(r, loss, delta=None):
    if loss == "l2":
        return float(np.mean(r**2))
    if loss == "l1":
        return float(np.mean(np.abs(r)))
    return float(np.mean(special.huber(delta, r)))


def best_loss_at(a, b, sigma, loss, gain_offset, delta=None, mask=None):
    f = ndimage.gaussian_filter(a, sigma)
    if mask is not None:
        f, b = f[mask], b[mask]
    if not gain_offset:
        return loss_value(f - b, loss, delta)
    design = np.stack([f.ravel(), np.ones(f.size)], axis=1)
    coef = np.linalg.lstsq(design, b.ravel(), rcond=None)[0]
    if loss == "l2":
        return loss_value(design @ coef - b.ravel(), loss)
    res = optimize.minimize(lambda c: loss_value(design @ c - b.ravel(), loss, delta), coef,
                            method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14,
                                                           "maxiter": 4000})
    return float(res.fun)


def brute_force(a, b, *, loss="l2", per_axis=False, gain_offset=False, delta=None, mask=None,
                lo=0.2, hi=20.0, n=60, coarse=16):
    """Lowest loss found by a dense log grid, then Nelder-Mead / bounded Brent from the best point.

    ``coarse``: grid points per axis of the per-axis grid (16^3 is slow in 3D).
    """
    d = a.ndim
    grid = np.geomspace(lo, hi, n)

    def f(t):
        s = np.exp(t)
        sigma = tuple(s) if per_axis else (float(s[0]),) * d
        return best_loss_at(a, b, sigma, loss, gain_offset, delta, mask)

    if per_axis:
        axis = np.geomspace(lo, hi, coarse)
        pts = np.array(np.meshgrid(*[np.log(axis)] * d, indexing="ij")).reshape(d, -1).T
    else:
        pts = np.log(grid)[:, None]
    values = np.array([f(t) for t in pts])
    start = pts[int(np.argmin(values))]
    if per_axis:
        res = optimize.minimize(f, start, method="Nelder-Mead",
                                options={"xatol": 1e-6, "fatol": 1e-14, "maxiter": 600})
        return float(res.fun), np.exp(res.x)
    step = np.log(grid[1] / grid[0])
    res = optimize.minimize_scalar(lambda t: f(np.array([t])), method="bounded",
                                   bounds=(start[0] - step, start[0] + step),
                                   options={"xatol": 1e-7})
    best = min(float(res.fun), float(values.min()))
    return best, np.exp(np.array([res.x] * d))
