"""The shared vocabulary and the boundary rule, on hand-worked examples."""

import numpy as np
import pytest

from cohort.anatomy import (
    LANDMARKS,
    SEGMENT_LABELS,
    SEGMENTS,
    segment_label,
    segment_of_slices,
    side_sign,
)


def test_names_and_codes():
    assert LANDMARKS == ("right_carotid_canal", "right_petrolingual", "right_anterior_clinoid",
                         "left_carotid_canal", "left_petrolingual", "left_anterior_clinoid")
    assert SEGMENT_LABELS["right_cervical"] == 1 and SEGMENT_LABELS["left_supraclinoid"] == 8
    assert len(SEGMENTS) == 8
    assert side_sign("left") == 1 and side_sign("right") == -1
    with pytest.raises(ValueError, match="unknown side"):
        side_sign("middle")


def test_a_slice_on_a_landmark_belongs_to_the_distal_segment():
    k = np.arange(0, 12)
    got = segment_of_slices(k, cc=3, pl=6, ac=9)
    #              0  1  2  3  4  5  6  7  8  9 10 11
    assert list(got) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert list(segment_label("left", got[[0, 3, 6, 9]])) == [5, 6, 7, 8]
    assert list(segment_label("right", got[[0, 3, 6, 9]])) == [1, 2, 3, 4]


def test_equal_landmarks_leave_an_empty_segment():
    assert list(segment_of_slices(np.array([4, 5, 6]), cc=5, pl=5, ac=6)) == [0, 2, 3]


def test_out_of_order_landmarks_are_refused():
    with pytest.raises(ValueError, match="out of anatomical order"):
        segment_of_slices(np.arange(5), cc=4, pl=2, ac=6)
