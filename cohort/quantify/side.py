"""Which side of the patient a calcium voxel lies on, from a midline given by the caller.

Quantification does not find the midline itself: it takes a *side function*, any callable
mapping world points (n, 3) in LPS millimetres to signed distances (n,) in mm from the
midsagittal plane, positive towards the patient's left (LPS +x). The hemisphere stage's plane
(``plane.signed_distance``) is one; `plane_side` builds one from a point and a normal.

Rule for a voxel exactly on the midline (distance 0): it belongs to the patient's *left*.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cohort.anatomy import SIDES

#: world points (n, 3), LPS mm -> signed distance (n,) in mm, positive = patient left
SideFunction = Callable[[np.ndarray], np.ndarray]

RIGHT = SIDES.index("right")  # side codes used in the summaries: index into SIDES
LEFT = SIDES.index("left")


def plane_side(point, normal) -> SideFunction:
    """A side function for the plane through ``point`` (LPS mm) with ``normal``.

    ``normal`` need not be unit length; it must point towards the patient's left (a
    normal with a negative x component is taken as given, so say what you mean).

    Raises:
        ValueError: ``normal`` has zero length or ``point``/``normal`` are not 3-vectors.
    """
    p = np.asarray(point, dtype=float).reshape(-1)
    n = np.asarray(normal, dtype=float).reshape(-1)
    if p.shape != (3,) or n.shape != (3,):
        raise ValueError(f"plane point and normal must be 3-vectors, got {p} and {n}")
    length = float(np.linalg.norm(n))
    if not length > 0:
        raise ValueError("the plane normal has zero length; give the direction towards the "
                         "patient's left, e.g. (1, 0, 0) in LPS")
    unit = n / length

    def signed_distance(points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=float) - p) @ unit

    return signed_distance


def side_codes(side_of: SideFunction, points: np.ndarray) -> np.ndarray:
    """Side code per world point: `RIGHT` (0) or `LEFT` (1), as int8 (n,).

    Raises:
        ValueError: the side function returned the wrong shape or non-finite distances.
    """
    points = np.asarray(points, dtype=float).reshape(-1, 3)
    d = np.asarray(side_of(points), dtype=float)
    if d.shape != (len(points),):
        raise ValueError(f"the side function returned shape {d.shape} for {len(points)} "
                         "points; it must return one signed distance (mm) per point")
    if len(d) and not np.isfinite(d).all():
        raise ValueError("the side function returned non-finite distances; check the "
                         "midline plane (a zero normal?)")
    return np.where(d >= 0, LEFT, RIGHT).astype(np.int8)
