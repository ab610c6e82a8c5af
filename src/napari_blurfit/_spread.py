"""Does one joint sigma describe a set of pairs (or frames)? The ``joint_spread`` finding.

A joint fit's Gauss-Newton error bar measures how well the pooled data pin one sigma, not whether
the pairs share it: 59 pairs whose own sigmas run from 1.0 to 2.2 px pool into an error bar of
1e-4 px. When the items' own sigmas spread by more than their errors explain and by more than
`SPREAD_SHARE` of the joint sigma (a practical threshold, not a significance test), the joint
result says so and its error bar takes in the spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ._finding import Finding

SPREAD_SHARE = 0.05  # spread (sd of the items' sigmas) above this share of the joint sigma ...
SPREAD_ERRORS = 3.0  # ... and above this many times the items' typical error: a finding
MAX_OUTLIERS = 5  # items named as outlying, at most
OUTLIER_SPREADS = 2.0  # an item this many spreads from the median is named


class JointSpread(NamedTuple):
    """The items' spread around a joint fit, per spatial axis."""

    finding: Finding | None  # ``joint_spread`` when one sigma does not describe the items
    stderr: np.ndarray  # the joint error bar with the between-item spread taken in


def joint_spread(sigmas, stderrs, joint_sigma, joint_stderr, labels: Sequence[str], *,
                 items: str = "pairs") -> JointSpread:
    """Compare items' own sigmas with their joint sigma.

    Parameters
    ----------
    sigmas, stderrs : array_like, shape (n, d)
        Each item's own sigma and standard error per spatial axis (NaN rows: items that failed).
    joint_sigma, joint_stderr : array_like, shape (d,)
        The joint fit's sigma and its own standard error.
    labels : sequence of str
        A name per item, for the outliers.
    items : str
        What the items are, for the sentence ("pairs", "frames").

    Returns
    -------
    JointSpread
        The finding (None when one sigma describes the items) and the joint error bar, which
        adds the standard error of the items' mean, ``sd / sqrt(n)``, to the joint fit's own
        (kept in the finding's ``values["own_stderr"]``).
    """
    sigmas = np.atleast_2d(np.asarray(sigmas, dtype=np.float64))
    stderrs = np.atleast_2d(np.asarray(stderrs, dtype=np.float64))
    joint = np.asarray(joint_sigma, dtype=np.float64)
    own = np.broadcast_to(np.asarray(joint_stderr, dtype=np.float64), joint.shape)
    good = np.all(np.isfinite(sigmas), axis=1)
    n = int(good.sum())
    if n < 2:
        return JointSpread(None, own)
    s, e = sigmas[good], stderrs[good]
    spread = s.std(axis=0, ddof=1)
    typical = np.nanmedian(np.where(np.isfinite(e), e, np.nan), axis=0)
    typical = np.where(np.isfinite(typical), typical, 0.0)
    stderr = np.sqrt(np.where(np.isfinite(own), own, 0.0) ** 2 + spread**2 / n)
    disagree = (spread > SPREAD_ERRORS * typical) & (spread > SPREAD_SHARE * np.maximum(joint, 1e-12))
    if not np.any(disagree):
        return JointSpread(None, own)
    axis = int(np.argmax(np.where(disagree, spread / np.maximum(joint, 1e-12), -np.inf)))
    column, names = s[:, axis], [label for label, ok in zip(labels, good) if ok]
    median = float(np.median(column))
    far = np.argsort(-np.abs(column - median))
    outliers = [names[i] for i in far[:MAX_OUTLIERS]
                if abs(column[i] - median) > OUTLIER_SPREADS * spread[axis]]
    lo, hi = float(column.min()), float(column.max())
    text = (f"one sigma does not describe these {items}: their own sigmas run from {lo:.3g} to "
            f"{hi:.3g} px (spread {spread[axis]:.2g} px, {100 * spread[axis] / joint[axis]:.0f}% of the "
            f"joint {joint[axis]:.3g} px; {n} {items})")
    if outliers:
        text += f"; furthest from the rest: {', '.join(outliers)}"
    values = {"sigma_range": (lo, hi), "spread": tuple(float(v) for v in spread), "n": n,
              "outliers": tuple(outliers), "axis": axis, "own_stderr": tuple(float(v) for v in own)}
    return JointSpread(Finding("joint_spread", {}, values, text), stderr)
