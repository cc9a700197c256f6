"""A small hand-made scan: 10 slices of 6 x 8 voxels, midline between columns 3 and 4.

World x of column i is i - 3.5 mm (columns 0-3 right, 4-7 left); voxels are 1 x 1 x 2 mm
(slices 2 mm apart), so a voxel is 2 mm^3.
"""

from __future__ import annotations

import numpy as np
import pytest

from cohort.anatomy import LANDMARKS
from cohort.geometry import Grid
from cohort.quantify import plane_side

SHAPE = (10, 6, 8)  # (slices, rows, columns)
RIGHT_COLUMN, LEFT_COLUMN = 1, 6  # one column well inside each side


@pytest.fixture
def grid() -> Grid:
    return Grid((-3.5, 0.0, 100.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 2.0), SHAPE)


@pytest.fixture
def side_of():
    return plane_side((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))


@pytest.fixture
def landmarks() -> dict[str, int]:
    """Right: cc 2, pl 4, ac 6; left: cc 3, pl 5, ac 7."""
    return dict(zip(LANDMARKS, (2, 4, 6, 3, 5, 7), strict=True))


def empty() -> tuple[np.ndarray, np.ndarray]:
    """A mask without calcium and a CT of 40 HU everywhere."""
    return np.zeros(SHAPE, dtype=np.uint8), np.full(SHAPE, 40.0, dtype=np.float32)


@pytest.fixture
def blank():
    return empty()
