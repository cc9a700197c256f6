"""The landmarks lie on anatomical events of the phantom, and nothing else gives them away."""

from __future__ import annotations

import numpy as np
import pytest

from cohort.anatomy import LANDMARK_KINDS, SIDES, side_sign
from cohort.geometry import Grid
from cohort.synth.acquisition import sample_protocol
from cohort.synth.phantom import (
    CANAL_CONTENTS_MM,
    CANAL_WALL_MM,
    MAX_PLAQUE_MM,
    build_phantom,
    plaque_patch,
)
from cohort.synth.render import Placement, plaque_occupancy, render_anatomy
from cohort.synth.scan import acquisition_grid, landmark_truth, placement_of, sample_coverage
from cohort.synth.solids import rotation
from cohort.synth.subject import Plaque, sample_plaque, sample_pose, sample_subject

STEP = 0.5  # mm, fine enough to resolve a 1.5 mm bony wall
#: from the lumen's edge to the middle of the carotid canal's bony wall
WALL_MM = CANAL_CONTENTS_MM + CANAL_WALL_MM / 2


def _render_skull_base(seed: int, placement: Placement):
    rng = np.random.default_rng(seed)
    subject = sample_subject(rng, 0, calcium_free_fraction=1.0)
    phantom = build_phantom(subject, texture_seed=seed)
    # an axial grid around both arteries, from the neck to above the clinoids
    lo = np.array([-48.0, -32.0, subject.right.z_carotid_canal - 28])
    hi = np.array([48.0, 28.0, max(subject.left.z_anterior_clinoid,
                                   subject.right.z_anterior_clinoid) + 10])
    corners = placement.to_world(np.array([[x, y, z] for x in (lo[0], hi[0])
                                           for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]))
    wlo, whi = corners.min(axis=0), corners.max(axis=0)
    shape = tuple(int(np.ceil((whi[d] - wlo[d]) / STEP)) + 1 for d in (2, 1, 0))
    grid = Grid(tuple(wlo), (STEP, 0, 0), (0, STEP, 0), (0, 0, STEP), shape)
    hu = render_anatomy(phantom, placement, grid, scale=1, n_sub=1)
    return subject, phantom, grid, hu


def _sample(hu: np.ndarray, grid: Grid, placement: Placement, phantom, template_points):
    """CT numbers at points of the phantom's template frame (where its solids and arteries
    are defined), moved by the subject's warp into the head frame, then into the scanner."""
    head = phantom.to_head(np.asarray(template_points, float).reshape(-1, 3))
    ijk = np.rint(grid.index(placement.to_world(head))).astype(int)
    return hu[ijk[..., 2], ijk[..., 1], ijk[..., 0]]


def _ring(centre: np.ndarray, radius: float, n: int = 12, tangent=(0.0, 0.0, 1.0)
          ) -> np.ndarray:
    """Points around ``centre`` in the plane across ``tangent`` (default: horizontal)."""
    t = np.asarray(tangent, float) / np.linalg.norm(tangent)
    u = np.cross(t, [1.0, 0.0, 0.0] if abs(t[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(t, u)
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return centre + radius * (np.cos(a)[:, None] * u + np.sin(a)[:, None] * v)


@pytest.mark.parametrize("seed,angles", [(1, (0.0, 0.0, 0.0)), (2, (6.0, -5.0, 4.0)),
                                         (3, (-4.0, 7.0, -6.0))])
def test_carotid_canal_and_petrolingual_are_where_bone_encloses_the_artery(seed, angles):
    placement = Placement(rotation(*angles), np.array([3.0, -5.0, 120.0]))
    subject, phantom, grid, hu = _render_skull_base(seed, placement)
    for side in SIDES:
        a, cl = subject.side(side), phantom.arteries[side]
        checked = 0
        tangents = np.gradient(cl.points, axis=0)
        for p, r, t in zip(cl.points, cl.radius, tangents, strict=True):
            z = p[2]
            if not a.z_carotid_canal - 15 < z < a.z_anterior_clinoid - 2:
                continue
            checked += 1
            ring = np.median(_sample(hu, grid, placement, phantom, _ring(p, r + 1.5)))
            if a.z_carotid_canal - 15 < z < a.z_carotid_canal - 2:
                assert ring < 150, f"{side} cervical ICA at z={z:.1f} is in bone ({ring:.0f} HU)"
            elif a.z_carotid_canal + 1.5 < z < a.z_petrolingual - 1.5:
                # rings across the vessel (it runs obliquely, then horizontally, in the canal)
                wall, inside = (np.median(_sample(hu, grid, placement, phantom,
                                                  _ring(p, r + d, tangent=t)))
                                for d in (WALL_MM, 1.0))
                assert wall > 600, f"{side} petrous ICA at z={z:.1f} is not in bone ({wall:.0f})"
                assert inside < 150, f"{side} petrous ICA at z={z:.1f}: no soft tissue " \
                                     f"between the lumen and the canal's wall ({inside:.0f} HU)"
            elif a.z_petrolingual + 2 < z < a.z_anterior_clinoid - 2:
                assert ring < 150, f"{side} cavernous ICA at z={z:.1f} is in bone ({ring:.0f})"
        assert checked > 30


@pytest.mark.parametrize("seed", [4, 5])
def test_anterior_clinoid_landmark_is_the_top_of_the_clinoid_process(seed):
    placement = Placement(rotation(3.0, 2.0, -3.0), np.array([0.0, 0.0, 0.0]))
    subject, phantom, grid, hu = _render_skull_base(seed, placement)
    for side in SIDES:
        a = subject.side(side)
        p = phantom.arteries[side].landmark_points["anterior_clinoid"]
        s = side_sign(side)
        # a box lateral to the artery at the landmark, where the clinoid process is
        xs = s * (abs(p[0]) + np.arange(2.5, 12.0, 0.5))
        ys = p[1] + np.arange(-4.0, 8.0, 0.5)

        def box_max(z0: float, z1: float, xs=xs, ys=ys) -> float:
            pts = np.array([[x, y, z] for x in xs for y in ys for z in np.arange(z0, z1, 0.5)])
            return float(_sample(hu, grid, placement, phantom, pts).max())

        assert box_max(a.z_anterior_clinoid - 3.5, a.z_anterior_clinoid - 1.0) > 900
        assert box_max(a.z_anterior_clinoid + 2.5, a.z_anterior_clinoid + 6.0) < 400


@pytest.mark.parametrize("seed", [8, 9])
def test_petrous_calcium_lies_in_the_canals_soft_tissue_never_inside_its_bone(seed):
    """A plaque painted over bone would replace it with a lower CT number: a grey patch in
    white bone that no scanner shows, labelled calcium. In the canal the wall's calcium
    lies in soft tissue between the lumen and the bony wall, even the thickest plaque."""
    assert 0.7 * MAX_PLAQUE_MM < CANAL_CONTENTS_MM  # the outward 0.7 of `WallPatch`
    from dataclasses import replace

    subject = sample_subject(np.random.default_rng(seed), 0, calcium_free_fraction=1.0)
    plaques = tuple(Plaque(side=side, segment="petrous", position=pos, angle_deg=ang,
                           volume_mm3=vol, hu=900.0, kind=kind, arc_deg=arc, length_mm=3.0,
                           shape_seed=seed * 10 + n)
                    for n, (side, pos, ang, vol, kind, arc) in enumerate([
                        ("right", 0.3, 40.0, 200.0, "nodule", 90.0),
                        ("left", 0.5, 200.0, 120.0, "ring", 360.0),
                        ("left", 0.8, 300.0, 60.0, "fleck", 30.0)]))
    subject = replace(subject, plaques=plaques)
    phantom = build_phantom(subject, texture_seed=seed)
    placement = Placement(np.eye(3), np.array([0.0, 0.0, 100.0]))
    lo = np.array([-48.0, -32.0, min(subject.right.z_carotid_canal,
                                     subject.left.z_carotid_canal) - 5])
    hi = np.array([48.0, 28.0, max(subject.right.z_petrolingual,
                                   subject.left.z_petrolingual) + 5])
    wlo, whi = placement.to_world(lo[None])[0], placement.to_world(hi[None])[0]
    step = 0.3
    shape = tuple(int(np.ceil((whi[d] - wlo[d]) / step)) + 1 for d in (2, 1, 0))
    grid = Grid(tuple(wlo), (step, 0, 0), (0, step, 0), (0, 0, step), shape)
    anatomy = render_anatomy(phantom, placement, grid, scale=1, n_sub=1)
    occupancy = plaque_occupancy(phantom.plaques, placement, grid, n_sub=1,
                                 fields=phantom.fields)
    for spec, occ in zip(plaques, occupancy, strict=True):
        assert occ is not None, spec
        under = anatomy[occ.window][occ.fraction > 0.5]
        assert under.size > 20, spec
        # what the plaque is painted over: lumen and canal contents, never the bony wall
        assert np.percentile(under, 99) < 150, (spec, np.percentile(under, [50, 99]))


def test_plaque_occupancy_adds_up_to_the_plaque_volume():
    rng = np.random.default_rng(7)
    subject = sample_subject(rng, 0, calcium_free_fraction=0.0)
    phantom = build_phantom(subject, texture_seed=7)
    placement = Placement(np.eye(3), np.zeros(3))
    grid = Grid((-60.0, -60.0, -150.0), (0.3, 0, 0), (0, 0.3, 0), (0, 0, 0.3), (700, 400, 400))
    occs = plaque_occupancy(phantom.plaques, placement, grid, n_sub=1, fields=phantom.fields)
    assert len(phantom.plaques) == len(subject.plaques) == len(occs)
    for spec, patch, occ in zip(subject.plaques, phantom.plaques, occs, strict=True):
        assert occ is not None and patch.hu == spec.hu
        got = float(occ.fraction.sum()) * 0.3**3
        assert got == pytest.approx(spec.volume_mm3, rel=0.2, abs=0.3), spec


def test_plaques_have_the_morphologies_of_real_calcium():
    """Full and partial rings, lumpy nodules, long thin flecks; a quarter faint (just above
    130 HU); measured on each plaque's outline in the vessel's own coordinates."""
    subject = sample_subject(np.random.default_rng(3), 0, calcium_free_fraction=1.0)
    phantom = build_phantom(subject, texture_seed=3)
    rng = np.random.default_rng(5)
    out = {"ring": [], "nodule": [], "fleck": []}
    faint = 0
    for n in range(240):
        segment = ("cervical", "petrous", "cavernous", "supraclinoid")[n % 4]
        side = SIDES[n % 2]
        volume = float(np.exp(rng.uniform(0, np.log(200))))
        spec = sample_plaque(rng, side, segment, volume)
        faint += spec.hu < 260
        patch = plaque_patch(spec, phantom.arteries[side], subject)
        s = patch.s0 + np.linspace(-patch.half_length, patch.half_length, 81)
        a = np.linspace(-np.pi, np.pi, 180, endpoint=False)
        t = patch.thickness(s[:, None], a[None, :])
        inside = t > 0.02
        arc = 2.0 * inside.any(axis=0).sum()  # degrees of the wall the plaque covers
        length = (s[1] - s[0]) * inside.any(axis=1).sum()
        out[spec.kind].append((spec.arc_deg, arc, length, patch.radius * np.radians(arc),
                               float(t.max())))
        assert patch.volume_mm3() == pytest.approx(volume, rel=0.02)
        assert t.max() <= 2.4 + 1e-6  # thick plaques spread along the wall instead
    assert 0.15 < faint / 240 < 0.35
    assert all(arc >= 340 for spec_arc, arc, *_ in out["ring"] if spec_arc == 360)
    assert any(arc < 330 for *_, arc, _, _, _ in [(0,) + r[1:] for r in out["ring"]])
    assert np.median([arc for _, arc, *_ in out["nodule"]]) <= 150
    assert np.median([length / width for _, _, length, width, _ in out["fleck"]]) >= 2.0
    lumps = [thick for *_, thick in out["nodule"]]
    assert np.std(lumps) > 0.2  # nodules differ in thickness


def test_landmarks_vary_between_subjects_sides_and_scans():
    """No shortcut: landmark slices are not at a fixed index or a fixed distance from the
    top or the bottom of the scan."""
    from_top, from_bottom, index, side_diff = [], [], [], []
    for i in range(60):
        rng = np.random.default_rng([99, i])
        subject = sample_subject(rng, i, 0.5)
        phantom = build_phantom(subject, texture_seed=i)
        pose = sample_pose(rng)
        placement = placement_of(pose, table_z=float(rng.uniform(-150, 50)))
        coverage = sample_coverage(rng, phantom, neck_cut_p=0.25)
        p = sample_protocol(rng, matrix=64, thickness_choices=(1.0,), spacing_range=(0.4, 0.5),
                            tilt_p=0.0, transfer_syntax="explicit")
        grid = acquisition_grid(phantom, placement, coverage, p)
        slices, zs = landmark_truth(phantom, placement, grid)
        for side in SIDES:
            k = slices[f"{side}_petrolingual"]
            assert 0 <= slices[f"{side}_carotid_canal"] < k < slices[f"{side}_anterior_clinoid"]
            index.append(k)
            from_top.append(grid.shape[0] - 1 - k)
            from_bottom.append(k)
        side_diff.append(zs["left_carotid_canal"] - zs["right_carotid_canal"])
    assert np.std(from_top) > 4.0  # slices of 1 mm
    assert np.std(from_bottom) > 4.0
    assert len(set(index)) > 15
    assert 0.8 < np.std(side_diff) < 8.0  # sides differ by a few mm


def test_calcium_sits_mostly_in_cavernous_and_supraclinoid_segments():
    vols = {k: 0.0 for k in ("cervical", "petrous", "cavernous", "supraclinoid")}
    counts = {k: 0 for k in vols}
    free = 0
    for i in range(600):
        subject = sample_subject(np.random.default_rng([5, i]), i, calcium_free_fraction=0.2)
        free += not subject.plaques
        for p in subject.plaques:
            vols[p.segment] += p.volume_mm3
            counts[p.segment] += 1
            assert 1.0 <= p.volume_mm3 <= 200.0 and 130 <= p.hu <= 1500
    share = (counts["cavernous"] + counts["supraclinoid"]) / sum(counts.values())
    assert 0.70 < share < 0.84  # the DST paper: about 77%
    assert 0.15 < free / 600 < 0.25
    assert all(c > 0 for c in counts.values())


def test_landmark_kinds_are_the_papers():
    assert LANDMARK_KINDS == ("carotid_canal", "petrolingual", "anterior_clinoid")
