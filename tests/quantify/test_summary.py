"""`summarise_calcium` on hand-made masks: counts, peaks, pieces, voxel volume, side rule."""

import json
import pickle

import numpy as np
import pytest

from cohort.geometry import Grid
from cohort.quantify import CalciumSummary, plane_side, summarise_calcium


def test_counts_peaks_and_pieces_by_side(grid, side_of, blank):
    mask, hu = blank
    mask[4:7, 2, 1] = 1  # right: a bar over slices 4-6
    hu[4:7, 2, 1] = (300.0, 800.0, 500.0)
    mask[8, 3, 3:5] = 1  # a plaque across the midline: one piece per side
    hu[8, 3, 3:5] = (200.0, 900.0)
    mask[1, 0, 7] = 1  # left, alone
    hu[1, 0, 7] = 150.0
    s = summarise_calcium(mask, hu, grid, side_of)
    assert s.n_slices == 10 and s.voxel_mm3 == 2.0 and s.slice_spacing_mm == 2.0
    assert s.total_voxels == 6
    assert list(s.slice_voxels[0]) == [0, 0, 0, 0, 1, 1, 1, 0, 1, 0]  # right
    assert list(s.slice_voxels[1]) == [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]  # left
    np.testing.assert_array_equal(s.slice_peak_hu[0, [4, 5, 6, 8]], [300, 800, 500, 200])
    assert np.isnan(s.slice_peak_hu[0, 0]) and s.slice_peak_hu[1, 8] == 900
    # pieces in order of their component's first voxel, then right before left
    assert s.n_pieces == 4
    assert list(s.piece_side) == [1, 0, 0, 1]
    assert list(s.piece_first_slice) == [1, 4, 8, 8]
    assert list(s.piece_offsets) == [0, 1, 4, 5, 6]
    sl, counts = s.piece_slices(1)
    assert list(sl) == [4, 5, 6] and list(counts) == [1, 1, 1]
    np.testing.assert_array_equal(s.piece_peak_hu, [150, 800, 200, 900])


def test_a_piece_cut_by_the_midline_keeps_zero_counts_inside_its_range(grid, side_of, blank):
    mask, hu = blank
    # one component: left at slice 2, right at slice 3, left again at slice 4
    mask[2, 0, 4] = mask[3, 0, 3] = mask[4, 0, 4] = 1
    s = summarise_calcium(mask, hu, grid, side_of)
    assert s.n_pieces == 2 and list(s.piece_side) == [0, 1]
    sl, counts = s.piece_slices(1)
    assert list(sl) == [2, 3, 4] and list(counts) == [1, 0, 1]
    piece, slices, voxels = s.piece_entries()
    assert list(piece) == [0, 1, 1] and list(slices) == [3, 2, 4] and list(voxels) == [1, 1, 1]


def test_a_voxel_exactly_on_the_midline_is_left(blank):
    mask, hu = blank
    grid = Grid((-3.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 2.0), mask.shape)
    mask[0, 0, 3] = 1  # x = 0.0 exactly
    mask[5, 0, 2] = 1  # x = -1: right
    s = summarise_calcium(mask, hu, grid, plane_side((0, 0, 0), (2.0, 0, 0)))
    assert s.slice_voxels[1, 0] == 1 and s.slice_voxels[0, 5] == 1


def test_a_sheared_grid_has_the_parallelepiped_volume_and_plane_spacing(blank):
    mask, hu = blank
    # gantry tilt: the slice step leans 0.5 mm along y per 2 mm along z
    grid = Grid((0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 0.5, 2.0), mask.shape)
    s = summarise_calcium(mask, hu, grid, plane_side((1.0, 0, 0), (1, 0, 0)))
    assert s.voxel_mm3 == pytest.approx(0.5 * 0.5 * 2.0, rel=1e-12)  # not 0.5*0.5*|(0,.5,2)|
    assert s.slice_spacing_mm == pytest.approx(2.0, rel=1e-12)


def test_empty_mask(grid, side_of, blank):
    s = summarise_calcium(*blank, grid, side_of)
    assert s.total_voxels == 0 and s.n_pieces == 0 and list(s.piece_offsets) == [0]
    assert np.isnan(s.slice_peak_hu).all()


def test_small_picklable_and_round_trips_through_plain_values(grid, side_of, blank):
    mask, hu = blank
    mask[4:7, 2, 1] = 1
    mask[8, 3, 3:5] = 1
    s = summarise_calcium(mask, hu, grid, side_of)
    back = pickle.loads(pickle.dumps(s))
    plain = s.to_dict()
    assert plain["slice_peak_hu"][0][0] is None  # NaN -> None for Arrow / JSON
    json.dumps(plain)  # plain Python numbers only
    again = CalciumSummary.from_dict(plain)
    for other in (back, again):
        for name, value in s.__dict__.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(getattr(other, name), value)
                assert getattr(other, name).dtype == value.dtype
            else:
                assert getattr(other, name) == value


def test_a_512_matrix_summary_is_a_few_kilobytes():
    shape = (300, 512, 512)
    mask = np.zeros(shape, dtype=bool)
    mask[100:104, 200:205, 150:156] = True
    mask[140:150, 300:303, 350:352] = True
    grid = Grid((-128.0, -128.0, 0.0), (0.5, 0, 0), (0, 0.5, 0), (0, 0, 1.0), shape)
    hu = np.broadcast_to(np.float32(500.0), shape)  # a CT of one value, without 300 MB
    s = summarise_calcium(mask, hu, grid, plane_side((0, 0, 0), (1, 0, 0)))
    assert s.n_pieces == 2 and s.total_voxels == 4 * 5 * 6 + 10 * 3 * 2
    assert len(pickle.dumps(s)) < 12_000


def test_shape_mismatch_and_bad_side_functions_raise(grid, side_of, blank):
    mask, hu = blank
    with pytest.raises(ValueError, match="grid's shape"):
        summarise_calcium(mask[:5], hu, grid, side_of)
    mask[0, 0, 0] = 1
    with pytest.raises(ValueError, match="one signed distance"):
        summarise_calcium(mask, hu, grid, lambda p: np.zeros((len(p), 1)))
    with pytest.raises(ValueError, match="non-finite"):
        summarise_calcium(mask, hu, grid, lambda p: np.full(len(p), np.nan))
    with pytest.raises(ValueError, match="zero length"):
        plane_side((0, 0, 0), (0, 0, 0))
