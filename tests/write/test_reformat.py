"""cohort.write.reformat on a small hand-made volume: a uniform 40 HU block, 0.5 x 0.5 x 2 mm
voxels, so every panel's size, line row and calcium pixel can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from cohort.anatomy import SEGMENT_LABELS
from cohort.geometry import Grid
from cohort.write.reformat import (
    SEGMENT_COLOURS,
    Planes,
    ReformatStyle,
    choose_planes,
    reformat_figure,
)

NK, NJ, NI = 20, 40, 60  # slices, rows, columns
GRID = Grid((0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 0.0, 2.0), (NK, NJ, NI))
# 1 px across, 4 px per slice; a small font keeps the line tags (at the panel's edge) off
# the calcium
STYLE = ReformatStyle(mm_per_pixel=0.5, crop_to_body=False, font_px=8)
PLANES = Planes(coronal_row=27, sagittal_columns=(15, 45), midline_column=29.5)
LANDMARKS = {"right_carotid_canal": 5, "right_petrolingual": 9, "right_anterior_clinoid": 13,
             "left_carotid_canal": 6, "left_petrolingual": 10, "left_anterior_clinoid": 14}
PETROUS, CAVERNOUS, SUPRACLINOID = (SEGMENT_COLOURS[k] for k in
                                    ("petrous", "cavernous", "supraclinoid"))


def _volume() -> tuple[np.ndarray, np.ndarray]:
    hu = np.full((NK, NJ, NI), 40.0, dtype=np.float32)
    labels = np.zeros((NK, NJ, NI), dtype=np.uint8)
    labels[8:10, 25:30, 13:18] = SEGMENT_LABELS["right_cavernous"]  # centre j 27, i 15
    labels[17, 27, 43:48] = SEGMENT_LABELS["left_supraclinoid"]  # centre i 45
    hu[labels > 0] = 250.0  # calcium, but under the 300 HU that counts as skull
    return hu, labels


def _panels(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of each panel: the runs of the 40 HU grey."""
    g = int(round(255 * np.interp(40.0, *zip(*STYLE.window, strict=True))))
    grey = (image == g).all(axis=2)
    rows = np.flatnonzero(grey.sum(axis=1) >= 100)  # panel rows, not anti-aliased text
    cols = np.flatnonzero(grey[rows].sum(axis=0) >= len(rows) // 2)
    breaks = np.flatnonzero(np.diff(cols) > 1)
    starts = np.r_[cols[0], cols[breaks + 1]]
    ends = np.r_[cols[breaks], cols[-1]]
    return [(int(rows[0]), int(rows[-1]), int(a), int(b)) for a, b in zip(starts, ends,
                                                                          strict=True)]


@pytest.fixture(scope="module")
def figure() -> np.ndarray:
    hu, labels = _volume()
    image = reformat_figure(hu, GRID, LANDMARKS, labels, planes=PLANES,
                            title="SYNTHETIC test", style=STYLE)
    return np.asarray(image)


def test_panels_have_the_physical_aspect(figure):
    panels = _panels(figure)
    assert len(panels) == 3  # coronal, right sagittal, left sagittal
    heights = {b - t + 1 for t, b, _, _ in panels}
    widths = [r - left + 1 for _, _, left, r in panels]
    assert heights == {NK * 2.0 / 0.5}  # 40 mm of slices at 0.5 mm per pixel
    assert widths == [NI * 0.5 / 0.5, NJ * 0.5 / 0.5, NJ * 0.5 / 0.5]


def test_landmark_lines_sit_on_their_slices(figure):
    (top, _, c0, c1), (_, _, r0, r1), (_, _, l0, l1) = _panels(figure)

    def row(k: int) -> int:  # centre of slice k: 4 px per slice, superior at the top
        return top + (NK - 1 - k) * 4 + 2

    # left side: solid across the left-ICA sagittal panel
    left_pl = figure[row(10), l0:l1 + 1]
    assert (left_pl == CAVERNOUS).all(axis=1).mean() > 0.9
    assert not (figure[row(10) + 1, l0:l1 + 1] == CAVERNOUS).all(axis=1).any()
    # right side: dashed (6 on, 4 off) across the right-ICA sagittal panel
    right_cc = (figure[row(5), r0:r1 + 1] == PETROUS).all(axis=1)
    assert 0.45 < right_cc.mean() < 0.75
    # coronal: the right side's lines cover the image's left half (patient right) only
    right_ac = (figure[row(13), c0:c1 + 1] == SUPRACLINOID).all(axis=1)
    assert right_ac[:25].any() and not right_ac[35:].any()
    left_ac = (figure[row(14), c0:c1 + 1] == SUPRACLINOID).all(axis=1)
    assert left_ac[35:].all() and not left_ac[:25].any()


def test_calcium_is_painted_in_its_segment_colour(figure):
    (top, _, c0, _), (_, _, r0, _), (_, _, l0, _) = _panels(figure)
    # right cavernous block: slices 8-9 -> rows 40-47 from the top, columns 13-17; rows
    # 43-47 lie below the right petrolingual line (row 42) and its tag (rows above it)
    rows = top + np.r_[43:48]
    assert (figure[rows, c0 + 13:c0 + 18] == CAVERNOUS).all()
    assert (figure[rows, r0 + 25:r0 + 30] == CAVERNOUS).all()  # rows j 25-29
    assert not (figure[rows, c0 + 18:c0 + 30] == CAVERNOUS).all(axis=2).any()
    # left supraclinoid voxels: slice 17 -> rows 8-11, columns 43-47; not on the right ICA
    assert (figure[top + 8:top + 12, c0 + 43:c0 + 48] == SUPRACLINOID).all()
    assert (figure[top + 8:top + 12, l0 + 27] == SUPRACLINOID).all()
    assert not (figure[top + 8:top + 12, r0:r0 + NJ] == SUPRACLINOID).all(axis=2).any()


def test_planes_follow_the_calcium_and_mirror_a_side_without():
    hu, labels = _volume()
    hu[:, :, [5, 54]] = 1000.0  # two symmetric "skull" walls: midline at column 29.5
    planes = choose_planes(hu, GRID, labels, style=STYLE)
    assert planes.midline_column == pytest.approx(29.5)
    assert planes.coronal_row == 27  # the rows of the calcium
    assert planes.sagittal_columns == (15, 45)
    labels[labels == SEGMENT_LABELS["left_supraclinoid"]] = 0
    assert choose_planes(hu, GRID, labels, style=STYLE).sagittal_columns == (15, 44)
    # no labels: the image centre row, and side_offset_mm (20 mm = 40 columns) from midline
    assert choose_planes(hu, GRID, style=STYLE) == Planes(20, (0, 59), 29.5)


def test_rejects_a_tilted_grid_and_unknown_landmarks():
    hu, _ = _volume()
    tilted = Grid((0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (0.0, 0.47, -0.17), (0.0, 0.0, 2.0),
                  (NK, NJ, NI))
    with pytest.raises(ValueError, match="axial_equivalent"):
        reformat_figure(hu, tilted, LANDMARKS, planes=PLANES, style=STYLE)
    with pytest.raises(ValueError, match="unknown landmark"):
        reformat_figure(hu, GRID, {"right_sella": 3}, planes=PLANES, style=STYLE)
