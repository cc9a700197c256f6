"""Quantification reproduces a synthetic cohort's ground truth exactly.

Given the true landmarks (ground_truth.parquet), the true calcium mask (masks/<uid>.nii.gz)
and the true side of each calcium voxel, the per-segment voxel counts must equal the
table's, volumes must equal it to float precision, and `label_map` must equal the
ground-truth label NIfTI voxel for voxel.

The side comes from the ground-truth label map (codes 1-4 right, 5-8 left): the generator
does not record the midline plane (the head's shift in the field of view is not in the
table), and a plane x = 0 through the field-of-view centre puts calcium on the wrong side
in a few percent of series (2 of 74 in a 40-patient cohort), so it cannot serve here.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk

from cohort.anatomy import LANDMARKS, SEGMENT_LABELS, SEGMENTS
from cohort.geometry import Grid
from cohort.quantify import label_map, quantify, summarise_calcium
from cohort.read.volume import Volume
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort
from cohort.testing.truth import side_from_labels


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Four calcified patients at 128 x 128, 2.5 and 5 mm slices, gantry tilt, follow-ups."""
    out = tmp_path_factory.mktemp("quantify") / "cohort"
    cfg = SynthConfig(patients=4, seed=1, matrix=128, thicknesses_mm=(2.5, 5.0), tilt_p=0.5,
                      localizer_p=0.0, second_series_p=0.5, followup_p=0.5, neck_cut_p=0.3,
                      calcium_free_p=0.0, workers=1)
    generate_cohort(cfg, str(out))
    gt = pq.read_table(out / "ground_truth.parquet").to_pandas()
    return out, gt[gt["series_role"] != "localizer"]


def truth_grid(row, origin) -> Grid:
    """The generator's axial truth grid from the table's float64 geometry (the NIfTI keeps
    spacing in float32)."""
    px = row.pixel_spacing_mm
    row_step = px * np.cos(np.radians(row.gantry_tilt_deg))
    return Grid(tuple(origin), (px, 0.0, 0.0), (0.0, row_step, 0.0),
                (0.0, 0.0, row.slice_step_mm), (row.n_slices, row.rows, row.columns))


def test_the_cohort_has_what_the_test_needs(cohort):
    _, gt = cohort
    # every patient has plaques; a series whose plaques are all faint can hold no voxel
    # that reads 130 HU on thick slices (the annotation rule), but most hold some
    assert len(gt) >= 8 and (gt["total_calcium_mm3"] > 0).mean() >= 0.75
    assert set(gt["slice_thickness_mm"]) == {2.5, 5.0}
    assert (gt["gantry_tilt_deg"] != 0).any()
    both_sides = (gt.filter(like="right_").filter(like="_voxels").sum(axis=1) > 0) & \
        (gt.filter(like="left_").filter(like="_voxels").sum(axis=1) > 0)
    assert both_sides.any()


def test_segments_and_labels_equal_the_ground_truth(cohort):
    root, gt = cohort
    rng = np.random.default_rng(0)
    for row in gt.itertuples():
        mask_img = sitk.ReadImage(str(root / row.mask_path))
        mask = Volume.from_sitk(mask_img)
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(root / row.labels_path)))
        grid = truth_grid(row, mask.grid.origin)
        assert mask.array.shape == truth.shape == grid.shape
        side_of = side_from_labels(truth, grid)
        landmarks = {name: getattr(row, f"{name}_slice") for name in LANDMARKS}
        hu = rng.uniform(130.0, 1500.0, size=mask.array.shape).astype(np.float32)

        summary = summarise_calcium(mask.array, hu, grid, side_of)
        result = quantify(summary, landmarks)
        for name in SEGMENTS:
            stats = result.segments[name]
            in_segment = truth == SEGMENT_LABELS[name]
            assert stats.voxels == getattr(row, f"{name}_voxels"), (row.series_instance_uid, name)
            assert stats.volume_mm3 == pytest.approx(getattr(row, f"{name}_mm3"), rel=1e-12)
            expected_peak = float(hu[in_segment].max()) if in_segment.any() else None
            assert stats.peak_hu == expected_peak
        assert result.total_mm3 == pytest.approx(row.total_calcium_mm3, rel=1e-12)
        # true landmarks and calcium on its artery raise no flag with the defaults
        assert result.qc_flags == ()

        np.testing.assert_array_equal(label_map(mask.array, grid, landmarks, side_of), truth)

        # on the NIfTI's own (float32-spacing) grid the volumes agree to that precision
        nifti = quantify(summarise_calcium(mask.array, hu, mask.grid, side_of), landmarks)
        for name in SEGMENTS:
            assert nifti.segments[name].voxels == getattr(row, f"{name}_voxels")
            assert nifti.segments[name].volume_mm3 == pytest.approx(
                getattr(row, f"{name}_mm3"), rel=1e-6)
