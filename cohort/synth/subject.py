"""One synthetic subject: anatomy, landmark heights, head pose and calcium plaques.

All values are drawn from a seeded generator, so a subject is a pure function of
(cohort seed, patient index). Lengths are in mm in the head frame (LPS axes, origin at the
centre of the pituitary fossa); angles in degrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cohort.anatomy import SEGMENT_KINDS, SIDES

#: where plaques sit, by segment (cervical, petrous, cavernous, supraclinoid): the DST paper
#: reports about 77% of intracranial ICAC in the cavernous and supraclinoid segments.
PLAQUE_SEGMENT_P = (0.10, 0.13, 0.45, 0.32)


@dataclass(frozen=True)
class SideAnatomy:
    """Heights (head-frame z, mm) of one side's three landmark events, and artery layout."""

    z_carotid_canal: float  # the artery enters the petrous bone (canal's lower opening)
    z_petrolingual: float  # the artery leaves the petrous bone into the cavernous sinus
    z_anterior_clinoid: float  # upper surface of the anterior clinoid process
    x_cervical: float  # lateral distance of the cervical ICA from the midline
    x_cavernous: float  # lateral distance of the cavernous ICA from the midline
    radius: float  # lumen radius of the ICA in the neck
    # unit normals of the bony surfaces the artery crosses at each landmark: oblique, never
    # horizontal planes, so that no flat bone edge marks a landmark height across the head
    canal_surface: tuple[float, float, float] = (0.0, 0.0, 1.0)
    petrolingual_surface: tuple[float, float, float] = (0.0, 0.0, 1.0)
    clinoid_surface: tuple[float, float, float] = (0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Plaque:
    """A calcified plaque on the wall of one ICA."""

    side: str
    segment: str  # where it was placed (its label still comes from the slice rule)
    position: float  # 0..1 along that segment's height range
    angle_deg: float  # around the vessel
    volume_mm3: float
    hu: float
    aspect: float  # length along the vessel / width around it


@dataclass(frozen=True)
class Pose:
    """Head position in the scanner: rotation and translation of the head frame."""

    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    shift_mm: tuple[float, float, float]


@dataclass(frozen=True)
class Subject:
    index: int
    vault_center: tuple[float, float, float]
    vault_radii: tuple[float, float, float]  # skin surface of the cranium
    scalp_mm: float
    outer_table_mm: float
    diploe_mm: float
    inner_table_mm: float
    floor_anterior: float  # anterior cranial fossa floor height
    floor_middle: float
    floor_posterior: float
    neck_radii: tuple[float, float]
    right: SideAnatomy
    left: SideAnatomy
    plaques: tuple[Plaque, ...]

    def side(self, name: str) -> SideAnatomy:
        return self.left if name == "left" else self.right


def sample_subject(rng: np.random.Generator, index: int, calcium_free_fraction: float) -> Subject:
    """Draw one subject's anatomy and calcium."""
    size = rng.normal(1.0, 0.05)
    vault_radii = tuple(float(r * size * rng.normal(1, 0.025)) for r in (76.0, 96.0, 80.0))
    # Subject-level landmark heights vary by several mm; sides differ by a few mm.
    z_cc = rng.normal(-31.0, 3.0)
    h_petrous = rng.normal(14.0, 1.8)
    h_cavernous = rng.normal(15.5, 1.8)
    sides = {}
    for name in SIDES:
        cc = z_cc + rng.normal(0, 1.3)
        pl = cc + max(9.0, h_petrous + rng.normal(0, 1.0))
        ac = pl + max(10.0, h_cavernous + rng.normal(0, 1.0))
        sides[name] = SideAnatomy(
            z_carotid_canal=float(cc), z_petrolingual=float(pl), z_anterior_clinoid=float(ac),
            x_cervical=float(rng.normal(25.0, 1.5)), x_cavernous=float(rng.normal(14.5, 0.8)),
            radius=float(rng.normal(2.5, 0.2)),
            canal_surface=_oblique(rng, 15.0, 35.0),
            petrolingual_surface=_oblique(rng, 20.0, 40.0),
            clinoid_surface=_oblique(rng, 5.0, 15.0),
        )
    plaques: list[Plaque] = []
    if rng.random() >= calcium_free_fraction:
        n = int(rng.integers(1, 9))
        for _ in range(n):
            seg = SEGMENT_KINDS[rng.choice(4, p=PLAQUE_SEGMENT_P)]
            plaques.append(Plaque(
                side=SIDES[int(rng.integers(2))], segment=seg,
                position=float(rng.uniform(0.08, 0.92)), angle_deg=float(rng.uniform(0, 360)),
                # log-uniform 1 .. 200 mm^3
                volume_mm3=float(np.exp(rng.uniform(np.log(1.0), np.log(200.0)))),
                hu=float(rng.uniform(350, 1500)), aspect=float(rng.uniform(1.0, 3.0)),
            ))
    return Subject(
        index=index,
        vault_center=(0.0, float(rng.normal(12.0, 2.0)), float(rng.normal(22.0, 2.0))),
        vault_radii=vault_radii,
        scalp_mm=float(rng.uniform(4.0, 6.5)),
        outer_table_mm=float(rng.uniform(1.4, 2.2)),
        diploe_mm=float(rng.uniform(2.0, 4.5)),
        inner_table_mm=float(rng.uniform(1.2, 1.8)),
        # planum sphenoidale and the orbital roofs: about level with the clinoid tips
        floor_anterior=float(np.mean([sides[s].z_anterior_clinoid for s in SIDES])
                             + rng.normal(3.0, 1.0)),
        floor_middle=float(rng.normal(-24.0, 1.5) + (z_cc + 31.0) * 0.5),
        floor_posterior=float(rng.normal(-40.0, 2.0)),
        neck_radii=(float(rng.normal(56, 4)), float(rng.normal(60, 4))),
        right=sides["right"], left=sides["left"],
        plaques=tuple(plaques),
    )


def _oblique(rng: np.random.Generator, lo_deg: float, hi_deg: float):
    """A unit vector tilted from the superior axis by lo..hi degrees, in any direction."""
    tilt = np.radians(rng.uniform(lo_deg, hi_deg))
    az = rng.uniform(0, 2 * np.pi)
    return (float(np.sin(tilt) * np.cos(az)), float(np.sin(tilt) * np.sin(az)),
            float(np.cos(tilt)))


def sample_pose(rng: np.random.Generator) -> Pose:
    """Head position: several degrees of yaw / pitch / roll, and a shift in the field of view."""
    ang = np.clip(rng.normal(0, 3.5, size=3), -9, 9)
    return Pose(float(ang[0]), float(ang[1]), float(ang[2]),
                (float(rng.normal(0, 6)), float(rng.normal(0, 8)), 0.0))
