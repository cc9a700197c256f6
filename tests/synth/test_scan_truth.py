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
