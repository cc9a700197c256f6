"""The synthetic heads look like CT: tissue proportions of a real head, scanner artefacts
where a scanner makes them, calcium that the annotation rule treats as an annotator would."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cohort.anatomy import SIDES
from cohort.geometry import Grid
from cohort.synth.acquisition import noise_sd, sample_protocol
from cohort.synth.artefacts import StreakModel, add_motion, streak_error
from cohort.synth.phantom import build_phantom
from cohort.synth.render import Placement, render_anatomy
from cohort.synth.scan import (
    ScanArtefacts,
    acquisition_grid,
    calcium_voxels,
    head_holder,
    placement_of,
    render_scan,
    sample_coverage,
    scan_truth,
    subsamples,
)
from cohort.synth.series import synthesize_series
from cohort.synth.subject import sample_plaque, sample_pose, sample_subject
from cohort.synth.tissue import BANDS, TOLERANCE_POINTS, band_counts, head_component, shares


def test_tissue_proportions_are_a_real_heads():
    """Three heads of a seed the generator was not tuned on, 1 mm slices at 512 x 512, from
    the skull base up: every band within 3 points of the real head's range."""
    counts, total = np.zeros(len(BANDS), np.int64), 0
    for i in range(3):
        s = synthesize_series(41, i, matrix=512, thickness_mm=1.0)
        first = min(s.truth.landmark_slices[f"{side}_carotid_canal"] for side in SIDES)
        c, n = band_counts(s.image, first)
        counts += c
        total += n
    got = shares(counts, total)
    for band, share in zip(BANDS, got, strict=True):
        assert band.off_by(share) <= TOLERANCE_POINTS, (band.name, round(share, 1), got)


def test_head_component_leaves_out_air_and_what_does_not_touch_the_head():
    hu = np.full((4, 40, 40), -1000.0, np.float32)
    hu[:, 5:25, 5:25] = 30.0  # the head
    hu[:, 30:33, 5:35] = 180.0  # a holder, apart from it
    head = head_component(hu)
    assert head[:, 10, 10].all() and not head[:, 31, 10].any() and not head[:, 0, 0].any()


def _skull_base_scene(seed: int, fillings: int = 0):
    rng = np.random.default_rng(seed)
    subject = replace(sample_subject(rng, 0, 1.0), dental_fillings=fillings)
    phantom = build_phantom(subject, texture_seed=seed)
    placement = placement_of(sample_pose(rng), table_z=0.0)
    coverage = sample_coverage(rng, phantom, neck_cut_p=0.0)
    p = sample_protocol(rng, matrix=256, thickness_choices=(2.0,), spacing_range=(0.4, 0.5),
                        tilt_p=0.0, transfer_syntax="explicit")
    grid = acquisition_grid(phantom, placement, coverage, p)
    return phantom, placement, grid, p


def test_streaks_run_dark_between_two_dense_objects():
    """Beam hardening's error grows with the square of the bone path: rays through both
    objects lose most, and back-projection draws a dark band between them (the Hounsfield
    bar between the petrous pyramids); away from that line the image is left nearly alone."""
    n = 96
    yy, xx = np.mgrid[:n, :n]
    img = np.full((1, n, n), -1000.0, np.float32)
    img[0][(xx - 48) ** 2 + (yy - 48) ** 2 < 40**2] = 40.0
    for cx, cy in ((30, 60), (70, 40)):
        img[0][(xx - cx) ** 2 + (yy - cy) ** 2 < 36] = 1500.0
    err = streak_error(img, 2.0, StreakModel(k_hu=40.0, size=n, min_error_hu=0.0))[0]
    between = [err[int(60 - 20 * t), int(30 + 40 * t)] for t in np.linspace(0.3, 0.7, 5)]
    assert max(between) < -10.0
    assert abs(err[30, 30]) < 5.0 and abs(err[70, 70]) < 5.0
    one = img.copy()
    one[0][(xx - 70) ** 2 + (yy - 40) ** 2 < 36] = 40.0
    err_one = streak_error(one, 2.0, StreakModel(k_hu=40.0, size=n, min_error_hu=0.0))[0]
    assert err_one[50, 50] > err[50, 50] + 10.0  # the bar needs both objects


def test_beam_hardening_at_the_skull_base_only_and_bounded():
    phantom, placement, grid, p = _skull_base_scene(4)
    clean, _ = render_scan(phantom, placement, grid, p, 2)
    streaked, _ = render_scan(phantom, placement, grid, p, 2,
                              ScanArtefacts(streak_k_hu=StreakModel().k_hu))
    diff = streaked - clean
    z = [float(placement.to_world(phantom.landmark_point(s, "petrolingual"))[2]) for s in SIDES]
    nk, nj, ni = grid.shape
    centres = grid.world((ni - 1) / 2, (nj - 1) / 2, np.arange(nk))[:, 2]
    k = int(np.argmin(np.abs(centres - np.mean(z))))
    brain = (clean[k] > 15) & (clean[k] < 60)
    assert diff[k][brain].std() > 2.0  # visible in the posterior fossa
    assert np.percentile(np.abs(diff[k][brain]), 99) < 60.0  # not a wash of artefact
    assert np.abs(diff[-3]).max() == 0.0  # the top of the head: no skull base, no streaks


def test_metal_fillings_throw_streaks_across_the_face():
    phantom, placement, grid, p = _skull_base_scene(6, fillings=4)
    hu = render_anatomy(phantom, placement, grid, scale=1)
    metal = (hu > 2500).sum(axis=(1, 2))
    assert metal.max() > 0
    k = int(np.argmax(metal))
    model = StreakModel()
    with_metal = streak_error(hu[k:k + 1], grid.spacing[0], model)[0]
    no_metal = streak_error(np.minimum(hu[k:k + 1], 1900.0), grid.spacing[0], model)[0]
    soft = (hu[k] > -200) & (hu[k] < 200)
    assert with_metal[soft].std() > 3 * no_metal[soft].std()


def test_head_holder_sits_behind_the_head_and_apart_from_it():
    phantom, placement, grid, p = _skull_base_scene(7)
    holder = head_holder(phantom, placement)
    hu, _ = render_scan(phantom, placement, grid, p, 2, ScanArtefacts(holder=True))
    bare, _ = render_scan(phantom, placement, grid, p, 2)
    added = (np.abs(hu - bare) > 50) & (bare < -900)
    assert added.sum() > 500 and holder.hu == 180.0
    head = head_component(hu)
    assert not (head & added).any()  # the head's component does not reach the holder
    rows = np.nonzero(added)[1]
    head_rows = np.nonzero(head)[1]
    assert np.median(rows) > np.median(head_rows)  # posterior (LPS: rows grow backwards)


def test_motion_doubles_edges_only_in_the_moved_slices():
    hu = np.full((6, 64, 64), -1000.0, np.float32)
    hu[:, 16:48, 16:48] = 40.0
    moved = hu.copy()
    add_motion(moved, 2, 2, (3.0, 0.0), 0.4)
    assert np.array_equal(moved[[0, 1, 4, 5]], hu[[0, 1, 4, 5]])
    ghost = moved[2, 48:51, 30]  # below the bottom edge: part of the moved copy
    assert (ghost > -1000).all() and (ghost < 40).all()


def test_noise_follows_thickness_dose_voltage_and_kernel():
    base = noise_sd(False, 5.0, 3.0)
    assert noise_sd(False, 1.25, 3.0) == pytest.approx(2 * base)
    assert noise_sd(False, 5.0, 3.0, exposure_mas=75.0) == pytest.approx(2 * base)
    assert noise_sd(False, 5.0, 3.0, kvp=100.0) > base > noise_sd(False, 5.0, 3.0, kvp=140.0)
    assert noise_sd(True, 5.0, 3.0) == pytest.approx(4 * base)


def test_annotation_rule_keeps_what_reads_130_hu_and_faint_calcium_fades_on_thick_slices():
    frac = np.array([0.05, 0.1, 0.5, 0.9, 1.0])
    assert calcium_voxels(frac, 1000.0).tolist() == [False, True, True, True, True]
    assert calcium_voxels(frac, 150.0).tolist() == [False, False, False, True, True]
    assert not calcium_voxels(frac, 120.0).any()
    # one faint plaque, annotated on thin and on thick slices of the same head
    rng = np.random.default_rng(2)
    subject = sample_subject(rng, 0, 1.0)
    faint = replace(sample_plaque(np.random.default_rng(3), "left", "cavernous", 12.0, hu=160.0),
                    kind="nodule", arc_deg=80.0, length_mm=3.0)
    subject = replace(subject, plaques=(faint,))
    phantom = build_phantom(subject, texture_seed=2)
    placement = Placement(np.eye(3), np.zeros(3))
    voxels = {}
    for thickness in (0.625, 5.0):
        grid = Grid((-60.0, -60.0, -60.0), (0.45, 0, 0), (0, 0.45, 0), (0, 0, thickness),
                    (int(80 / thickness), 267, 267))
        truth = scan_truth(phantom, placement, grid, subsamples(thickness))
        voxels[thickness] = float(truth.mask.sum()) * 0.45 * 0.45 * thickness
    assert voxels[0.625] > 2.0  # seen on thin slices
    assert voxels[5.0] < 0.5 * voxels[0.625]  # diluted below 130 HU on thick ones
