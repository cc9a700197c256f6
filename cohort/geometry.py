"""World geometry of voxel grids, in DICOM patient coordinates (LPS, millimetres).

A `Grid` maps voxel indices (i column, j row, k slice) to world points:

    world = origin + i * col_step + j * row_step + k * slice_step

``col_step`` and ``row_step`` are the in-plane steps (ImageOrientationPatient times
PixelSpacing); ``slice_step`` is the step between consecutive ImagePositionPatient values,
which need not be perpendicular to the image plane (gantry tilt shears the stack).
Arrays on a grid are indexed ``[k, j, i]`` (slice, row, column).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A regular, possibly sheared, voxel grid in LPS world coordinates."""

    origin: tuple[float, float, float]
    col_step: tuple[float, float, float]
    row_step: tuple[float, float, float]
    slice_step: tuple[float, float, float]
    shape: tuple[int, int, int]  # (slices, rows, columns)

    @property
    def matrix(self) -> np.ndarray:
        """3x3 matrix whose columns are the world steps along i, j, k."""
        return np.array([self.col_step, self.row_step, self.slice_step], dtype=float).T

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(column, row, slice) step lengths in mm."""
        m = self.matrix
        return tuple(float(v) for v in np.linalg.norm(m, axis=0))

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the image planes (row direction x column direction)."""
        n = np.cross(self.col_step, self.row_step)
        return n / np.linalg.norm(n)

    @property
    def tilt_deg(self) -> float:
        """Angle in degrees between the slice step and the plane normal (0 when not sheared)."""
        s = np.asarray(self.slice_step, dtype=float)
        c = abs(float(s @ self.normal)) / float(np.linalg.norm(s))
        return float(np.degrees(np.arccos(min(1.0, c))))

    def world(self, i, j, k) -> np.ndarray:
        """World points (..., 3) of (possibly fractional) voxel indices."""
        ijk = np.stack(np.broadcast_arrays(i, j, k), axis=-1).astype(float)
        return np.asarray(self.origin) + ijk @ self.matrix.T

    def index(self, points) -> np.ndarray:
        """Fractional voxel indices (..., 3) as (i, j, k) of world points (..., 3)."""
        p = np.asarray(points, dtype=float) - np.asarray(self.origin)
        return p @ np.linalg.inv(self.matrix).T

    def slice_positions(self) -> np.ndarray:
        """ImagePositionPatient of every slice, (slices, 3)."""
        k = np.arange(self.shape[0])
        return np.asarray(self.origin) + k[:, None] * np.asarray(self.slice_step)

    def axial_equivalent(self) -> Grid:
        """The regular axial grid a gantry-tilt correction resamples this grid onto.

        Same shape, column step and slice step (for a tilted stack: the table feed, along
        z); rows become the projection of the tilted row step onto the plane perpendicular
        to the slice step. The centre row of every slice stays where it was (the isocentre
        row, where the head is), so slice k of both grids meets at the image centre.
        A grid without tilt is returned as is.
        """
        if self.tilt_deg < 1e-6:
            return self
        row = np.asarray(self.row_step, dtype=float)
        s = np.asarray(self.slice_step, dtype=float)
        s_unit = s / np.linalg.norm(s)
        row_axial = row - (row @ s_unit) * s_unit
        j_c = (self.shape[1] - 1) / 2
        origin = np.asarray(self.origin, dtype=float) + j_c * (row - row_axial)
        return Grid(tuple(origin), self.col_step, tuple(row_axial), self.slice_step, self.shape)
