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

from dataclasses import dataclass, replace

import numpy as np

from cohort.anatomy import SIDES, side_sign
from cohort.synth.carotid import Centreline, build_centreline
from cohort.synth.solids import Clip, Cylinder, Ellipsoid, Solid, Tube, half_space, rotation
from cohort.synth.subject import Plaque, Subject

# CT numbers (HU) of the tissues used below.
AIR, FAT, CSF, GREY, WHITE, BLOOD, MUSCLE = -1000.0, -90.0, 8.0, 38.0, 28.0, 45.0, 48.0
CORTICAL, DIPLOE, PETROUS, BASE, CANCELLOUS = 1700.0, 700.0, 1800.0, 1000.0, 320.0


@dataclass(frozen=True)
class Vault:
    """The cranium as a shell of layers measured inwards from the skin (mm), cut below by
    the skull-base floor: the anterior fossa (orbital roofs, planum), the middle fossae as
    two lateral bowls beside the raised sphenoid body, and the concave posterior fossa."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    layers: tuple[tuple[float, float], ...]  # (thickness mm, HU), outermost first; last: rest
    scalp_mm: float
    floor_anterior: float
    floor_central: float  # sella floor / top of the sphenoid body
    floor_middle: float  # deepest point of the middle fossae
    floor_posterior: float  # posterior fossa beside the foramen magnum
    base_plate_mm: float = 7.0
    below_base_mm: float = 14.0  # the cranium's shell ends this far below the floor

    @property
    def reference_radius(self) -> float:
        return float(np.prod(self.radii) ** (1 / 3))

    def floor(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Height (w) of the skull-base floor at (u, v)."""
        a = np.clip((-20.0 - v) / 10.0, 0.0, 1.0)  # anterior fossa weight
        p = np.clip((v - 6.0) / 14.0, 0.0, 1.0)  # posterior fossa weight
        m = 1.0 - a - p
        t = np.clip((np.abs(u) - 10.0) / 18.0, 0.0, 1.0)
        bowl = self.floor_central + (self.floor_middle - self.floor_central) * t * t * (3 - 2 * t)
        back = np.minimum(self.floor_posterior + 0.006 * u * u + 0.2 * np.maximum(v - 45.0, 0.0),
                          self.floor_middle)
        return a * self.floor_anterior + m * bowl + p * back

    def floor_range(self) -> tuple[float, float]:
        lo = min(self.floor_posterior, self.floor_middle, self.floor_central)
        return lo, max(self.floor_anterior, self.floor_central, self.floor_middle)

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        c, r = np.asarray(self.center), np.asarray(self.radii)
        return c - r, c + r


@dataclass(frozen=True)
class Phantom:
    subject: Subject
    vault: Vault
    solids: tuple[Solid, ...]
    arteries: dict[str, Centreline]
    plaques: tuple[Ellipsoid, ...]  # pieces: a plaque is an arc of one to three pieces
    plaque_sides: tuple[str, ...]  # per piece
    plaque_of_piece: tuple[int, ...]  # per piece: index into subject.plaques


def _tube_pieces(points: np.ndarray, radii: np.ndarray, hu: float, clip: Clip,
                 step: int = 6) -> list[Tube]:
    """A long tube cut into short pieces, so each is evaluated only near itself."""
    out = []
    for a in range(0, len(points) - 1, step):
        b = min(a + step, len(points) - 1)
        out.append(Tube(hu=hu, clip=clip, points=tuple(map(tuple, points[a:b + 1])),
                        radii=tuple(float(r) for r in radii[a:b + 1])))
    return out


def _sleeve(cl: Centreline, mask: np.ndarray, extra: float, hu: float, cuts: list,
            w_max: float = np.inf) -> list[Tube]:
    """A tube ``extra`` mm wider than the lumen along part of an artery; each oblique cut
    (point, outward normal) applies only to the pieces within 10 mm of its point."""
    out = []
    for piece in _tube_pieces(cl.points[mask], cl.radius[mask] + extra, hu, Clip()):
        pts = np.asarray(piece.points)
        planes = tuple(half_space(p, n) for p, n in cuts
                       if np.linalg.norm(pts - p, axis=1).min() < 10)
        out.append(replace(piece, clip=Clip(w_max=w_max, planes=planes)))
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
        scalp_mm=s.scalp_mm, floor_anterior=s.floor_anterior, floor_central=-9.0,
        floor_middle=s.floor_middle, floor_posterior=s.floor_posterior,
    )
    arteries = {side: build_centreline(side, s.side(side)) for side in SIDES}
    under: list[Solid] = []  # painted before the vault: neck and face soft tissue
    solids: list[Solid] = []  # painted after the vault

    # Neck and lower face: subcutaneous fat over muscle (both fat layers first, so that fat
    # lines the outside of the union only).
    nr = s.neck_radii
    under += [
        Cylinder(hu=FAT, center_uv=(0.0, 12.0), radii_uv=nr, w_range=(-400.0, -30.0)),
        Ellipsoid(hu=FAT, center=(0.0, -10.0, -55.0), radii=(60.0, 74.0, 42.0)),
        Cylinder(hu=MUSCLE, center_uv=(0.0, 12.0), radii_uv=(nr[0] - 7, nr[1] - 7),
                 w_range=(-400.0, -30.0)),
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
        Ellipsoid(hu=AIR + 50, center=(0.0, -50.0, -34.0), radii=(10.0, 22.0, 15.0)),  # nose
        Ellipsoid(hu=BASE, center=(0.0, -52.0, -36.0), radii=(1.2, 20.0, 13.0)),  # septum
        Ellipsoid(hu=-800.0, center=(0.0, -50.0, s.floor_anterior - 14.0),
                  radii=(9.0, 17.0, 8.0)),  # ethmoid air cells, under the anterior fossa
    ]
    orbit_z = s.floor_anterior - 20.0  # orbits lie wholly under their bony roofs
    for side in SIDES:
        x = lambda v, side=side: _sym(side, v)  # noqa: E731
        a = s.side(side)
        # Mandible: ramus and body.
        solids.append(Tube(hu=1200.0, points=((x(50), 10, -36), (x(46), 4, -60),
                                              (x(42), -22, -86), (x(28), -50, -93),
                                              (0.0, -60, -95)),
                           radii=(4.5, 5.0, 5.5, 5.5, 5.5)))
        solids += [
            Ellipsoid(hu=600.0, center=(x(23), -47, orbit_z - 30), radii=(14.0, 17.0, 15.0),
                      axes=tuple(map(tuple, rotation(yaw_deg=_sym(side, 12.0)).T))),
            Ellipsoid(hu=AIR + 40, center=(x(23), -47, orbit_z - 30), radii=(12.5, 15.5, 13.5),
                      axes=tuple(map(tuple, rotation(yaw_deg=_sym(side, 12.0)).T))),
            Ellipsoid(hu=FAT, center=(x(31), -55, orbit_z), radii=(15.0, 21.0, 12.0)),  # orbit
            Ellipsoid(hu=12.0, center=(x(32), -64, orbit_z), radii=(11.5, 11.5, 11.5)),  # globe
            Ellipsoid(hu=120.0, center=(x(32), -75, orbit_z), radii=(4.5, 2.0, 4.5)),  # lens
            Ellipsoid(hu=BASE, center=(x(15), 30, -44), radii=(6.0, 10.0, 5.0)),  # condyle
            Ellipsoid(hu=BASE, center=(x(18), 24, -52), radii=(7.0, 9.0, 6.0)),  # C1 mass
        ]
        # Petrous pyramid from the mastoid to the apex; its under surface, oblique like every
        # landmark surface here, holds the canal's lower opening.
        cl = arteries[side]
        below_canal = half_space(cl.landmark_points["carotid_canal"], -np.asarray(a.canal_surface))
        mastoid = np.array([x(44), 24.0])
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
            clip=Clip(w_min=a.z_carotid_canal - 8.0, planes=(below_canal,))))
        solids.append(Ellipsoid(hu=BASE, center=(x(43), 24.0, a.z_carotid_canal - 2.0),
                                radii=(8.0, 10.0, 12.0)))  # mastoid process
        for _ in range(10):  # mastoid air cells
            c = (x(43 + rng.uniform(-4, 4)), 24 + rng.uniform(-6, 6),
                 a.z_carotid_canal - 2 + rng.uniform(-8, 8))
            solids.append(Ellipsoid(hu=-900.0, center=c, radii=(rng.uniform(1.2, 3.0),) * 3))

    # The arteries: soft-tissue sleeves keep bone off the vessel outside the canal; the canal
    # wall is bone exactly between the oblique surfaces through the carotid-canal and the
    # petrolingual landmark points.
    for side in SIDES:
        a, cl = s.side(side), arteries[side]
        cc_pt = cl.landmark_points["carotid_canal"]
        pl_pt = cl.landmark_points["petrolingual"]
        n_cc, n_pl = np.asarray(a.canal_surface), np.asarray(a.petrolingual_surface)
        # by position along the vessel (not height: the horizontal petrous part lies close
        # to the petrolingual height, inside the bone)
        i_cc = int(np.argmin(np.linalg.norm(cl.points - cc_pt, axis=1)))
        i_pl = int(np.argmin(np.linalg.norm(cl.points - pl_pt, axis=1)))
        idx = np.arange(len(cl.points))
        near = 6  # points (1 mm apart) past each landmark that the neighbouring piece overlaps
        cuts = {"below_cc": (cc_pt, n_cc), "above_cc": (cc_pt, -n_cc),
                "below_pl": (pl_pt, n_pl), "above_pl": (pl_pt, -n_pl)}

        solids += _sleeve(cl, idx <= i_cc + near, 3.0, MUSCLE, [cuts["below_cc"]])
        solids += _sleeve(cl, idx >= i_pl - near, 2.5, BLOOD, [cuts["above_pl"]],
                          w_max=a.z_anterior_clinoid + 14)
        solids += _sleeve(cl, (idx >= i_cc - near) & (idx <= i_pl + near), 3.0, PETROUS,
                          [cuts["above_cc"], cuts["below_pl"]])
        # Anterior clinoid process lateral to the artery, the back tip of the lesser sphenoid
        # wing; its (oblique) upper surface meets the artery's height at the landmark.
        p = cl.landmark_points["anterior_clinoid"]
        lateral = abs(p[0]) + cl.radius.max() + 5.5
        top = half_space((_sym(side, lateral - 2.0), p[1], a.z_anterior_clinoid),
                         a.clinoid_surface)
        solids.append(Ellipsoid(hu=CORTICAL - 300, center=(_sym(side, lateral), p[1] + 1.0,
                                                           a.z_anterior_clinoid - 3.0),
                                radii=(3.0, 7.0, 4.5), clip=Clip(planes=(top,))))
        solids.append(Tube(hu=BASE, points=(
            (_sym(side, lateral), p[1] - 6.0, a.z_anterior_clinoid - 3.0),
            (_sym(side, lateral + 9.0), p[1] - 15.0, s.floor_anterior - 3.5),
            (_sym(side, lateral + 24.0), p[1] - 20.0, s.floor_anterior - 3.5)),
            radii=(2.2, 2.8, 2.8)))  # lesser wing, joining the anterior fossa floor
        solids += _tube_pieces(cl.points, cl.radius, BLOOD, Clip())

    # Physiological calcifications that are not ICAC (pineal, choroid plexus): distractors.
    if rng.random() < 0.5:
        solids.append(Ellipsoid(hu=float(rng.uniform(250, 700)), center=(0.0, 28.0, 16.0),
                                radii=(2.5, 3.0, 2.5)))
        for side in SIDES:
            solids.append(Ellipsoid(hu=float(rng.uniform(200, 500)),
                                    center=(_sym(side, 20.0), 36.0, 26.0), radii=(2.5,) * 3))

    pieces, sides, owner = [], [], []
    for n, p in enumerate(s.plaques):
        for piece in _plaque_pieces(p, arteries[p.side], s):
            pieces.append(piece)
            sides.append(p.side)
            owner.append(n)
    return Phantom(s, vault, tuple(under) + (vault,) + tuple(solids), arteries, tuple(pieces),
                   tuple(sides), tuple(owner))


def _plaque_pieces(p: Plaque, cl: Centreline, s: Subject) -> list[Ellipsoid]:
    """A plaque as an arc along the artery wall: one to three thin ellipsoids, each tangent
    to the wall, elongated along the vessel; their volumes add up to the plaque's."""
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
    n_pieces = 1 if p.volume_mm3 < 4 else 2 if p.volume_mm3 < 30 else 3
    # each piece: volume 4/3 pi L W T with thickness T = 0.4 W and length L = aspect * W
    t_over_w = 0.4
    w = (p.volume_mm3 / n_pieces / (4 / 3 * np.pi * p.aspect * t_over_w)) ** (1 / 3)
    radii = (p.aspect * w, w, t_over_w * w)
    ring = cl.radius[i] + 0.2 * radii[2]  # the pieces sit on the wall, mostly outside the lumen
    step = min(1.9 * w / ring, 2 * np.pi / 3)  # angle between neighbouring pieces' centres
    out = []
    for k in range(n_pieces):
        ang = np.radians(p.angle_deg) + (k - (n_pieces - 1) / 2) * step
        radial = np.cos(ang) * n1 + np.sin(ang) * n2
        around = np.cross(tangent, radial)
        out.append(Ellipsoid(hu=p.hu, center=tuple(cl.points[i] + radial * ring), radii=radii,
                             axes=(tuple(tangent), tuple(around), tuple(radial))))
    return out
