"""The ground truth of a gantry-tilted acquisition covers only what the scanner imaged."""

from __future__ import annotations

import numpy as np

from cohort.geometry import Grid
from cohort.read.resample import AIR_HU, correct_tilt
from cohort.synth.scan import observed_rows


def _tilted(deg: float, shape=(20, 32, 8)) -> Grid:
    t = np.radians(deg)
    return Grid((0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (0.0, 0.5 * np.cos(t), 0.5 * np.sin(t)),
                (0.0, 0.0, 2.0), shape)


def test_observed_rows_are_where_the_tilt_correction_is_not_air():
    """The reader fills the axial grid from the sheared stack and leaves air where no
    acquired slice reaches; a plaque there was never imaged, so the truth must not hold it
    (a model would be scored against calcium nobody could see)."""
    grid = _tilted(20.0)
    image = np.full(grid.shape, 40.0, dtype=np.float32)
    corrected, axial = correct_tilt(image, grid)
    seen = observed_rows(grid, axial)
    air = (corrected == AIR_HU).all(axis=2)
    assert air.any() and seen.any()
    np.testing.assert_array_equal(seen, ~air)


def test_an_axial_grid_sees_everything():
    grid = _tilted(0.0)
    assert observed_rows(grid, grid.axial_equivalent()).all()


def test_a_tilted_stepped_stack_is_seen_as_the_regular_grid_the_reader_builds():
    """Two blocks (thin below, thick above) are resampled by the reader onto one regular
    sheared grid at the thin spacing, then tilt corrected: the truth's imaged rows are
    those of that grid, not of the axial grid (all rows), nor of one block."""
    from cohort.synth.scan import stepped_regular_grid, stepped_truth_grid

    lower = _tilted(20.0, shape=(10, 32, 8))
    t = np.radians(20.0)
    upper = Grid((0.0, 0.0, 9 * 2.0 + (2.0 + 5.0) / 2), (0.5, 0.0, 0.0),
                 (0.0, 0.5 * np.cos(t), 0.5 * np.sin(t)), (0.0, 0.0, 5.0), (6, 32, 8))
    regular = stepped_regular_grid([lower, upper])
    assert regular.slice_step == lower.slice_step and regular.tilt_deg > 1
    assert regular.shape[0] == int((upper.origin[2] + 5 * 5.0) // 2.0) + 1
    axial = stepped_truth_grid([lower, upper])
    image = np.full(regular.shape, 40.0, dtype=np.float32)
    corrected, reader_axial = correct_tilt(image, regular)
    assert reader_axial.shape == axial.shape
    seen = observed_rows(regular, axial)
    np.testing.assert_array_equal(seen, ~(corrected == AIR_HU).all(axis=2))
    assert not seen.all() and seen.sum() > observed_rows(lower, axial).sum()
