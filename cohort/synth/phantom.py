"""The head phantom of one subject: an ordered list of solids with CT numbers (HU).

Solids are painted in order, each over what is below it (so a sinus drawn after a bone is
air inside that bone). The cranium is one layered shell (scalp, outer table, diploe, inner
table, CSF, cortex, white matter) cut by the skull base; the skull base, petrous pyramids,
sella, clinoids, sinuses, orbits, cervical spine and neck are solids. Both internal carotid
arteries run as tubes through their four segments, with the landmark events built in:

* carotid canal: bone closes around the artery at the canal's lower opening;
* petrolingual: the artery leaves the petrous bone into the cavernous sinus;
* anterior clinoid: the upper surface of the clinoid process beside the artery.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cohort.anatomy import SIDES, side_sign
from cohort.synth.carotid import Centreline, build_centreline
from cohort.synth.solids import Clip, Cylinder, Ellipsoid, Solid, Tube, rotation
from cohort.synth.subject import Plaque, Subject

# CT numbers (HU) of the tissues used below.
AIR, FAT, CSF, GREY, WHITE, BLOOD, MUSCLE = -1000.0, -90.0, 8.0, 38.0, 28.0, 45.0, 48.0
CORTICAL, DIPLOE, PETROUS, BASE, CANCELLOUS = 1700.0, 700.0, 1800.0, 1000.0, 320.0


@dataclass(frozen=True)
class Vault:
    """The cranium as a shell of layers measured inwards from the skin (mm), cut below by
    the skull-base floor, whose height is piecewise linear in the anterior-posterior axis."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    layers: tuple[tuple[float, float], ...]  # (thickness mm, HU), outermost first; last: rest
    scalp_mm: float
    floor_knots_v: tuple[float, ...]
    floor_knots_w: tuple[float, ...]
    base_plate_mm: float = 7.0

    @property
    def reference_radius(self) -> float:
        return float(np.prod(self.radii) ** (1 / 3))

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        c, r = np.asarray(self.center), np.asarray(self.radii)
        return c - r, c + r


@dataclass(frozen=True)
class Phantom:
    subject: Subject
    vault: Vault
    solids: tuple[Solid, ...]
    arteries: dict[str, Centreline]
    plaques: tuple[Ellipsoid, ...]
    plaque_sides: tuple[str, ...]


def _tube_pieces(points: np.ndarray, radii: np.ndarray, hu: float, clip: Clip,
                 step: int = 6) -> list[Tube]:
    """A long tube cut into short pieces, so each is evaluated only near itself."""
    out = []
    for a in range(0, len(points) - 1, step):
        b = min(a + step, len(points) - 1)
        out.append(Tube(hu=hu, clip=clip, points=tuple(map(tuple, points[a:b + 1])),
                        radii=tuple(float(r) for r in radii[a:b + 1])))
    return out


def _sym(side: str, x: float) -> float:
    return side_sign(side) * x


def build_phantom(subject: Subject, texture_seed: int) -> Phantom:
    """Assemble the phantom of one subject."""
    rng = np.random.default_rng(texture_seed)
    s = subject
    vault = Vault(
        center=s.vault_center, radii=s.vault_radii,
        layers=((1.5, 40.0), (s.scalp_mm - 2.5, FAT), (1.0, 35.0),
                (s.outer_table_mm, CORTICAL), (s.diploe_mm, DIPLOE),
                (s.inner_table_mm, 1600.0), (1.6, CSF), (3.2, GREY), (0.0, WHITE)),
        scalp_mm=s.scalp_mm,
        floor_knots_v=(-200.0, -30.0, -20.0, 6.0, 20.0, 200.0),
        floor_knots_w=(s.floor_anterior, s.floor_anterior, s.floor_middle, s.floor_middle,
                       s.floor_posterior, s.floor_posterior),
    )
    arteries = {side: build_centreline(side, s.side(side)) for side in SIDES}
    under: list[Solid] = []  # painted before the vault: neck and face soft tissue
    solids: list[Solid] = []  # painted after the vault

    # Neck and lower face: subcutaneous fat over muscle.
    nr = s.neck_radii
    under += [
        Cylinder(hu=FAT, center_uv=(0.0, 12.0), radii_uv=nr, w_range=(-400.0, -35.0)),
        Cylinder(hu=MUSCLE, center_uv=(0.0, 12.0), radii_uv=(nr[0] - 7, nr[1] - 7),
                 w_range=(-400.0, -35.0)),
        Ellipsoid(hu=FAT, center=(0.0, -10.0, -55.0), radii=(60.0, 74.0, 42.0)),
        Ellipsoid(hu=MUSCLE, center=(0.0, -8.0, -55.0), radii=(53.0, 66.0, 36.0)),
    ]

    # Central skull base: sphenoid body with its sinus, sella, dorsum, clivus.
    solids += [
        Ellipsoid(hu=BASE, center=(0.0, -8.0, -22.0), radii=(17.0, 19.0, 14.0)),
        Ellipsoid(hu=AIR + 50, center=(0.0, -12.0, -24.0), radii=(11.0, 11.0, 8.5)),
        Ellipsoid(hu=MUSCLE, center=(0.0, 0.0, -1.0), radii=(6.5, 6.0, 5.5)),  # pituitary
        Ellipsoid(hu=BASE, center=(0.0, 7.5, -3.0), radii=(6.0, 2.0, 8.0)),  # dorsum sellae
        Tube(hu=900.0, points=((0.0, 9.0, -10.0), (0.0, 30.0, -42.0)), radii=(6.0, 5.0)),
        Ellipsoid(hu=CSF, center=(0.0, 0.0, 9.0), radii=(12.0, 10.0, 5.5)),  # suprasellar cistern
        Ellipsoid(hu=CSF, center=(0.0, 32.0, -28.0), radii=(5.0, 4.0, 5.0)),  # 4th ventricle
        Ellipsoid(hu=CSF, center=(0.0, 10.0, 12.0), radii=(2.5, 10.0, 7.0)),  # 3rd ventricle
    ]
    for side in SIDES:
        axes = rotation(yaw_deg=side_sign(side) * 8.0)
        solids.append(Ellipsoid(hu=CSF, center=(_sym(side, 11.0), 8.0, 30.0),
                                radii=(6.0, 26.0, 8.0), axes=tuple(map(tuple, axes.T))))
    # Foramen magnum with the medulla, spinal canal, cervical vertebrae.
    solids += [
        Cylinder(hu=30.0, center_uv=(0.0, 36.0), radii_uv=(15.0, 17.0), w_range=(-60.0, -36.0)),
        Ellipsoid(hu=BASE, center=(0.0, 8.0, -50.0), radii=(9.0, 3.5, 5.0)),  # C1 anterior arch
        Tube(hu=BASE, points=((-18, 30, -52), (-14, 46, -53), (0, 52, -53), (14, 46, -53),
                              (18, 30, -52)), radii=(4.0, 3.0, 3.0, 3.0, 4.0)),  # C1 posterior
        Cylinder(hu=BASE, center_uv=(0.0, 22.0), radii_uv=(9.0, 8.5), w_range=(-86.0, -59.0)),
        Cylinder(hu=CANCELLOUS, center_uv=(0.0, 22.0), radii_uv=(7.6, 7.1),
                 w_range=(-85.0, -60.0)),
        Cylinder(hu=600.0, center_uv=(0.0, 19.0), radii_uv=(5.0, 5.0), w_range=(-60.0, -46.0)),
        Cylinder(hu=BASE, center_uv=(0.0, 22.0), radii_uv=(9.5, 9.0), w_range=(-107.0, -91.0)),
        Cylinder(hu=CANCELLOUS, center_uv=(0.0, 22.0), radii_uv=(8.1, 7.6),
                 w_range=(-106.0, -92.0)),
        Cylinder(hu=30.0, center_uv=(0.0, 40.0), radii_uv=(8.0, 9.0), w_range=(-400.0, -58.0)),
        Tube(hu=800.0, points=((0, 40, -70), (0, 66, -76)), radii=(4.5, 3.0)),  # C2 spinous
        Cylinder(hu=AIR, center_uv=(0.0, 2.0), radii_uv=(12.0, 7.0), w_range=(-400.0, -38.0)),
        Ellipsoid(hu=AIR + 50, center=(0.0, -50.0, -30.0), radii=(10.0, 22.0, 16.0)),  # nose
        Ellipsoid(hu=-800.0, center=(0.0, -50.0, -4.0), radii=(9.0, 17.0, 9.0)),  # ethmoid
    ]
    for side in SIDES:
        x = lambda v, side=side: _sym(side, v)  # noqa: E731
        a = s.side(side)
        # Mandible: ramus and body.
        solids.append(Tube(hu=1200.0, points=((x(50), 10, -36), (x(46), 4, -60),
                                              (x(42), -22, -86), (x(28), -50, -93),
                                              (0.0, -60, -95)),
                           radii=(4.5, 5.0, 5.5, 5.5, 5.5)))
        solids += [
            Ellipsoid(hu=600.0, center=(x(24), -48, -40), radii=(15.0, 17.0, 17.0)),
            Ellipsoid(hu=AIR + 40, center=(x(24), -48, -40), radii=(13.5, 15.5, 15.5)),
            Ellipsoid(hu=FAT, center=(x(32), -56, -2), radii=(17.0, 22.0, 16.0)),  # orbit
            Ellipsoid(hu=12.0, center=(x(32), -66, -2), radii=(12.0, 12.0, 12.0)),  # globe
            Ellipsoid(hu=120.0, center=(x(32), -77, -2), radii=(4.5, 2.0, 4.5)),  # lens
            Ellipsoid(hu=BASE, center=(x(15), 30, -44), radii=(6.0, 10.0, 5.0)),  # condyle
            Ellipsoid(hu=BASE, center=(x(18), 24, -52), radii=(7.0, 9.0, 6.0)),  # C1 mass
        ]
        # Petrous pyramid from the mastoid to the apex, flat underneath at the canal opening.
        mastoid = np.array([x(50), 24.0])
        apex = np.array([x(a.x_cavernous + 6.5), 2.5])
        mid = (mastoid + apex) / 2
        d = apex - mastoid
        half = float(np.linalg.norm(d)) / 2
        yaw = float(np.degrees(np.arctan2(d[1], d[0])))
        axes = rotation(yaw_deg=yaw)
        h = a.z_petrolingual - a.z_carotid_canal
        solids.append(Ellipsoid(
            hu=PETROUS, center=(mid[0], mid[1], a.z_carotid_canal + 0.5 * h),
            radii=(half, 8.0, 0.5 * h + 3.0), axes=tuple(map(tuple, axes.T)),
            clip=Clip(w_min=a.z_carotid_canal)))
        solids.append(Ellipsoid(hu=BASE, center=(x(50), 24.0, a.z_carotid_canal - 2.0),
                                radii=(9.0, 11.0, 13.0)))  # mastoid process
        for _ in range(10):  # mastoid air cells
            c = (x(50 + rng.uniform(-5, 5)), 24 + rng.uniform(-6, 6),
                 a.z_carotid_canal - 2 + rng.uniform(-8, 8))
            solids.append(Ellipsoid(hu=-900.0, center=c, radii=(rng.uniform(1.2, 3.0),) * 3))

    # The arteries: soft-tissue sleeves keep bone off the vessel outside the canal, the canal
    # wall is bone exactly between the carotid-canal and petrolingual heights.
    for side in SIDES:
        a, cl = s.side(side), arteries[side]
        below = cl.points[:, 2] <= a.z_carotid_canal + 4
        above = cl.points[:, 2] >= a.z_petrolingual - 4
        z = cl.points[:, 2]
        canal = (z >= a.z_carotid_canal - 4) & (z <= a.z_petrolingual + 4)
        solids += _tube_pieces(cl.points[below], cl.radius[below] + 3.0, MUSCLE,
                               Clip(w_max=a.z_carotid_canal))
        solids += _tube_pieces(cl.points[above], cl.radius[above] + 2.5, BLOOD,
                               Clip(w_min=a.z_petrolingual, w_max=a.z_anterior_clinoid + 14))
        solids += _tube_pieces(cl.points[canal], cl.radius[canal] + 3.0, PETROUS,
                               Clip(w_min=a.z_carotid_canal, w_max=a.z_petrolingual))
        # Anterior clinoid process lateral to the artery; its upper surface is the landmark.
        p = cl.landmark_points["anterior_clinoid"]
        lateral = abs(p[0]) + cl.radius.max() + 5.5
        solids.append(Ellipsoid(hu=CORTICAL - 300, center=(_sym(side, lateral), p[1] + 1.0,
                                                           a.z_anterior_clinoid - 3.0),
                                radii=(3.0, 7.0, 4.5), clip=Clip(w_max=a.z_anterior_clinoid)))
        solids += _tube_pieces(cl.points, cl.radius, BLOOD, Clip())

    # Physiological calcifications that are not ICAC (pineal, choroid plexus): distractors.
    if rng.random() < 0.5:
        solids.append(Ellipsoid(hu=float(rng.uniform(250, 700)), center=(0.0, 28.0, 16.0),
                                radii=(2.5, 3.0, 2.5)))
        for side in SIDES:
            solids.append(Ellipsoid(hu=float(rng.uniform(200, 500)),
                                    center=(_sym(side, 20.0), 36.0, 26.0), radii=(2.5,) * 3))

    plaques = tuple(_plaque_solid(p, arteries[p.side], s) for p in s.plaques)
    return Phantom(s, vault, tuple(under) + (vault,) + tuple(solids), arteries, plaques,
                   tuple(p.side for p in s.plaques))


def _plaque_solid(p: Plaque, cl: Centreline, s: Subject) -> Ellipsoid:
    """An ellipsoidal plaque in the wall of the artery, elongated along the vessel."""
    a = s.side(p.side)
    bounds = {"cervical": (a.z_carotid_canal - 30.0, a.z_carotid_canal),
              "petrous": (a.z_carotid_canal, a.z_petrolingual),
              "cavernous": (a.z_petrolingual, a.z_anterior_clinoid),
              "supraclinoid": (a.z_anterior_clinoid, a.z_anterior_clinoid + 9.0)}[p.segment]
    z = bounds[0] + p.position * (bounds[1] - bounds[0])
    i = int(np.argmin(np.abs(cl.points[:, 2] - z)))
    i = min(max(i, 1), len(cl.points) - 2)
    tangent = cl.points[i + 1] - cl.points[i - 1]
    tangent /= np.linalg.norm(tangent)
    helper = np.array([0.0, 0.0, 1.0]) if abs(tangent[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    n1 = np.cross(tangent, helper)
    n1 /= np.linalg.norm(n1)
    n2 = np.cross(tangent, n1)
    ang = np.radians(p.angle_deg)
    radial = np.cos(ang) * n1 + np.sin(ang) * n2
    around = np.cross(tangent, radial)
    # Volume 4/3 pi L W T with thickness T = 0.45 W and length L = aspect * W.
    t_over_w = 0.45
    w = (p.volume_mm3 / (4 / 3 * np.pi * p.aspect * t_over_w)) ** (1 / 3)
    radii = (p.aspect * w, w, t_over_w * w)
    center = cl.points[i] + radial * (cl.radius[i] + 0.2 * radii[2])
    return Ellipsoid(hu=p.hu, center=tuple(center), radii=radii,
                     axes=(tuple(tangent), tuple(around), tuple(radial)))
