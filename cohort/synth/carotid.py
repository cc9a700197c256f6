"""The internal carotid artery of one side, as a centreline through its four segments.

Control points follow the artery's course from the neck up to its terminal bifurcation:
vertical in the neck (cervical), up and then anteromedially inside the petrous bone
(petrous), forwards and up beside the sella in the cavernous sinus (cavernous), and past the
anterior clinoid process above the skull base (supraclinoid). Heights increase strictly
along the path, so an axial plane cuts each artery once and segment membership by slice
(the method's rule) matches the course of the vessel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

from cohort.anatomy import side_sign
from cohort.synth.subject import SideAnatomy


@dataclass(frozen=True)
class Centreline:
    """Points (n, 3) along one ICA every ~1 mm, lumen radius and segment (0..3) of each."""

    side: str
    points: np.ndarray
    radius: np.ndarray
    segment: np.ndarray
    landmark_points: dict[str, np.ndarray]  # carotid_canal / petrolingual / anterior_clinoid

    def span(self, segment: int) -> np.ndarray:
        """Indices of the points belonging to one segment (0 cervical .. 3 supraclinoid)."""
        return np.flatnonzero(self.segment == segment)


def build_centreline(side: str, a: SideAnatomy, bottom: float = -170.0) -> Centreline:
    """The ICA of one side from its anatomy (head frame)."""
    s = side_sign(side)
    cc, pl, ac = a.z_carotid_canal, a.z_petrolingual, a.z_anterior_clinoid
    h = pl - cc
    xc, xv = a.x_cervical, a.x_cavernous
    ctrl = np.array([
        (xc, 13.0, bottom),
        (xc, 12.5, cc - 20.0),
        (xc + 0.5, 12.0, cc),                   # 2: enters the carotid canal
        (xc + 0.5, 11.0, cc + 0.25 * h),        # vertical petrous part
        (xc - 2.0, 7.0, cc + 0.45 * h),         # petrous genu
        (xv + 3.0, 0.0, pl - 0.28 * h),         # horizontal petrous part, anteromedially
        (xv + 1.0, -2.0, pl),                   # 6: leaves the bone (petrolingual ligament)
        (xv, -3.0, pl + 3.0),                   # ascends into the cavernous sinus
        (xv, -10.0, pl + 0.45 * (ac - pl)),     # horizontal cavernous part, forwards
        (xv - 0.5, -15.0, ac - 3.0),            # anterior genu
        (xv - 1.0, -13.0, ac),                  # 10: passes the anterior clinoid
        (xv - 2.0, -8.0, ac + 5.0),             # supraclinoid, back and up
        (xv - 1.0, -5.0, ac + 10.0),            # terminal bifurcation
    ])
    ctrl[:, 0] *= s
    t = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(ctrl, axis=0), axis=1))])
    tt = np.arange(0.0, t[-1], 1.0)
    pts = np.stack([PchipInterpolator(t, ctrl[:, d])(tt) for d in range(3)], axis=1)
    z = pts[:, 2]
    seg = (z >= cc).astype(np.int8) + (z >= pl) + (z >= ac)
    radius = a.radius * np.array([1.0, 0.95, 0.9, 0.78])[seg]
    marks = {"carotid_canal": ctrl[2], "petrolingual": ctrl[6], "anterior_clinoid": ctrl[10]}
    return Centreline(side, pts, radius, seg, marks)
