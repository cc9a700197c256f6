"""From the DST's six distributions over slices to six landmark slices.

The paper takes each landmark's most probable slice on its own. Anatomy orders them: on
each side the carotid canal lies at or below the petrolingual ligament, which lies at or
below the anterior clinoid. `ordered_slices` takes, per side, the three slices of highest
joint log-probability that keep that order (exact, O(D) by dynamic programming); where the
independent argmaxes are already in order (nearly always on a good model) it returns them
unchanged, and it says which landmarks it had to move, so that a caller can flag them.

`sub_slice` refines a slice to a position between slices: the probability-weighted mean
index over the slices within ``radius`` of the chosen one, for z in millimetres finer than
the slice step.
"""

from __future__ import annotations

import numpy as np

from cohort.anatomy import LANDMARK_KINDS, LANDMARKS, SIDES


def _ordered_three(lp: np.ndarray) -> tuple[int, int, int]:
    """(3, D) log-probabilities -> (i, j, k), i <= j <= k, maximising their sum."""
    d = lp.shape[1]
    # best_a[j]: best lp[0] at an index <= j, and where
    arg_a = np.zeros(d, dtype=np.int64)
    best_a = np.empty(d)
    best, where = -np.inf, 0
    for j in range(d):
        if lp[0, j] > best:
            best, where = lp[0, j], j
        best_a[j], arg_a[j] = best, where
    # best_b[k]: best best_a[j] + lp[1, j] at j <= k, and where
    ab = best_a + lp[1]
    arg_b = np.zeros(d, dtype=np.int64)
    best_b = np.empty(d)
    best, where = -np.inf, 0
    for k in range(d):
        if ab[k] > best:
            best, where = ab[k], k
        best_b[k], arg_b[k] = best, where
    k = int(np.argmax(best_b + lp[2]))
    j = int(arg_b[k])
    return int(arg_a[j]), j, k


def ordered_slices(probabilities: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Landmark slices in anatomical order on each side.

    Args:
        probabilities: (6, D) per landmark (in the order of `LANDMARKS`) a distribution over
            the D slices.

    Returns:
        (6,) slice indices, and the names of the landmarks whose slice differs from their
        own most probable one (empty when the argmaxes were in order).
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    top = probs.argmax(axis=1)
    out = top.copy()
    with np.errstate(divide="ignore"):
        logp = np.log(probs)
    for side in SIDES:
        rows = [LANDMARKS.index(f"{side}_{kind}") for kind in LANDMARK_KINDS]
        if top[rows[0]] <= top[rows[1]] <= top[rows[2]]:
            continue
        out[rows] = _ordered_three(logp[rows])
    moved = tuple(name for n, name in enumerate(LANDMARKS) if out[n] != top[n])
    return out, moved


def sub_slice(probabilities: np.ndarray, slices: np.ndarray, radius: int = 2) -> np.ndarray:
    """(6,) fractional slice positions: per landmark, the probability-weighted mean index of
    the slices within ``radius`` of its chosen slice."""
    probs = np.asarray(probabilities, dtype=np.float64)
    d = probs.shape[1]
    out = np.empty(len(slices))
    for n, s in enumerate(slices):
        lo, hi = max(0, int(s) - radius), min(d, int(s) + radius + 1)
        w = probs[n, lo:hi]
        out[n] = float((w * np.arange(lo, hi)).sum() / w.sum()) if w.sum() > 0 else float(s)
    return out
