"""Brute-force model of issue 24 (images on different grids), independent of the package.

The model, as the issue states it: a kernel ``K`` sampled on the source grid (covariance ``C``
and shift ``mu`` in source pixels; ``exp(-1/2 (n - mu)^T C^-1 (n - mu))`` at the integer offsets
``n`` within ``int(truncate * sqrt(C_ii) + |mu_i| + 0.5)`` per axis, normalised), the image
``M = gain * (K * source) + offset`` with the source extended by half-sample reflection, then
per pixel of the goal grid either the mean of ``M`` over the pixel's footprint ("area": each
source pixel weighted by the part of its area inside the footprint) or ``M`` linearly
interpolated at the pixel's centre ("point"). Goal pixels whose footprint is not inside the
source's extent are left out (NaN in the model image).

A grid here is a plain dict ``{"scale": (...), "translate": (...), "sampling": ...}``: world
units per pixel, the world position of pixel 0's centre, and how the goal image samples.
Spatial axes are the last ``d`` axes; leading axes are frames sharing one kernel.

Nothing is imported from ``napari_blurfit``: the weights are computed from world coordinates
in plain loops, the convolution by `scipy.signal.fftconvolve` of an explicitly padded image
(checked against a loop over the kernel's offsets), and the fit is `scipy.optimize`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import optimize, signal, special

EDGE_TOL = 1e-9  # in pixels: a footprint edge this close to the extent's edge is on it


# --- grids ------------------------------------------------------------------------------

def grid(scale, translate=0.0, sampling="area", ndim=2) -> dict:
    """A plain grid dict with per-axis tuples (one number is repeated over ``ndim`` axes)."""
    scale = np.broadcast_to(np.asarray(scale, float), (ndim,))
    translate = np.broadcast_to(np.asarray(translate, float), (ndim,))
    return {"scale": tuple(map(float, scale)), "translate": tuple(map(float, translate)),
            "sampling": sampling}


def pixel_box(g: dict, axis: int, index: int) -> tuple[float, float]:
    """World coordinates of the two edges of pixel ``index`` of grid ``g`` along ``axis``."""
    s, t = g["scale"][axis], g["translate"][axis]
    return t + (index - 0.5) * s, t + (index + 0.5) * s


def inside(source: dict, n_source: int, goal: dict, axis: int, j: int) -> bool:
    """Whether goal pixel ``j``'s footprint lies inside the source's extent along ``axis``."""
    lo, hi = pixel_box(goal, axis, j)
    first, _ = pixel_box(source, axis, 0)
    _, last = pixel_box(source, axis, n_source - 1)
    tol = EDGE_TOL * min(source["scale"][axis], goal["scale"][axis])
    return lo >= first - tol and hi <= last + tol


def _reflect(i: int, n: int) -> int:
    """Half-sample symmetric index (scipy's ``mode="reflect"``)."""
    period = 2 * n
    i %= period
    return i if i < n else period - 1 - i


def axis_weights(source: dict, n_source: int, goal: dict, n_goal: int, axis: int):
    """Resampling matrix ``W[j, i]`` and validity of each goal pixel along one axis.

    "area": ``W[j, i]`` is the length of source pixel ``i`` inside goal pixel ``j``'s footprint
    over the footprint's length; "point": the linear-interpolation weights at goal pixel ``j``'s
    centre, reflecting beyond the edge. Axis-aligned boxes make the nD weight the product of
    these (`pixel_weights` computes it per pixel to check that).
    """
    w = np.zeros((n_goal, n_source))
    valid = np.zeros(n_goal, bool)
    for j in range(n_goal):
        valid[j] = inside(source, n_source, goal, axis, j)
        if goal["sampling"] == "area":
            lo, hi = pixel_box(goal, axis, j)
            for i in range(n_source):
                a, b = pixel_box(source, axis, i)
                w[j, i] = max(0.0, min(hi, b) - max(lo, a)) / (hi - lo)
        elif goal["sampling"] == "point":
            centre = goal["translate"][axis] + j * goal["scale"][axis]
            u = (centre - source["translate"][axis]) / source["scale"][axis]
            i0 = int(np.floor(u))
            f = u - i0
            w[j, _reflect(i0, n_source)] += 1.0 - f
            w[j, _reflect(i0 + 1, n_source)] += f
        else:
            raise ValueError(f"unknown sampling {goal['sampling']!r}")
    return w, valid


def pixel_weights(source: dict, source_shape, goal: dict, index) -> dict:
    """Weights of one goal pixel over source pixels, computed in nD from world coordinates.

    Independent of `axis_weights`' separable form: "area" takes the overlap volume of the
    footprint box with each source pixel's box; "point" the multilinear weights of the
    ``2^d`` neighbours of the centre.
    """
    d = len(source_shape)
    weights: dict = {}
    if goal["sampling"] == "area":
        boxes = [pixel_box(goal, a, index[a]) for a in range(d)]
        volume = np.prod([hi - lo for lo, hi in boxes])
        ranges = []
        for a, (lo, hi) in enumerate(boxes):
            s, t = source["scale"][a], source["translate"][a]
            first = max(0, int(np.floor((lo - t) / s + 0.5)) - 1)
            last = min(source_shape[a] - 1, int(np.floor((hi - t) / s + 0.5)) + 1)
            ranges.append(range(first, last + 1))
        for src in itertools.product(*ranges):
            overlap = 1.0
            for a, (lo, hi) in enumerate(boxes):
                p, q = pixel_box(source, a, src[a])
                overlap *= max(0.0, min(hi, q) - max(lo, p))
            if overlap > 0:
                weights[src] = weights.get(src, 0.0) + overlap / volume
        return weights
    u = [(goal["translate"][a] + index[a] * goal["scale"][a] - source["translate"][a])
         / source["scale"][a] for a in range(d)]
    base = [int(np.floor(v)) for v in u]
    for corner in itertools.product((0, 1), repeat=d):
        w = np.prod([(u[a] - base[a]) if c else (1.0 - (u[a] - base[a]))
                     for a, c in enumerate(corner)])
        src = tuple(_reflect(base[a] + c, source_shape[a]) for a, c in enumerate(corner))
        weights[src] = weights.get(src, 0.0) + w
    return weights


def resample_pixelwise(image: np.ndarray, source: dict, goal: dict, goal_shape) -> np.ndarray:
    """``image`` (on ``source``) on ``goal``, pixel by pixel with `pixel_weights`; NaN outside."""
    d = len(goal_shape)
    out = np.full(goal_shape, np.nan)
    for index in np.ndindex(*goal_shape):
        if all(inside(source, image.shape[a], goal, a, index[a]) for a in range(d)):
            out[index] = sum(w * image[src] for src, w in
                             pixel_weights(source, image.shape, goal, index).items())
    return out


@dataclass
class Resampler:
    """The separable resampling from a source grid to a goal grid, for fixed shapes."""

    matrices: list
    valid: np.ndarray  # goal spatial shape, bool

    @classmethod
    def between(cls, source: dict, source_shape, goal: dict, goal_shape) -> Resampler:
        d = len(source_shape)
        pairs = [axis_weights(source, source_shape[a], goal, goal_shape[a], a) for a in range(d)]
        valid = np.ones(tuple(goal_shape), bool)
        for a, (_, v) in enumerate(pairs):
            valid &= v.reshape([-1 if b == a else 1 for b in range(d)])
        return cls([w for w, _ in pairs], valid)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``image`` (spatial axes last) on the goal grid, NaN outside the valid pixels."""
        d = len(self.matrices)
        out = image
        for a, w in enumerate(self.matrices):
            axis = out.ndim - d + a
            out = np.moveaxis(np.tensordot(w, out, axes=([1], [axis])), 0, axis)
        return np.where(self.valid, out, np.nan)


# --- the kernel and the blur -------------------------------------------------------------

def radius(covariance, shift, truncate: float = 4.0) -> tuple[int, ...]:
    """Per-axis radius ``int(truncate * sqrt(C_ii) + |mu_i| + 0.5)``."""
    sigma = np.sqrt(np.diag(np.asarray(covariance, float)))
    return tuple(int(truncate * s + abs(m) + 0.5) for s, m in zip(sigma, shift))


def kernel(covariance, shift=None, truncate: float = 4.0) -> np.ndarray:
    """``exp(-1/2 (n - mu)^T C^-1 (n - mu))`` at integer offsets ``-r..r`` per axis, sum 1."""
    cov = np.atleast_2d(np.asarray(covariance, float))
    d = len(cov)
    mu = np.zeros(d) if shift is None else np.asarray(shift, float)
    offsets = np.meshgrid(*[np.arange(-r, r + 1.0) for r in radius(cov, mu, truncate)],
                          indexing="ij")
    z = np.stack(offsets, -1) - mu
    k = np.exp(-0.5 * np.einsum("...i,ij,...j->...", z, np.linalg.inv(cov), z))
    return k / k.sum()


def blur(image: np.ndarray, covariance, shift=None, truncate: float = 4.0) -> np.ndarray:
    """``K * image`` over the last ``d`` axes, the image extended by half-sample reflection."""
    k = kernel(covariance, shift, truncate)
    d = k.ndim
    lead = image.ndim - d
    pad = [(0, 0)] * lead + [((n - 1) // 2,) * 2 for n in k.shape]
    padded = np.pad(np.asarray(image, float), pad, mode="symmetric")
    k = k.reshape((1,) * lead + k.shape)
    return signal.fftconvolve(padded, k, mode="valid", axes=tuple(range(lead, image.ndim)))


def blur_loops(image: np.ndarray, covariance, shift=None, truncate: float = 4.0) -> np.ndarray:
    """The same as `blur` by summing shifted copies, ``sum_n K(n) image[x - n]`` (a check)."""
    k = kernel(covariance, shift, truncate)
    r = [(n - 1) // 2 for n in k.shape]
    padded = np.pad(np.asarray(image, float), [(q, q) for q in r], mode="symmetric")
    out = np.zeros(image.shape)
    for n in np.ndindex(*k.shape):
        offset = [a - q for a, q in zip(n, r)]
        window = tuple(slice(q - o, q - o + s) for q, o, s in zip(r, offset, image.shape))
        out += k[n] * padded[window]
    return out


def model(source: np.ndarray, source_grid: dict, goal_shape, goal_grid: dict, covariance,
          shift=None, gain: float = 1.0, offset: float = 0.0, truncate: float = 4.0,
          resampler: Resampler | None = None) -> np.ndarray:
    """The model image on the goal grid (NaN where a footprint leaves the source's extent).

    ``goal_shape`` is the goal's spatial shape; leading (frame) axes of ``source`` carry over.
    """
    d = len(goal_shape)
    if resampler is None:
        resampler = Resampler.between(source_grid, source.shape[-d:], goal_grid, goal_shape)
    return resampler(gain * blur(source, covariance, shift, truncate) + offset)


# --- fitting ---------------------------------------------------------------------------------

def loss_value(r: np.ndarray, loss: str, delta: float | None = None) -> float:
    """Mean loss of residuals ``r``: squared, absolute, or `scipy.special.huber`."""
    if loss == "l2":
        return float(np.mean(r**2))
    if loss == "l1":
        return float(np.mean(np.abs(r)))
    return float(np.mean(special.huber(delta, r)))


@dataclass
class Params:
    """How a parameter vector maps to (covariance, shift, gain, offset)."""

    d: int
    per_axis: bool
    full_covariance: bool
    shift: bool
    gain_offset: bool

    def covariance(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        d = self.d
        if self.full_covariance:  # log-Cholesky: C = L L^T
            low = np.zeros((d, d))
            rows, cols = np.tril_indices(d)
            low[rows, cols] = x[: len(rows)]
            low[np.diag_indices(d)] = np.exp(np.diag(low))
            return low @ low.T, len(rows)
        n = d if self.per_axis else 1
        sigma = np.broadcast_to(np.exp(x[:n]), (d,))
        return np.diag(sigma**2), n

    def unpack(self, x: np.ndarray):
        cov, used = self.covariance(x)
        mu = np.zeros(self.d)
        if self.shift:
            mu = x[used : used + self.d]
            used += self.d
        gain, offset = (x[used], x[used + 1]) if self.gain_offset else (1.0, 0.0)
        return cov, mu, float(gain), float(offset)

    def pack(self, covariance, shift, gain, offset) -> np.ndarray:
        cov = np.asarray(covariance, float)
        if self.full_covariance:
            low = np.linalg.cholesky(cov)
            low[np.diag_indices(self.d)] = np.log(np.diag(low))
            x = list(low[np.tril_indices(self.d)])
        elif self.per_axis:
            x = list(0.5 * np.log(np.diag(cov)))
        else:
            x = [0.5 * np.log(np.mean(np.diag(cov)))]
        if self.shift:
            x += list(np.asarray(shift, float))
        if self.gain_offset:
            x += [gain, offset]
        return np.array(x, float)


@dataclass
class BruteFit:
    """A brute-force optimum: the kernel, gain/offset and the mean loss over the pixels used."""

    covariance: np.ndarray
    shift: np.ndarray
    gain: float
    offset: float
    loss: float
    n_pixels: int

    @property
    def sigma(self) -> np.ndarray:
        return np.sqrt(np.diag(self.covariance))


class Problem:
    """A fit of ``goal ~ model(source)`` over the valid (and masked) goal pixels."""

    def __init__(self, source, source_grid, goal, goal_grid, *, d: int, mask=None,
                 truncate: float = 4.0):
        self.source = np.asarray(source, float)
        self.goal = np.asarray(goal, float)
        self.source_grid, self.goal_grid, self.truncate = source_grid, goal_grid, truncate
        self.goal_shape = self.goal.shape[-d:]
        self.resampler = Resampler.between(source_grid, self.source.shape[-d:], goal_grid,
                                           self.goal_shape)
        used = self.resampler.valid & np.isfinite(self.goal)
        if mask is not None:
            used &= np.broadcast_to(np.asarray(mask, bool), self.goal.shape)
        self.used = np.broadcast_to(used, self.goal.shape)

    def image(self, covariance, shift, gain, offset) -> np.ndarray:
        return model(self.source, self.source_grid, self.goal_shape, self.goal_grid, covariance,
                     shift, gain, offset, self.truncate, self.resampler)

    def residual(self, covariance, shift, gain, offset) -> np.ndarray:
        """``model - goal`` over the pixels used (flat)."""
        return (self.image(covariance, shift, gain, offset) - self.goal)[self.used]

    def loss(self, covariance, shift=None, gain=1.0, offset=0.0, loss="l2", delta=None) -> float:
        shift = np.zeros(len(self.goal_shape)) if shift is None else shift
        return loss_value(self.residual(covariance, shift, gain, offset), loss, delta)


def fit(source, source_grid, goal, goal_grid, *, start_covariance, start_shift=None,
        start_gain=1.0, start_offset=0.0, loss="l2", per_axis=False, full_covariance=False,
        shift=False, gain_offset=False, mask=None, huber_delta=None, truncate=4.0) -> BruteFit:
    """Minimise the mean loss of ``model(source) - goal`` from a start near the optimum.

    L2 and Huber: `scipy.optimize.least_squares` (Huber as its ``loss="huber"`` with
    ``f_scale=delta``, which is ``scipy.special.huber``). L1: from the L2 optimum, Huber fits of
    a threshold shrinking to 1e-3 of the median |residual| (Huber tends to L1 as it shrinks),
    then a Nelder-Mead polish of the L1 loss itself.
    """
    start_covariance = np.atleast_2d(np.asarray(start_covariance, float))
    d = len(start_covariance)
    problem = Problem(source, source_grid, goal, goal_grid, d=d, mask=mask, truncate=truncate)
    params = Params(d, per_axis, full_covariance, shift, gain_offset)
    x0 = params.pack(start_covariance, np.zeros(d) if start_shift is None else start_shift,
                     start_gain, start_offset)

    def residual(x):
        return problem.residual(*params.unpack(x))

    x = _least_squares(residual, x0, "linear", 1.0)
    if loss == "huber":
        x = _least_squares(residual, x, "huber", huber_delta)
    if loss == "l1":
        for fraction in (1e-1, 1e-2, 1e-3):
            x = _least_squares(residual, x, "huber", fraction * np.median(np.abs(residual(x))))
        x = _nelder_mead(lambda v: loss_value(residual(v), "l1"), x)
    cov, mu, gain, offset = params.unpack(x)
    value = loss_value(residual(x), loss, huber_delta)
    return BruteFit(cov, np.asarray(mu, float), gain, offset, value, int(problem.used.sum()))


def _least_squares(residual, x0: np.ndarray, loss: str, scale: float) -> np.ndarray:
    return optimize.least_squares(residual, x0, loss=loss, f_scale=scale, jac="3-point",
                                  ftol=1e-15, xtol=1e-15, gtol=1e-15, max_nfev=2000).x


def _nelder_mead(f, x0: np.ndarray, step: float = 1e-3, evaluations: int = 400) -> np.ndarray:
    """A short Nelder-Mead from ``x0`` (L1 is not smooth); keeps ``x0`` unless it improves."""
    simplex = np.vstack([x0] + [x0 + step * e * np.maximum(1.0, abs(x0)) for e in np.eye(len(x0))])
    res = optimize.minimize(f, x0, method="Nelder-Mead",
                            options={"initial_simplex": simplex, "xatol": 1e-12, "fatol": 1e-16,
                                     "maxfev": evaluations})
    return res.x if res.fun < f(x0) else x0


# --- measures --------------------------------------------------------------------------------

def direction_error(fitted, true) -> float:
    """Largest relative error of the sigma along any direction: ``max |sqrt(lambda) - 1|``.

    ``lambda`` are the eigenvalues of ``S^-1/2 C S^-1/2`` (fitted ``C``, true ``S``); the sigma
    along a unit direction ``v`` is ``sqrt(v^T C v)``, and the extreme ratios are these.
    """
    w, v = np.linalg.eigh(np.asarray(true, float))
    root = v @ np.diag(w**-0.5) @ v.T
    lam = np.linalg.eigvalsh(root @ np.asarray(fitted, float) @ root)
    return float(np.max(np.abs(np.sqrt(lam) - 1.0)))


def rotated_covariance(sigmas, degrees: float) -> np.ndarray:
    """2D covariance with principal sigmas ``(major, minor)``, the major axis turned by
    ``degrees`` from +x (columns) towards +y (rows); array axes (y, x)."""
    a = np.radians(degrees)
    direction = np.array([[np.sin(a), np.cos(a)], [np.cos(a), -np.sin(a)]])  # columns: (y, x)
    return direction @ np.diag(np.asarray(sigmas, float) ** 2) @ direction.T


def block_mean(image: np.ndarray, factors) -> np.ndarray:
    """Mean over blocks of ``factors`` pixels (the spatial axes last; trailing rows cropped)."""
    d = len(factors)
    lead = image.shape[: image.ndim - d]
    shape = [n // f for n, f in zip(image.shape[-d:], factors)]
    crop = image[(...,) + tuple(slice(0, n * f) for n, f in zip(shape, factors))]
    split = list(lead) + [v for n, f in zip(shape, factors) for v in (n, f)]
    axes = tuple(len(lead) + 2 * a + 1 for a in range(d))
    return crop.reshape(split).mean(axis=axes)
