"""`quantify` and `label_map` on hand-made masks: the boundary rule on landmark slices, a
plaque across a landmark, landmarks out of order, QC flags and risk groups.

Landmarks (conftest): right cc 2, pl 4, ac 6; left cc 3, pl 5, ac 7. A voxel is 2 mm^3.
"""

import dataclasses

import numpy as np
import pytest

from cohort.anatomy import SEGMENT_LABELS, SEGMENTS
from cohort.errors import ConfigError
from cohort.quantify import (
    QCFlag,
    QuantifyConfig,
    label_map,
    quantify,
    risk_group,
    summarise_calcium,
    tertile_cutoffs,
)

from .conftest import LEFT_COLUMN, RIGHT_COLUMN


def _voxels(result) -> dict[str, int | None]:
    return {name: (None if s is None else s.voxels) for name, s in result.segments.items()}


def test_voxels_on_landmark_slices_belong_to_the_distal_segment(grid, side_of, landmarks,
                                                               blank):
    mask, hu = blank
    # right side, one voxel per slice on rows 0, 2, 4 (never touching): slice 1 is below
    # cc (cervical); 2 = cc (petrous); 4 = pl (cavernous); 6 = ac and 9 (supraclinoid)
    for row, k in zip((0, 2, 4, 0, 4), (1, 2, 4, 6, 9), strict=True):
        mask[k, row, RIGHT_COLUMN] = 1
        hu[k, row, RIGHT_COLUMN] = 100.0 * k
    # left side: slice 3 = cc (petrous), 5 = pl (cavernous), 7 = ac (supraclinoid)
    for k in (3, 5, 7):
        mask[k, 0, LEFT_COLUMN] = 1
    result = quantify(summarise_calcium(mask, hu, grid, side_of), landmarks)
    assert _voxels(result) == {
        "right_cervical": 1, "right_petrous": 1, "right_cavernous": 1, "right_supraclinoid": 2,
        "left_cervical": 0, "left_petrous": 1, "left_cavernous": 1, "left_supraclinoid": 1}
    sup = result.segments["right_supraclinoid"]
    assert sup.volume_mm3 == 4.0 and sup.plaques == 2 and sup.peak_hu == 900.0
    assert result.segments["left_cervical"].peak_hu is None
    assert result.total_voxels == 8 and result.total_mm3 == 16.0 and result.n_plaques == 8
    # the label map applies the same rule voxel by voxel
    labels = label_map(mask, grid, landmarks, side_of)
    assert labels.dtype == np.uint8
    assert labels[1, 0, RIGHT_COLUMN] == SEGMENT_LABELS["right_cervical"]
    assert labels[2, 2, RIGHT_COLUMN] == SEGMENT_LABELS["right_petrous"]
    assert labels[4, 4, RIGHT_COLUMN] == SEGMENT_LABELS["right_cavernous"]
    assert labels[6, 0, RIGHT_COLUMN] == SEGMENT_LABELS["right_supraclinoid"]
    assert labels[3, 0, LEFT_COLUMN] == SEGMENT_LABELS["left_petrous"]
    assert labels[5, 0, LEFT_COLUMN] == SEGMENT_LABELS["left_cavernous"]
    assert labels[7, 0, LEFT_COLUMN] == SEGMENT_LABELS["left_supraclinoid"]
    np.testing.assert_array_equal(labels > 0, mask > 0)
    for name in SEGMENTS:
        assert np.count_nonzero(labels == SEGMENT_LABELS[name]) == _voxels(result)[name]


def test_a_plaque_across_a_landmark_is_split_exactly_and_counted_in_both(grid, side_of,
                                                                        landmarks, blank):
    mask, hu = blank
    # one left plaque over slices 3-6, 2 voxels a slice except 3 on slice 5 (= left pl):
    # slices 3, 4 are petrous (4 voxels), 5, 6 cavernous (5 voxels)
    mask[3:7, 1:3, LEFT_COLUMN] = 1
    mask[5, 3, LEFT_COLUMN] = 1
    hu[3:7, 1, LEFT_COLUMN] = (400.0, 700.0, 300.0, 650.0)
    result = quantify(summarise_calcium(mask, hu, grid, side_of), landmarks)
    pet, cav = result.segments["left_petrous"], result.segments["left_cavernous"]
    assert (pet.voxels, pet.volume_mm3, pet.plaques, pet.peak_hu) == (4, 8.0, 1, 700.0)
    assert (cav.voxels, cav.volume_mm3, cav.plaques, cav.peak_hu) == (5, 10.0, 1, 650.0)
    # one plaque in all, counted in each segment it touches
    assert result.n_plaques == 1
    assert sum(s.plaques for s in result.segments.values()) == 2


def test_out_of_order_landmarks_are_flagged_not_fatal(grid, side_of, landmarks, blank):
    mask, hu = blank
    mask[5, 0, RIGHT_COLUMN] = 1
    mask[1, 0, LEFT_COLUMN] = 1
    swapped = {**landmarks, "right_petrolingual": 6, "right_anterior_clinoid": 4}
    summary = summarise_calcium(mask, hu, grid, side_of)
    # default "sort": the right side is quantified with (2, 4, 6)
    result = quantify(summary, swapped)
    assert result.qc_flags == (QCFlag.LANDMARKS_OUT_OF_ORDER.value,)
    assert _voxels(result)["right_cavernous"] == 1
    assert _voxels(result) == _voxels(quantify(summary, landmarks))
    # "omit": the right side's segments are unknown; the left side and totals remain
    result = quantify(summary, swapped, QuantifyConfig(out_of_order="omit"))
    assert result.qc_flags == ("landmarks_out_of_order",)
    assert all(result.segments[f"right_{k}"] is None
               for k in ("cervical", "petrous", "cavernous", "supraclinoid"))
    assert result.segments["left_cervical"].voxels == 1
    assert result.total_voxels == 2 and result.risk_group == "low"
    row = result.as_row()
    assert row["right_cavernous_mm3"] is None and row["left_cervical_mm3"] == 2.0
    assert row["qc_flags"] == ["landmarks_out_of_order"]
    # the label map still labels every calcium voxel (sorted landmarks)
    labels = label_map(mask, grid, swapped, side_of)
    assert labels[5, 0, RIGHT_COLUMN] == SEGMENT_LABELS["right_cavernous"]
    # reversed on both sides, outside the scan, carotid canals 8 slices = 16 mm apart:
    # still a result
    wild = {name: v for name, v in zip(landmarks, (12, 5, -1, 20, 9, 0), strict=True)}
    result = quantify(summary, wild)
    assert result.qc_flags == ("low_landmark_confidence", "landmarks_out_of_order",
                               "landmark_outside_scan", "left_right_landmarks_apart")
    # the canals 16 mm apart: both listed, whichever is wrong
    assert result.low_confidence_landmarks == ("right_carotid_canal", "left_carotid_canal")
    assert sum(_voxels(result).values()) == 2


def test_low_confidence_flag_and_names(grid, side_of, landmarks, blank):
    summary = summarise_calcium(*blank, grid, side_of)
    probs = dict.fromkeys(landmarks, 0.9)
    assert quantify(summary, landmarks, probabilities=probs).qc_flags == ()
    probs.update(left_petrolingual=0.49, right_carotid_canal=float("nan"),
                 left_anterior_clinoid=None)
    result = quantify(summary, landmarks, probabilities=probs)
    assert result.qc_flags == ("low_landmark_confidence",)
    assert result.low_confidence_landmarks == ("right_carotid_canal", "left_petrolingual")
    # exactly at the threshold is confident enough
    probs = {"left_petrolingual": 0.5}
    assert quantify(summary, landmarks, probabilities=probs).qc_flags == ()


def test_implausible_landmark_gaps_are_flagged_and_named(grid, side_of, landmarks, blank):
    summary = summarise_calcium(*blank, grid, side_of)  # 2 mm slices, 10 of them
    probs = dict.fromkeys(landmarks, 0.9)
    # consecutive landmarks 2 slices = 4 mm apart: within 5 mm less one slice step
    assert quantify(summary, landmarks, probabilities=probs).qc_flags == ()
    strict = QuantifyConfig(landmark_gap_mm=(6.5, 30.0))  # 4 mm < 6.5 - 2
    result = quantify(summary, landmarks, strict, probabilities=probs)
    assert result.qc_flags == ("low_landmark_confidence", "landmark_gap_implausible")
    assert result.low_confidence_landmarks == tuple(landmarks)  # every pair, both sides
    # the right clinoid 1 slice = 2 mm above its ligament: closer than 5 - 2 = 3 mm
    close = {**landmarks, "right_anterior_clinoid": 5}
    result = quantify(summary, close, probabilities=probs)
    assert result.low_confidence_landmarks == ("right_petrolingual", "right_anterior_clinoid")
    # a clinoid far too high (here with a 6 mm ceiling): its pair is named, the model's
    # confidence notwithstanding
    far = QuantifyConfig(landmark_gap_mm=(1.0, 6.0))
    result = quantify(summary, {**landmarks, "left_anterior_clinoid": 9}, far,
                      probabilities=probs)  # 4 slices = 8 mm <= 6 + 2: plausible
    assert result.low_confidence_landmarks == ()
    result = quantify(summary, {**landmarks, "left_anterior_clinoid": 9},
                      QuantifyConfig(landmark_gap_mm=(1.0, 5.9)), probabilities=probs)
    assert result.low_confidence_landmarks == ("left_petrolingual", "left_anterior_clinoid")
    assert "landmark_gap_implausible" in result.qc_flags
    with pytest.raises(ConfigError, match="landmark_gap_mm"):
        QuantifyConfig(landmark_gap_mm=(10.0, 5.0))


def test_left_right_gap_in_mm_uses_the_slice_spacing(grid, side_of, landmarks, blank):
    summary = summarise_calcium(*blank, grid, side_of)
    # the sides are 1 slice = 2 mm apart for every landmark kind
    assert quantify(summary, landmarks, QuantifyConfig(max_side_gap_mm=2.0)).qc_flags == ()
    result = quantify(summary, landmarks, QuantifyConfig(max_side_gap_mm=1.9))
    assert result.qc_flags == ("low_landmark_confidence", "left_right_landmarks_apart")
    assert result.low_confidence_landmarks == tuple(landmarks)  # every kind, both sides


def test_calcium_far_above_the_clinoid_or_below_the_canal(grid, side_of, landmarks, blank):
    mask, hu = blank
    mask[9, 0, RIGHT_COLUMN] = 1  # 3 slices = 6 mm above the right clinoid (slice 6)
    mask[0, 0, LEFT_COLUMN] = 1  # 3 slices = 6 mm below the left canal (slice 3)
    summary = summarise_calcium(mask, hu, grid, side_of)
    at_limit = QuantifyConfig(max_above_clinoid_mm=6.0, max_below_canal_mm=6.0)
    assert quantify(summary, landmarks, at_limit).qc_flags == ()
    tight = QuantifyConfig(max_above_clinoid_mm=5.9, max_below_canal_mm=5.9)
    assert quantify(summary, landmarks, tight).qc_flags == ("calcium_above_clinoid",
                                                            "calcium_below_canal")
    # the defaults (20 mm, 40 mm) let both through
    assert quantify(summary, landmarks).qc_flags == ()


def test_missing_landmarks_are_a_programming_error(grid, side_of, landmarks, blank):
    summary = summarise_calcium(*blank, grid, side_of)
    partial = dict(landmarks)
    del partial["left_petrolingual"]
    with pytest.raises(ValueError, match="left_petrolingual"):
        quantify(summary, partial)
    with pytest.raises(ValueError, match="whole number"):
        quantify(summary, {**landmarks, "left_petrolingual": 4.5})
    # numpy integers and whole floats are slice indices
    assert quantify(summary, {k: np.int64(v) for k, v in landmarks.items()}).total_voxels == 0


def test_risk_groups_by_total_volume():
    cfg = QuantifyConfig()
    assert cfg.risk_thresholds_mm3 == (0.0, 10.0, 100.0)
    groups = [risk_group(v, cfg.risk_thresholds_mm3, cfg.risk_groups)
              for v in (0.0, 0.5, 10.0, 10.01, 100.0, 100.5, 5000.0)]
    # a cut-off itself belongs to the group below it
    assert groups == ["none", "low", "low", "moderate", "moderate", "high", "high"]
    two = QuantifyConfig(risk_thresholds_mm3=(0.0, 30.0), risk_groups=("no", "some", "much"))
    assert [risk_group(v, two.risk_thresholds_mm3, two.risk_groups)
            for v in (0, 30, 31)] == ["no", "some", "much"]


def test_risk_group_of_a_quantified_series(grid, side_of, landmarks, blank):
    mask, hu = blank
    summary = summarise_calcium(mask, hu, grid, side_of)
    assert quantify(summary, landmarks).risk_group == "none"
    mask[0:5, 0:2, RIGHT_COLUMN] = 1  # 10 voxels = 20 mm^3
    summary = summarise_calcium(mask, hu, grid, side_of)
    assert quantify(summary, landmarks).risk_group == "moderate"
    cfg = QuantifyConfig(risk_thresholds_mm3=(0.0, 20.0), risk_groups=("none", "lo", "hi"))
    assert quantify(summary, landmarks, cfg).risk_group == "lo"


def test_tertile_cutoffs_ignore_zeros():
    # non-zero volumes 1..6: numpy's linear quantiles at 1/3 and 2/3 sit at positions
    # 5/3 and 10/3 of the sorted values: 2 + 2/3 and 4 + 1/3
    t = tertile_cutoffs([0, 0, 3, 1, 2, 6, 5, 4])
    assert t == pytest.approx((0.0, 8 / 3, 13 / 3), rel=1e-12)
    cfg = QuantifyConfig(risk_thresholds_mm3=t)  # usable as they are
    assert cfg.risk_groups == ("none", "low", "moderate", "high")
    with pytest.raises(ValueError, match="at least 3"):
        tertile_cutoffs([0, 1, 2])


@pytest.mark.parametrize("kwargs, match", [
    (dict(risk_thresholds_mm3=(0.0, 50.0, 10.0)), "increasing"),
    (dict(risk_thresholds_mm3=(-1.0, 10.0, 100.0)), "increasing"),
    (dict(risk_thresholds_mm3=(0.0, 10.0)), "group names"),
    (dict(risk_groups=("a", "a", "b", "c")), "distinct"),
    (dict(min_landmark_probability=1.5), "0-1"),
    (dict(max_side_gap_mm=-1.0), "max_side_gap_mm"),
    (dict(out_of_order="guess"), "sort, omit"),
])
def test_config_is_checked(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        QuantifyConfig(**kwargs)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        QuantifyConfig().max_side_gap_mm = 3.0
