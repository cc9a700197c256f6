"""Landmark slices -> per-side segment boundaries, with one rule for landmarks out of order.

The boundary rule itself (a slice on a landmark belongs to the distal segment) is
`cohort.anatomy.segment_of_slices`; this module only decides which three slices it gets.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cohort.anatomy import LANDMARK_KINDS, LANDMARKS

Bounds = tuple[int, int, int]  # (carotid canal, petrolingual, anterior clinoid) slices


def validate_landmarks(landmarks: Mapping[str, int]) -> dict[str, int]:
    """The six landmark slices as ints.

    Raises:
        ValueError: a landmark of `cohort.anatomy.LANDMARKS` is missing or not a whole number.
    """
    missing = [name for name in LANDMARKS if name not in landmarks]
    if missing:
        raise ValueError(f"landmarks {missing} are missing; give a slice index for each of "
                         f"{', '.join(LANDMARKS)}")
    out = {}
    for name in LANDMARKS:
        v = landmarks[name]
        try:
            whole = not isinstance(v, bool) and float(v).is_integer()
        except (TypeError, ValueError):
            whole = False
        if not whole:
            raise ValueError(f"landmark {name} must be a slice index (a whole number), got {v!r}")
        out[name] = int(v)
    return out


def side_landmarks(landmarks: Mapping[str, int], side: str) -> Bounds:
    """(cc, pl, ac) slices of one side, as given."""
    cc, pl, ac = (int(landmarks[f"{side}_{kind}"]) for kind in LANDMARK_KINDS)
    return cc, pl, ac


def in_order(bounds: Bounds) -> bool:
    """True when the slices are in anatomical order, cc <= pl <= ac."""
    cc, pl, ac = bounds
    return cc <= pl <= ac


def usable_bounds(landmarks: Mapping[str, int], side: str, policy: str = "sort") -> Bounds | None:
    """The slices a side is quantified with: as given when in order; otherwise sorted
    (``policy="sort"``) or None (``policy="omit"``: the side's segments stay unknown)."""
    bounds = side_landmarks(landmarks, side)
    if in_order(bounds):
        return bounds
    if policy == "omit":
        return None
    cc, pl, ac = (int(v) for v in np.sort(bounds))
    return cc, pl, ac
