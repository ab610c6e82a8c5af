"""Pixel losses and the best gain/offset under them for a fixed blur.

Sums are returned (not means) so that blocks of a stack or a dask array can be added up.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

LOSSES = ("l2", "l1", "huber")


def loss_sum(residual: np.ndarray, loss: str, delta: float, *, overwrite: bool = False) -> float:
    """``sum rho(residual)`` in float64 (``scipy.special.huber`` convention for Huber).

    ``overwrite`` lets it use ``residual``'s memory instead of a new array.
    """
    r = residual
    out = r if overwrite else None
    if loss == "l2":
        return float(np.square(r, out=out).sum(dtype=np.float64))
    if loss == "l1":
        return float(np.abs(r, out=out).sum(dtype=np.float64))
    return float(special.huber(delta, r).sum(dtype=np.float64))


def irls_sums(model: np.ndarray, target: np.ndarray, gain: float, offset: float, loss: str,
              delta: float) -> np.ndarray:
    """Weighted normal-equation sums ``[sum w, w*F, w*F^2, w*B, w*F*B]`` and the loss.

    One iteration of iteratively reweighted least squares for ``target ~ gain * model + offset``:
    weights come from the current residual (1 for L2, ``min(1, delta/|r|)`` for Huber,
    ``1/|r|`` floored for L1).
    """
    f = model.astype(np.float64, copy=False)
    b = target.astype(np.float64, copy=False)
    r = gain * f + offset - b
    value = loss_sum(r, loss, delta)
    a = np.abs(r)
    if loss == "l2":
        w = np.ones_like(a)
    elif loss == "huber":
        w = np.minimum(1.0, delta / np.maximum(a, 1e-300))
    else:
        w = 1.0 / np.maximum(a, delta)
    wf = w * f
    sums = np.array([w.sum(), wf.sum(), np.vdot(wf, f), np.vdot(w, b), np.vdot(wf, b)])
    return np.append(sums, value)


def solve_weighted(sums: np.ndarray) -> tuple[float, float]:
    """Gain and offset from `irls_sums` (falls back to offset only if the model is flat)."""
    sw, sf, sff, sb, sfb = sums[:5]
    det = sw * sff - sf * sf
    if det <= 1e-12 * max(sw * sff, 1e-300):
        return 0.0, float(sb / sw)
    gain = (sw * sfb - sf * sb) / det
    return float(gain), float((sb - gain * sf) / sw)


def robust_gain_offset(sums_at, gain: float, offset: float, loss: str, *, iterations: int = 60,
                       rtol: float = 1e-10, callback=None) -> tuple[float, float, float]:
    """Iterate IRLS from ``(gain, offset)``; ``sums_at(g, o)`` returns `irls_sums` over all pixels.

    Returns the best ``(gain, offset, loss_sum)`` seen, so the loss never increases.
    """
    sums = sums_at(gain, offset)
    best = (gain, offset, float(sums[5]))
    if loss == "l2":
        g, o = solve_weighted(sums)
        return g, o, float(sums_at(g, o)[5])
    for _ in range(iterations):
        if callback is not None:
            callback("gain/offset iteration")
        gain, offset = solve_weighted(sums)
        sums = sums_at(gain, offset)
        value = float(sums[5])
        improved = best[2] - value
        if value < best[2]:
            best = (gain, offset, value)
        if improved < rtol * max(abs(best[2]), 1e-300):
            break
    return best


def l1_gain_offset(model: np.ndarray, target: np.ndarray, gain: float,
                   callback=None) -> tuple[float, float, float]:
    """Exact least-absolute-deviation ``target ~ gain * model + offset`` for in-memory pixels.

    For a given gain the best offset is the median residual, and the remaining function of the
    gain is convex, so a bracketing Brent search over the gain is exact and fast (a median per
    step, where IRLS for L1 converges only linearly).
    """
    f = model.astype(np.float64, copy=False)
    b = target.astype(np.float64, copy=False)

    def cost(g):
        if callback is not None:
            callback("gain/offset step")
        r = b - g * f
        o = float(np.median(r))
        return float(np.abs(r - o).sum()), o

    width = 0.02 * max(abs(gain), 1e-3)
    lo, hi = gain - width, gain + width
    c0 = cost(gain)[0]
    while cost(lo)[0] < c0:  # convex: walk until the ends are uphill
        lo -= 2 * (gain - lo)
    while cost(hi)[0] < c0:
        hi += 2 * (hi - gain)
    res = optimize.minimize_scalar(lambda g: cost(g)[0], bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-7 * max(abs(gain), 1e-3)})
    g = float(res.x) if res.fun < c0 else gain
    value, o = cost(g)
    return g, o, value
