"""The segmenter's arterial crop: in-plane box around the midline, slices from the
landmarks, the edges where calcium could continue outside."""

from __future__ import annotations

import numpy as np
import pytest

from cohort.anatomy import LANDMARKS
from cohort.geometry import Grid
from cohort.preprocess.arterial_crop import (
    Box,
    CropConfig,
    arterial_box,
    depth_range,
    edge_voxels,
    slab_box,
)


def axial_grid(n=(60, 200, 200), spacing=(0.5, 0.5, 2.0), origin=(-50.0, -50.0, -100.0)):
    """LPS axial grid: columns along +x (patient's left), rows along +y (posterior)."""
    return Grid(origin, (spacing[0], 0.0, 0.0), (0.0, spacing[1], 0.0), (0.0, 0.0, spacing[2]),
                n)


def landmarks(cc: int, pl: int, ac: int) -> dict[str, int]:
    out = {}
    for name in LANDMARKS:
        out[name] = {"carotid_canal": cc, "petrolingual": pl, "anterior_clinoid": ac}[
            name.split("_", 1)[1]]
    return out


def test_the_box_spans_the_configured_millimetres_around_the_midline():
    g = axial_grid()
    point = g.world(100, 120, 30)  # the skull centroid at column 100, row 120
    cfg = CropConfig(lateral_mm=20, anterior_mm=30, posterior_mm=10)
    box = slab_box(g, point, (1.0, 0.0, 0.0), cfg)
    # 20 mm = 40 columns to each side of column 100; 30 mm in front (fewer rows: anterior is
    # -y) and 10 mm behind
    assert box.i == (60, 141) and box.j == (60, 141)
    assert box.k == (0, 60)


def test_a_mirrored_image_gives_the_same_anatomical_box():
    """Rows running anteriorly (flipped y) must still put the box in front of the point."""
    g = Grid((-50.0, 49.5, -100.0), (0.5, 0.0, 0.0), (0.0, -0.5, 0.0), (0.0, 0.0, 2.0),
             (60, 200, 200))
    point = g.world(100, 79, 30)  # y = 10 mm
    box = slab_box(g, point, (1.0, 0.0, 0.0),
                   CropConfig(lateral_mm=20, anterior_mm=30, posterior_mm=10))
    ys = [g.world(100, j, 0)[1] for j in (box.j[0], box.j[1] - 1)]
    assert min(ys) == pytest.approx(10 - 30, abs=0.6) and max(ys) == pytest.approx(
        10 + 10, abs=0.6)


def test_a_box_outside_the_image_is_an_error():
    g = axial_grid()
    with pytest.raises(ValueError, match="misses the image"):
        slab_box(g, (500.0, 500.0, 0.0), (1.0, 0.0, 0.0))


def test_depth_range_runs_from_below_the_canal_to_above_the_clinoid():
    z = np.arange(100) * 2.0  # 2 mm slices
    lm = landmarks(40, 50, 60)
    lm["left_carotid_canal"] = 38  # the lower canal counts
    lm["right_anterior_clinoid"] = 62  # the higher clinoid counts
    k0, k1 = depth_range(lm, z, CropConfig(below_mm=10, above_mm=6))
    assert (k0, k1) == (38 - 5, 62 + 3 + 1)
    assert depth_range(landmarks(2, 5, 97), z, CropConfig()) == (0, 100)  # clipped


def test_arterial_box_takes_the_volume_as_rows_columns_slices():
    g = axial_grid(n=(80, 120, 120), spacing=(1.0, 1.0, 1.0))
    box = arterial_box(g, g.world(60, 60, 40), (1, 0, 0), landmarks(30, 40, 50),
                       CropConfig(lateral_mm=10, anterior_mm=10, posterior_mm=10,
                                  below_mm=5, above_mm=5))
    a = np.arange(np.prod(g.shape), dtype=np.float32).reshape(g.shape)
    crop = box.take(a)
    assert crop.shape == (box.shape[1], box.shape[2], box.shape[0])
    assert crop[0, 0, 0] == a[box.k[0], box.j[0], box.i[0]]
    sub = box.sub_grid(g)
    assert np.allclose(sub.world(0, 0, 0), g.world(box.i[0], box.j[0], box.k[0]))
    assert Box.from_list(box.to_list()) == box


def test_edge_voxels_count_inner_faces_only():
    mask = np.zeros((10, 10, 6), dtype=bool)
    mask[5, 5, 0] = True  # on the bottom face
    mask[0, 4, 3] = True  # on the first-row face
    inner = Box((10, 16), (20, 30), (20, 30))
    assert edge_voxels(mask, inner, (100, 100, 100)) == 2
    at_image_edge = Box((0, 6), (0, 10), (20, 30))  # bottom and first row are the image's
    assert edge_voxels(mask, at_image_edge, (100, 100, 100)) == 0
