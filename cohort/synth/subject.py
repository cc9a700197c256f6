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


#: plaque morphologies and how often each is drawn: partial or full rings of the wall,
#: lumpy nodules, long thin flecks along the vessel
PLAQUE_KINDS = ("ring", "nodule", "fleck")
PLAQUE_KIND_P = (0.35, 0.4, 0.25)
#: CT numbers of plaques: a quarter faint (140-260 HU, just above the 130 HU rule, so that
#: partial volume on thick slices pushes them below it), the rest 260-1500 HU
FAINT_PLAQUE_P = 0.25


@dataclass(frozen=True)
class Plaque:
    """A calcified plaque in the wall of one ICA: a patch of the wall of free shape."""

    side: str
    segment: str  # where it was placed (its label still comes from the slice rule)
    position: float  # 0..1 along that segment's height range
    angle_deg: float  # around the vessel, of the patch's centre
    volume_mm3: float
    hu: float
    kind: str = "nodule"  # one of PLAQUE_KINDS
    arc_deg: float = 90.0  # extent around the vessel (360: a full ring)
    length_mm: float = 3.0  # extent along the vessel
    shape_seed: int = 0  # the lumps and the outline


def sample_plaque(rng: np.random.Generator, side: str, segment: str, volume_mm3: float,
                  hu: float | None = None) -> Plaque:
    """One plaque of a random morphology on ``side`` in ``segment``."""
    kind = PLAQUE_KINDS[int(rng.choice(len(PLAQUE_KINDS), p=PLAQUE_KIND_P))]
    if kind == "ring":
        arc = 360.0 if rng.random() < 0.35 else float(rng.uniform(150, 320))
        length = float(rng.uniform(1.5, 4.5))
    elif kind == "nodule":
        arc, length = float(rng.uniform(35, 110)), float(rng.uniform(1.5, 5.0))
    else:
        arc, length = float(rng.uniform(12, 35)), float(rng.uniform(4.0, 13.0))
    if hu is None:
        hu = (float(rng.uniform(140, 260)) if rng.random() < FAINT_PLAQUE_P
              else float(rng.uniform(260, 1500)))
    return Plaque(side=side, segment=segment, position=float(rng.uniform(0.08, 0.92)),
                  angle_deg=float(rng.uniform(0, 360)), volume_mm3=float(volume_mm3),
                  hu=float(hu), kind=kind, arc_deg=arc, length_mm=length,
                  shape_seed=int(rng.integers(2**31)))


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
    age_years: float = 65.0
    csf_mm: float = 2.0  # subarachnoid CSF over the convexity
    sulcal_width: float = 0.14  # share of the cortex that is sulcal CSF, about
    ventricle_scale: float = 1.0
    sinus_scale: float = 0.85  # pneumatisation of the sphenoid sinus (0.65 .. 1)
    mastoid_cells: int = 12  # pneumatisation of the mastoid
    skull_factor: float = 1.0  # skull thickness relative to the population mean
    dental_fillings: int = 0  # metal fillings in the molars (metal streaks)

    def side(self, name: str) -> SideAnatomy:
        return self.left if name == "left" else self.right


def sample_subject(rng: np.random.Generator, index: int, calcium_free_fraction: float,
                   metal_p: float = 0.0) -> Subject:
    """Draw one subject's anatomy and calcium.

    Population ranges, adults: head length (glabella-opisthocranion, over the scalp) about
    180-205 mm and breadth 140-160 mm (cephalic index 75-85; anthropometric surveys such as
    Farkas' norms); vault radii here are drawn with a 5% SD of size and 2.5% per axis around
    (76, 96, 80) mm. Cranial thickness 4-10 mm, thinnest over the temporal squama and
    thickest at the occiput (Lynnerup et al., Forensic Sci Int 2005: mean frontal 6.6,
    parietal 5.8, occipital 7.7 mm), here the sum of the tables and the diploe times a
    per-subject factor (SD 15%) and a smooth regional field. CSF spaces and ventricles grow
    with age (45-90 years) as atrophy does.
    """
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
            # log-uniform 1 .. 200 mm^3
            volume = float(np.exp(rng.uniform(np.log(1.0), np.log(200.0))))
            plaques.append(sample_plaque(rng, SIDES[int(rng.integers(2))], seg, volume))
    # Age drives the CSF spaces (atrophy) and the calcium; 45-90 years, as in stroke cohorts.
    age = float(rng.uniform(45, 90))
    atrophy = (age - 45) / 45  # 0..1
    metal_draw, fillings = float(rng.random()), int(rng.integers(1, 6))
    return Subject(
        index=index,
        vault_center=(0.0, float(rng.normal(12.0, 2.0)), float(rng.normal(22.0, 2.0))),
        vault_radii=vault_radii,
        scalp_mm=float(rng.uniform(5.0, 8.0)),
        outer_table_mm=float(rng.uniform(0.6, 1.0)),
        diploe_mm=float(rng.uniform(3.0, 5.5)),
        inner_table_mm=float(rng.uniform(0.45, 0.85)),
        # planum sphenoidale and the orbital roofs: about level with the clinoid tips
        floor_anterior=float(np.mean([sides[s].z_anterior_clinoid for s in SIDES])
                             + rng.normal(3.0, 1.0)),
        floor_middle=float(rng.normal(-24.0, 1.5) + (z_cc + 31.0) * 0.5),
        floor_posterior=float(rng.normal(-40.0, 2.0)),
        neck_radii=(float(rng.normal(56, 4)), float(rng.normal(60, 4))),
        right=sides["right"], left=sides["left"],
        plaques=tuple(plaques),
        age_years=age,
        csf_mm=float(2.3 + 1.8 * atrophy + rng.uniform(-0.4, 0.4)),
        sulcal_width=float(0.17 + 0.08 * atrophy + rng.uniform(-0.02, 0.02)),
        ventricle_scale=float(0.8 + 0.5 * atrophy + rng.uniform(-0.1, 0.1)),
        sinus_scale=float(rng.uniform(0.65, 1.0)),
        mastoid_cells=int(rng.integers(4, 26)),
        skull_factor=float(np.clip(rng.normal(1.0, 0.15), 0.7, 1.4)),
        dental_fillings=fillings if metal_draw < metal_p else 0,
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
