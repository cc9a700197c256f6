"""The head phantom of one subject: an ordered list of solids with CT numbers (HU).

Solids are painted in order, each over what is below it (so a sinus drawn after a bone is
air inside that bone). The cranium is one layered shell (skin, scalp fat, galea, outer table,
diploe, inner table, CSF, cortex folded by CSF-filled sulci, white matter) cut by the skull
base, a plate of cortex and diploe whose thickness varies from the thin orbital roofs to the
thick occiput; the skull base, petrous pyramids, sella, clinoids, sinuses, orbits, teeth,
cervical spine and neck are solids. Every solid is evaluated at ``head + warp(head)``, the
subject's smooth random displacement (`cohort.synth.fields`), so no two subjects share a
shape and none is a box, a slab or a cylinder. Both internal carotid arteries run as tubes
through their four segments, with the landmark events built in:

* carotid canal: bone closes around the artery at the canal's lower opening;
* petrolingual: the artery leaves the petrous bone into the cavernous sinus;
* anterior clinoid: the upper surface of the clinoid process beside the artery.

The warp moves an event with the bone around it; `Phantom.landmark_point` gives it in the
head frame.

CT numbers follow measured values: cortical bone 1300-1800 HU, diploe 200-700 HU, brain
grey 35-40 and white 25-30 HU, CSF 0-10 HU, fat -80 to -110 HU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import brentq

from cohort.anatomy import SIDES, side_sign
from cohort.synth.carotid import Centreline, build_centreline
from cohort.synth.fields import SubjectFields, make_fields
from cohort.synth.solids import (
    Clip,
    Ellipsoid,
    Loft,
    Solid,
    Tube,
    WallPatch,
    half_space,
    rotation,
)
from cohort.synth.subject import Plaque, Subject

# CT numbers (HU) of the tissues used below.
AIR, FAT, CSF, GREY, WHITE, BLOOD, MUSCLE = -1000.0, -95.0, 0.0, 38.0, 28.0, 45.0, 48.0
CORTICAL, PETROUS, BASE, CANCELLOUS = 2000.0, 1700.0, 850.0, 260.0
#: diploe between the tables: from the density field, this range of CT numbers
DIPLOE_HU = (110.0, 520.0)
DENTAL, METAL = 1900.0, 3070.0
FALX, DEEP_GREY = 55.0, 36.0
@dataclass(frozen=True)
class Vault:
    """The cranium as a shell of layers measured inwards from the skin (mm), cut below by
    the skull-base floor: the anterior fossa (orbital roofs, planum), the middle fossae as
    two lateral bowls beside the raised sphenoid body, and the concave posterior fossa."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    layers: tuple[tuple[float, float], ...]  # (thickness mm, HU), outermost first; last: rest
    scalp_mm: float
    bone_mm: float  # outer table + diploe + inner table, before the regional factor
    diploe_layer: int  # index into layers of the diploe (its HU comes from the field)
    csf_mm: float  # CSF over the convexity and above the skull-base floor
    sulcal_width: float  # share of the cortex band that is sulcal CSF, about
    skull_factor: float
    floor_anterior: float
    floor_central: float  # sella floor / top of the sphenoid body
    floor_middle: float  # deepest point of the middle fossae
    floor_posterior: float  # posterior fossa beside the foramen magnum
    #: skull-base plate thickness (mm) under the anterior, middle and posterior fossae
    plate_mm: tuple[float, float, float] = (2.0, 3.0, 6.0)
    below_base_mm: float = 14.0  # the cranium's shell ends this far below the floor

    @property
    def reference_radius(self) -> float:
        return float(np.prod(self.radii) ** (1 / 3))

    def _weights(self, u: np.ndarray, v: np.ndarray, border=0.0):
        """Shares of the anterior, middle and posterior fossa at (u, v): the borders follow
        the sphenoid ridge (running back towards the midline) and the petrous ridge (from
        the apex beside the sella out to the mastoid)."""
        au = np.abs(u)
        sphenoid = np.minimum(-20.0, -3.0 - 0.65 * (au - 14.0))  # in front of the clinoids
        petrous = np.maximum(4.0, 0.93 * au - 17.0)
        # the sphenoid ridge only ever moves forwards: behind it lie the clinoids, whose top
        # is a landmark and must stay the highest bone beside the artery
        a = _smoothstep((sphenoid - v + np.minimum(border, 0.0)) / 6.0)  # anterior fossa
        p = _smoothstep((v - petrous + border) / 8.0)  # posterior fossa weight
        return a, 1.0 - a - p, p

    def floor(self, u: np.ndarray, v: np.ndarray, offset=0.0, border=0.0) -> np.ndarray:
        """Height (w) of the skull-base floor at (u, v); ``offset`` (mm) raises it and
        ``border`` (mm) moves the borders between the fossae (the subject's fields)."""
        a, m, p = self._weights(u, v, border)
        t = np.clip((np.abs(u) - 10.0) / 18.0, 0.0, 1.0)
        bowl = self.floor_central + (self.floor_middle - self.floor_central) * t * t * (3 - 2 * t)
        bowl = bowl + 0.025 * np.maximum(np.abs(u) - 30.0, 0.0) ** 2  # rising to the side wall
        back = np.minimum(self.floor_posterior + 0.006 * u * u + 0.2 * np.maximum(v - 45.0, 0.0),
                          self.floor_middle)
        # the anterior fossa: orbital roofs domed over each orbit, the olfactory grooves low
        # beside the midline, the floor rising towards the frontal bone
        au = np.abs(u)
        front = (self.floor_anterior + 6.0 * np.exp(-(((au - 27.0) / 13.0) ** 2))
                 - 4.0 * np.exp(-(((au - 5.0) / 3.5) ** 2))  # the olfactory grooves
                 + 0.12 * np.maximum(-30.0 - v, 0.0))
        return a * front + m * bowl + p * back + offset

    def plate(self, u: np.ndarray, v: np.ndarray, border=0.0) -> np.ndarray:
        """Thickness (mm) of the skull-base plate at (u, v)."""
        a, m, p = self._weights(u, v, border)
        pa, pm, pp = self.plate_mm
        # over the sphenoid body (drawn as its own solid) only the thin floor of the sella
        central = np.exp(-((u / 11.0) ** 2) - (((v + 6.0) / 14.0) ** 2))
        return (a * pa + m * pm + p * pp) * self.skull_factor * (1.0 - 0.7 * central)

    def temporal(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        """0..1: how far a point lies over the temporal squama (low and lateral)."""
        cu, cv, cw = self.center
        ru, rv, rw = self.radii
        lateral = np.clip((np.abs(u - cu) / ru - 0.55) / 0.35, 0.0, 1.0)
        low = np.clip(1.0 - np.abs((w - cw) / rw + 0.25) / 0.45, 0.0, 1.0)
        front = np.clip(1.0 - np.abs((v - cv) / rv + 0.1) / 0.6, 0.0, 1.0)
        return lateral * low * front

    def regional(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Regional factor on the vault's bone layers: thin over the temporal squama (low
        and lateral), thick at the occiput."""
        cv, rv = self.center[1], self.radii[1]
        back = np.clip(((v - cv) / rv - 0.55) / 0.35, 0.0, 1.0)
        return (1.0 - 0.5 * self.temporal(u, v, w)) * (1.0 + 0.25 * back)

    def floor_range(self) -> tuple[float, float]:
        lo = min(self.floor_posterior, self.floor_middle, self.floor_central)
        return lo, max(self.floor_anterior, self.floor_central, self.floor_middle)

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        c, r = np.asarray(self.center), np.asarray(self.radii)
        lo = c - r
        lowest = (self.floor_range()[0] - max(self.plate_mm) * self.skull_factor
                  - self.below_base_mm - 6.0)
        lo[2] = min(lo[2], lowest)
        return lo, c + r


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class Phantom:
    subject: Subject
    vault: Vault
    solids: tuple[Solid, ...]
    arteries: dict[str, Centreline]  # in the template (unwarped) frame, as the solids
    plaques: tuple[WallPatch, ...]  # one patch per plaque
    plaque_sides: tuple[str, ...]  # per patch
    plaque_of_piece: tuple[int, ...]  # per patch: index into subject.plaques
    fields: SubjectFields
    #: physiological calcifications (not ICAC) that a threshold would take: pineal,
    #: choroid plexus, falx, tentorium (for tests and figures)
    distractors: tuple[str, ...] = ()

    def to_head(self, template_points: np.ndarray) -> np.ndarray:
        """Head-frame positions of template points (n, 3) (the inverse of the warp)."""
        return self.fields.unwarp_points(np.atleast_2d(template_points))

    def landmark_point(self, side: str, kind: str) -> np.ndarray:
        """A landmark event's point in the head frame (mm)."""
        return self.to_head(self.arteries[side].landmark_points[kind])[0]


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
                (s.outer_table_mm, CORTICAL + 300), (s.diploe_mm, 0.0),
                (s.inner_table_mm, CORTICAL + 100), (s.csf_mm, CSF), (3.0, GREY),
                (0.0, WHITE)),
        scalp_mm=s.scalp_mm, bone_mm=s.outer_table_mm + s.diploe_mm + s.inner_table_mm,
        diploe_layer=4, csf_mm=s.csf_mm, sulcal_width=s.sulcal_width,
        skull_factor=s.skull_factor, floor_anterior=s.floor_anterior, floor_central=-9.0,
        floor_middle=s.floor_middle, floor_posterior=s.floor_posterior,
    )
    lo, hi = vault.bbox()
    fields = make_fields(rng, (lo[0] - 10, lo[1] - 10, -125.0), (hi[0] + 10, hi[1] + 10, hi[2]),
                         center=(0.0, s.vault_center[1], 10.0))
    arteries = {side: build_centreline(side, s.side(side)) for side in SIDES}
    under: list[Solid] = []  # painted before the vault: neck and face soft tissue
    solids: list[Solid] = []  # painted after the vault

    # Neck and lower face: subcutaneous fat over muscle (both fat layers first, so that fat
    # lines the outside of the union only); the neck narrows below the skull and widens
    # towards the shoulders.
    nr = np.asarray(s.neck_radii)
    heights = (-400.0, -150.0, -95.0, -55.0, -30.0)
    widths = (1.25, 1.0, 0.92, 1.0, 1.05)
    centres = ((0.0, 18.0), (0.0, 14.0), (0.0, 12.0), (0.0, 10.0), (0.0, 8.0))
    under += [
        Loft(hu=FAT, heights=heights, centers_uv=centres,
             radii_uv=tuple((float(nr[0] * f), float(nr[1] * f)) for f in widths)),
        Ellipsoid(hu=FAT, center=(0.0, -10.0, -55.0), radii=(60.0, 74.0, 42.0)),
        Loft(hu=MUSCLE, heights=heights, centers_uv=centres,
             radii_uv=tuple((float(nr[0] * f - 7), float(nr[1] * f - 8)) for f in widths)),
        Ellipsoid(hu=MUSCLE, center=(0.0, -8.0, -55.0), radii=(53.0, 66.0, 36.0)),
        # the upper face over the orbits and the cheeks, and the external nose
        Ellipsoid(hu=FAT, center=(0.0, -38.0, -22.0), radii=(58.0, 46.0, 30.0)),
        Ellipsoid(hu=MUSCLE, center=(0.0, -36.0, -24.0), radii=(52.0, 40.0, 25.0)),
        Tube(hu=40.0, points=((0.0, -80.0, -12.0), (0.0, -94.0, -36.0)), radii=(5.0, 9.0)),
    ]
    for side in SIDES:  # fat planes between the neck muscles, and the parapharyngeal fat
        x = side_sign(side)
        under += [
            Tube(hu=FAT, points=((x * 16, 2, -38), (x * 17, 4, -70), (x * 19, 8, -120)),
                 radii=(4.0, 3.5, 3.0)),
            Tube(hu=FAT, points=((x * 10, 52, -45), (x * 14, 50, -90), (x * 16, 48, -140)),
                 radii=(2.5, 3.0, 2.5)),
            Tube(hu=FAT, points=((x * 32, 30, -50), (x * 36, 24, -100)), radii=(3.0, 2.5)),
        ]

    # Central skull base: sphenoid body with its sinus (pneumatised to a varying degree),
    # sella, dorsum, clivus.
    sinus = s.sinus_scale
    solids += [
        Ellipsoid(hu=BASE, center=(0.0, -8.0, -22.0), radii=(17.0, 19.0, 14.0)),
        Ellipsoid(hu=AIR + 50, center=(0.0, -11.0, -24.0),
                  radii=(15.0 * sinus, 16.0 * sinus, 11.5 * sinus)),
        Ellipsoid(hu=MUSCLE, center=(0.0, 0.0, -1.0), radii=(6.5, 6.0, 5.5)),  # pituitary
        Ellipsoid(hu=BASE, center=(0.0, 7.5, -3.0), radii=(6.0, 2.0, 8.0)),  # dorsum sellae
        Tube(hu=BASE, points=((0.0, 9.0, -10.0), (0.0, 30.0, -42.0)), radii=(6.0, 5.0)),
        Tube(hu=CANCELLOUS, points=((0.0, 12.0, -14.0), (0.0, 28.0, -39.0)),
             radii=(3.5, 3.0)),  # the clivus' marrow
        Ellipsoid(hu=CSF, center=(0.0, 0.0, 9.0), radii=(8.0, 7.0, 4.0)),  # suprasellar cistern
        Ellipsoid(hu=CSF, center=(0.0, 58.0, -30.0), radii=(10.0, 7.0, 7.0)),  # cisterna magna
        Ellipsoid(hu=CSF, center=(0.0, 20.0, -14.0), radii=(16.0, 7.0, 9.0)),  # prepontine
        Ellipsoid(hu=CSF, center=(0.0, 32.0, -28.0), radii=(5.0, 4.0, 5.0)),  # 4th ventricle
        Ellipsoid(hu=CSF, center=(0.0, 10.0, 12.0), radii=(2.5 * s.ventricle_scale, 10.0, 7.0)),
    ]
    for side in SIDES:  # deep grey matter: caudate, lentiform nucleus, thalamus
        x = side_sign(side)
        solids += [
            Ellipsoid(hu=DEEP_GREY, center=(x * 11, -14, 18), radii=(4.5, 8.0, 8.0)),
            Ellipsoid(hu=DEEP_GREY, center=(x * 21, -3, 5), radii=(5.5, 13.0, 8.0),
                      axes=tuple(map(tuple, rotation(yaw_deg=x * 15.0).T))),
            Ellipsoid(hu=DEEP_GREY + 1, center=(x * 9, 14, 12), radii=(7.0, 11.0, 8.0)),
        ]
    vs = s.ventricle_scale
    for side in SIDES:  # lateral ventricles: frontal horn, body, atrium, occipital horn, and
        x = side_sign(side)  # the temporal horn curving down and forwards from the atrium
        for dz in (0.0, -4.5):  # a slit, taller than wide: two tubes one above the other
            solids.append(Tube(hu=CSF, points=((x * 5.5, -22, 20 + dz), (x * 7, -5, 27 + dz),
                                               (x * 12, 15, 28 + dz), (x * 19, 30, 22 + dz),
                                               (x * 16, 46, 17 + dz)),
                               radii=(2.6 * vs, 2.4 * vs, 2.6 * vs, 4.0 * vs, 2.0 * vs)))
        solids.append(Tube(hu=CSF, points=((x * 19, 30, 22), (x * 28, 24, 6), (x * 30, 8, -6)),
                           radii=(3.5 * vs, 2.0 * vs, 1.6 * vs)))
        solids.append(Ellipsoid(hu=CSF, center=(x * 36, -4, 4), radii=(16.0, 2.0 * vs, 9.0),
                                axes=tuple(map(tuple, rotation(yaw_deg=x * 10.0).T))))
        solids.append(Tube(hu=CSF, points=((x * 8, -2, 8), (x * 13, 12, 8), (x * 9, 28, 12)),
                           radii=(1.5, 1.5, 1.5)))  # ambient cistern
    # Foramen magnum with the medulla, spinal canal, cervical vertebrae (cortex over marrow).
    solids += [
        Tube(hu=CSF, points=((0.0, 24.0, -22.0), (0.0, 36.0, -48.0), (0.0, 40.0, -90.0)),
             radii=(8.5, 8.0, 7.0)),  # the CSF around the medulla and the cord
        Tube(hu=32.0, points=((0.0, 24.0, -22.0), (0.0, 36.0, -48.0), (0.0, 40.0, -90.0)),
             radii=(6.0, 5.5, 4.5)),  # medulla and cord
        Ellipsoid(hu=BASE, center=(0.0, 8.0, -50.0), radii=(9.0, 3.5, 5.0)),  # C1 anterior arch
        Tube(hu=BASE, points=((-18, 30, -52), (-14, 46, -53), (0, 52, -53), (14, 46, -53),
                              (18, 30, -52)), radii=(4.0, 3.0, 3.0, 3.0, 4.0)),  # C1 posterior
    ]
    for w0, w1, extra in ((-86.0, -59.0, 0.0), (-107.0, -91.0, 0.5), (-128.0, -112.0, 1.0)):
        mid = (w0 + w1) / 2
        solids += [
            Loft(hu=BASE, heights=(w0, mid, w1), centers_uv=((0.0, 22.0),) * 3,
                 radii_uv=((9.0 + extra, 8.5 + extra), (8.2 + extra, 7.6 + extra),
                           (9.0 + extra, 8.5 + extra))),
            Loft(hu=CANCELLOUS, heights=(w0 + 1, mid, w1 - 1), centers_uv=((0.0, 22.0),) * 3,
                 radii_uv=((7.6 + extra, 7.1 + extra), (6.9 + extra, 6.3 + extra),
                           (7.6 + extra, 7.1 + extra))),
        ]
    solids += [
        Loft(hu=600.0, heights=(-60.0, -46.0), centers_uv=((0.0, 19.0), (0.0, 19.5)),
             radii_uv=((5.0, 5.0), (4.0, 4.0))),  # dens
        Loft(hu=30.0, heights=(-400.0, -90.0, -58.0), centers_uv=((0.0, 42.0), (0.0, 40.0),
                                                                 (0.0, 38.0)),
             radii_uv=((7.0, 8.0), (8.0, 9.0), (9.0, 10.0))),  # spinal canal
        Tube(hu=800.0, points=((0, 40, -70), (0, 66, -76)), radii=(4.5, 3.0)),  # C2 spinous
        Loft(hu=AIR, heights=(-400.0, -75.0, -55.0, -38.0),  # airway: oro- to nasopharynx
             centers_uv=((0.0, 0.0), (0.0, 2.0), (0.0, 0.0), (0.0, -2.0)),
             radii_uv=((9.0, 6.0), (11.0, 5.0), (13.0, 7.5), (10.0, 6.0))),
        Ellipsoid(hu=AIR + 50, center=(0.0, -50.0, -34.0), radii=(10.0, 22.0, 15.0)),  # nose
        Ellipsoid(hu=BASE, center=(0.0, -52.0, -36.0), radii=(1.2, 20.0, 13.0)),  # septum
        Ellipsoid(hu=350.0, center=(0.0, -50.0, s.floor_anterior - 14.0),
                  radii=(10.0, 18.0, 9.0)),  # the ethmoid labyrinth, under the anterior fossa
    ]
    for _ in range(16):  # its air cells
        c = (float(rng.uniform(-7, 7)), float(rng.uniform(-64, -36)),
             float(s.floor_anterior - 14.0 + rng.uniform(-6, 6)))
        solids.append(Ellipsoid(hu=-900.0, center=c, radii=(float(rng.uniform(1.8, 3.5)),) * 3))
    # Frontal sinus: a bony shell bulging the frontal bone, air inside; absent in some.
    if s.sinus_scale > 0.72:
        cu, cv, cw = vault.center
        wz = s.floor_anterior + 14.0
        front = cv - vault.radii[1] * np.sqrt(max(0.0, 1 - ((wz - cw) / vault.radii[2]) ** 2))
        depth = s.scalp_mm + vault.bone_mm * s.skull_factor / 2  # in the frontal bone,
        # bulging it a little both ways
        f = (s.sinus_scale - 0.6) / 0.4
        solids += [
            Ellipsoid(hu=CORTICAL - 200, center=(0.0, front + depth, wz),
                      radii=(15.0 * f, 5.5, 12.0 * f)),
            Ellipsoid(hu=AIR + 80, center=(0.0, front + depth, wz),
                      radii=(13.0 * f, 4.0, 10.5 * f)),
        ]
    orbit_z = s.floor_anterior - 20.0  # orbits lie wholly under their bony roofs
    for side in SIDES:
        x = lambda v, side=side: _sym(side, v)  # noqa: E731
        a = s.side(side)
        # Mandible: ramus and body, cortex over marrow.
        ramus = ((x(50), 10, -36), (x(46), 4, -60), (x(42), -22, -86), (x(28), -50, -93),
                 (0.0, -60, -95))
        solids.append(Tube(hu=1300.0, points=ramus, radii=(4.5, 5.0, 5.5, 5.5, 5.5)))
        solids.append(Tube(hu=CANCELLOUS + 100, points=ramus, radii=(2.5, 3.0, 3.5, 3.5, 3.5)))
        solids += [
            Ellipsoid(hu=700.0, center=(x(23), -47, orbit_z - 30), radii=(14.0, 17.0, 15.0),
                      axes=tuple(map(tuple, rotation(yaw_deg=_sym(side, 12.0)).T))),
            Ellipsoid(hu=AIR + 40, center=(x(23), -47, orbit_z - 30), radii=(12.8, 15.8, 13.8),
                      axes=tuple(map(tuple, rotation(yaw_deg=_sym(side, 12.0)).T))),
            # bony orbit (a cone open in front) and the zygomatic arch behind its rim
            Ellipsoid(hu=700.0, center=(x(31), -53, orbit_z), radii=(17.5, 22.0, 14.5),
                      clip=Clip(planes=(half_space((0.0, -60.0, 0.0), (0.0, -1.0, 0.0)),))),
            Tube(hu=900.0, points=((x(45), -52, orbit_z - 12), (x(56), -22, orbit_z - 15),
                                   (x(54), 8, orbit_z - 13)), radii=(3.5, 3.0, 3.0)),
            Ellipsoid(hu=FAT, center=(x(31), -55, orbit_z), radii=(15.0, 21.0, 12.0)),  # orbit
            Tube(hu=MUSCLE, points=((x(22), -40, orbit_z - 2), (x(29), -56, orbit_z - 2)),
                 radii=(2.0, 2.5)),  # optic nerve (the globe is painted over its end)
            Ellipsoid(hu=12.0, center=(x(32), -66, orbit_z), radii=(11.5, 11.5, 11.5)),  # globe
            Ellipsoid(hu=120.0, center=(x(32), -74, orbit_z), radii=(4.5, 2.0, 4.5)),  # lens
            Ellipsoid(hu=BASE, center=(x(15), 30, -44), radii=(6.0, 10.0, 5.0)),  # condyle
            Ellipsoid(hu=BASE, center=(x(18), 24, -52), radii=(7.0, 9.0, 6.0)),  # C1 mass
            Ellipsoid(hu=CANCELLOUS, center=(x(18), 24, -52), radii=(5.0, 7.0, 4.0)),
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
        # mastoid air cells, many or few (pneumatisation varies), some reaching the pyramid
        reach = 4.0 + 0.35 * s.mastoid_cells
        for _ in range(s.mastoid_cells):
            c = (x(43 + rng.uniform(-reach / 2, 4)), 24 + rng.uniform(-reach / 2, 6),
                 a.z_carotid_canal - 2 + rng.uniform(-8, 8))
            solids.append(Ellipsoid(hu=-900.0, center=c, radii=(rng.uniform(1.2, 3.2),) * 3))
        # teeth: the maxillary and the mandibular arch, crowns of enamel and dentine
        for wz, depth in ((orbit_z - 50.0, 0.0), (orbit_z - 60.0, 2.0)):
            arch = [(x(u), -64 + depth + 0.045 * u * u, wz) for u in (2.0, 9.0, 16.0, 22.0, 25.0)]
            solids.append(Tube(hu=DENTAL, points=tuple(arch), radii=(3.2, 3.4, 4.2, 4.8, 4.8)))
    # Dental fillings: metal in some molars (the source of metal streaks).
    for n in range(s.dental_fillings):
        side = SIDES[n % 2]
        u = _sym(side, float(rng.uniform(17, 24)))
        wz = orbit_z - (50.0 if rng.random() < 0.5 else 60.0) + 2.5
        solids.append(Ellipsoid(hu=METAL, center=(u, -64 + 0.045 * u * u, wz),
                                radii=(float(rng.uniform(1.5, 2.8)),) * 2 + (1.5,)))

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
        in_canal = (idx >= i_cc - near) & (idx <= i_pl + near)
        canal_cuts = [cuts["above_cc"], cuts["below_pl"]]
        solids += _sleeve(cl, in_canal, CANAL_CONTENTS_MM + CANAL_WALL_MM, PETROUS, canal_cuts)
        # what the bony canal holds besides the lumen (the artery's wall, periosteum, the
        # venous plexus): soft tissue, so wall calcium lies in it, never inside the bone.
        # Not cut at the landmark surfaces: past them the artery is in soft tissue already,
        # and where the oblique surface leaves pyramid bone beside the artery's horizontal
        # part, that bone keeps the same soft lining
        solids += _sleeve(cl, in_canal, CANAL_CONTENTS_MM, MUSCLE, [])
        # Anterior clinoid process lateral to the artery, the back tip of the lesser sphenoid
        # wing; its (oblique) upper surface meets the artery's height at the landmark.
        p = cl.landmark_points["anterior_clinoid"]
        lateral = abs(p[0]) + cl.radius.max() + 5.5
        top = half_space((_sym(side, lateral - 2.0), p[1], a.z_anterior_clinoid),
                         a.clinoid_surface)
        solids.append(Ellipsoid(hu=CORTICAL - 200, center=(_sym(side, lateral), p[1] + 1.0,
                                                           a.z_anterior_clinoid - 3.0),
                                radii=(3.0, 7.0, 4.5), clip=Clip(planes=(top,))))
        solids.append(Tube(hu=BASE, points=(
            (_sym(side, lateral), p[1] - 6.0, a.z_anterior_clinoid - 3.0),
            (_sym(side, lateral + 9.0), p[1] - 15.0, s.floor_anterior - 3.5),
            (_sym(side, lateral + 24.0), p[1] - 20.0, s.floor_anterior - 3.5)),
            radii=(2.2, 2.8, 2.8)))  # lesser wing, joining the anterior fossa floor
        solids += _tube_pieces(cl.points, cl.radius, BLOOD, Clip())

    # Physiological calcifications that are not ICAC: distractors a threshold would take.
    distractors = []
    if rng.random() < 0.6:
        distractors.append("pineal")
        solids.append(_lumpy(rng, (0.0, 26.0, 15.0), 2.6, float(rng.uniform(200, 700))))
    if rng.random() < 0.5:
        distractors.append("choroid plexus")
        for side in SIDES:
            solids.append(_lumpy(rng, (_sym(side, 19.0), 30.0, 22.0), 2.4,
                                 float(rng.uniform(180, 500))))
    if rng.random() < 0.25:  # falx: a thin plaque on the midline under the vertex
        distractors.append("falx")
        cw = vault.center[2] + vault.radii[2] * float(rng.uniform(0.35, 0.6))
        solids.append(Ellipsoid(hu=float(rng.uniform(250, 900)),
                                center=(0.0, float(rng.uniform(-30, 30)), cw),
                                radii=(0.7, float(rng.uniform(5, 14)), float(rng.uniform(2, 6)))))
    if rng.random() < 0.1:  # tentorium, beside the straight sinus
        distractors.append("tentorium")
        for side in SIDES:
            solids.append(Ellipsoid(hu=float(rng.uniform(200, 600)),
                                    center=(_sym(side, 12.0), 45.0, 2.0),
                                    radii=(5.0, 3.0, 0.8),
                                    axes=tuple(map(tuple, rotation(pitch_deg=-30.0).T))))

    patches, sides, owner = [], [], []
    for n, p in enumerate(s.plaques):
        patches.append(plaque_patch(p, arteries[p.side], s, fields))
        sides.append(p.side)
        owner.append(n)
    return Phantom(s, vault, tuple(under) + (vault,) + tuple(solids), arteries, tuple(patches),
                   tuple(sides), tuple(owner), fields, tuple(distractors))


def _lumpy(rng: np.random.Generator, center, size: float, hu: float) -> Ellipsoid:
    """A small calcification of irregular proportions."""
    radii = tuple(float(size * rng.uniform(0.6, 1.3)) for _ in range(3))
    axes = rotation(*(float(a) for a in rng.uniform(0, 180, 3)))
    c = tuple(float(v + rng.normal(0, 1.5)) for v in center)
    return Ellipsoid(hu=hu, center=c, radii=radii, axes=tuple(map(tuple, axes.T)))


def _frame(points: np.ndarray) -> np.ndarray:
    """A rotation-minimising unit normal at each centreline point (parallel transport)."""
    tan = np.gradient(points, axis=0)
    tan /= np.linalg.norm(tan, axis=1, keepdims=True)
    helper = np.array([1.0, 0.0, 0.0]) if abs(tan[0, 0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    n = np.cross(tan[0], helper)
    n /= np.linalg.norm(n)
    out = [n]
    for k in range(1, len(points)):
        n = n - (n @ tan[k]) * tan[k]
        n /= np.linalg.norm(n)
        out.append(n)
    return np.asarray(out)


def plaque_patch(p: Plaque, cl: Centreline, s: Subject,
                 fields: SubjectFields | None = None) -> WallPatch:
    """A plaque as a patch of the artery wall of its kind's outline, with lumps; its peak
    thickness is solved so that the patch holds the plaque's volume."""
    rng = np.random.default_rng(p.shape_seed)
    a = s.side(p.side)
    bounds = {"cervical": (a.z_carotid_canal - 30.0, a.z_carotid_canal),
              "petrous": (a.z_carotid_canal, a.z_petrolingual),
              "cavernous": (a.z_petrolingual, a.z_anterior_clinoid),
              "supraclinoid": (a.z_anterior_clinoid, a.z_anterior_clinoid + 9.0)}[p.segment]
    z = bounds[0] + p.position * (bounds[1] - bounds[0])
    i = int(np.argmin(np.abs(cl.points[:, 2] - z)))
    volume = p.volume_mm3
    if fields is not None:  # the warp stretches or squeezes it: hold the volume in the head
        volume *= fields.volume_ratio(fields.unwarp_points(cl.points[i][None])[0])
    frame = _frame(cl.points)
    n_lumps = {"ring": 3, "nodule": 4, "fleck": 2}[p.kind]
    half_arc = float(np.radians(p.arc_deg) / 2)
    half_len = p.length_mm / 2
    shape = [(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)), float(rng.uniform(0.3, 1.2)),
              float(rng.uniform(0.6, 1.5)), float(rng.uniform(0.3, 0.8)))
             for _ in range(n_lumps)]

    def make(half_len: float, half_arc: float) -> WallPatch:
        reach = int(np.ceil(half_len + 3))
        i0, i1 = max(0, i - reach), min(len(cl.points), i + reach + 1)
        pts = cl.points[i0:i1]
        s0 = float(np.linalg.norm(np.diff(pts[: i - i0 + 1], axis=0), axis=1).sum())
        arc = min(half_arc, np.pi)
        lumps = tuple((ds * half_len, da * arc, amp, ws, wa) for ds, da, amp, ws, wa in shape)
        return WallPatch(hu=p.hu, points=tuple(map(tuple, pts)),
                         normals=tuple(map(tuple, frame[i0:i1])), radius=float(cl.radius[i]),
                         s0=s0, a0=float(np.radians(p.angle_deg)), half_length=half_len,
                         half_arc=half_arc, peak_mm=1.0, lumps=lumps)

    for _ in range(40):  # a large plaque spreads along and around the wall, not into the lumen
        patch = make(half_len, half_arc)
        t = _peak_for_volume(patch, volume)
        most = t * patch.max_thickness()  # the thickest lump, at peak 1 mm: max_thickness
        if most <= MAX_PLAQUE_MM:
            break
        grow_len, grow_arc = {"ring": (1.25, 1.2), "nodule": (1.2, 1.08),
                              "fleck": (1.3, 1.0)}[p.kind]
        half_len, half_arc = half_len * grow_len, min(half_arc * grow_arc, np.pi)
    return replace(patch, peak_mm=float(t))


#: the thickest a plaque gets (mm, lumps included); a larger volume makes a longer, wider
#: plaque
MAX_PLAQUE_MM = 2.4
#: the carotid canal around the petrous ICA: soft tissue from the lumen out to this (the
#: canal is 1-2 mm wider than the artery all round, about 8.5 mm across for a 5 mm lumen),
#: then a bony wall this thick. A plaque reaches 0.7 of its thickness out of the lumen
#: (`WallPatch`), so even the thickest stays in the soft tissue: calcium never replaces
#: bone (which would paint it darker than the bone around it, a grey patch no scanner
#: shows), and the canal is told from calcium by shape, as on a real scan
CANAL_CONTENTS_MM = 1.8
CANAL_WALL_MM = 1.8


def _peak_for_volume(patch: WallPatch, volume_mm3: float) -> float:
    """Peak thickness giving ``volume_mm3`` (the volume grows monotonically with it)."""
    def excess(t: float) -> float:
        return replace(patch, peak_mm=t).volume_mm3() - volume_mm3

    hi = 1.0
    while excess(hi) < 0:
        if hi > 50:
            return hi
        hi *= 2.0
    return float(brentq(excess, 0.0, hi, xtol=1e-4, rtol=1e-4))
