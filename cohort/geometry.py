"""World geometry of voxel grids, in DICOM patient coordinates (LPS, millimetres).

A `Grid` maps voxel indices (i column, j row, k slice) to world points:

    world = origin + i * col_step + j * row_step + k * slice_step

``col_step`` and ``row_step`` are the in-plane steps (ImageOrientationPatient times
PixelSpacing); ``slice_step`` is the step between consecutive ImagePositionPatient values,
which need not be perpendicular to the image plane (gantry tilt shears the stack).
Arrays on a grid are indexed ``[k, j, i]`` (slice, row, column).

The sign of gantry tilt, once for all of cohort (`Grid.signed_tilt_deg`): the tilt is the
angle between the stacking direction (the table feed) and the slice normal, and it is
**negative when the front (anterior) edge of every slice lies higher (more superior) than
its back edge**: the top of the gantry leans towards the patient's head, as in the usual
head-CT tilt along the orbitomeatal line that keeps the eye lenses out of the beam. It is
positive when the back edge lies higher. For a head-first supine patient this is the sign
of the DICOM standard's GantryDetectorTilt ("negative degrees are when the top of the
gantry is tilted away from where the table enters the gantry"). It is measured from the
slice positions and orientation, so it does not depend on how the image rows run.
Scanners do not all write the header this way: GE writes the opposite sign, so a GE
header of +18.5 is a measured -18.5 (`GANTRY_TILT_SIGN`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: how manufacturers write GantryDetectorTilt against `Grid.signed_tilt_deg`: +1 the same
#: sign, -1 the opposite one. Keys are lower-case prefixes of the Manufacturer attribute.
#: GE: seen on a real series (header +18.5, front edge up); Philips: the real series in
#: ../shared/realdata/dcm_qa_ct_philips (headers -18.5 and +16.5, measured alike).
GANTRY_TILT_SIGN = {"ge": -1, "philips": 1}


def header_tilt_convention(manufacturer: str | None) -> int | None:
    """+1 / -1 when a manufacturer's GantryDetectorTilt is known to have the same / the
    opposite sign of the measured tilt; None when we do not know its convention."""
    name = (manufacturer or "").strip().lower()
    for prefix, sign in GANTRY_TILT_SIGN.items():
        if name.startswith(prefix):
            return sign
    return None


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

    @property
    def signed_tilt_deg(self) -> float:
        """`tilt_deg` with the sign of this module's docstring: negative when the front
        (anterior, -y) edge of each slice lies higher than its back edge."""
        tilt = self.tilt_deg
        if tilt < 1e-6:
            return 0.0
        # the in-plane direction that points most to the patient's back (+y)
        back = np.array([0.0, 1.0, 0.0]) - self.normal * self.normal[1]
        if np.linalg.norm(back) < 1e-9:  # planes perpendicular to y: no front or back edge
            return tilt
        return float(np.sign(back[2]) or 1.0) * tilt

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


def native_slice_of(z_mm, centres_mm, heights_mm) -> np.ndarray:
    """Index of the acquired slice whose extent along z holds each ``z_mm``.

    Slices are given by their centres (ascending z) and heights along z (the thickness
    through any tilt). Two neighbours meet where their extents touch, shared in proportion
    to their heights: halfway between equal slices, nearer the thin one of a thin and a
    thick slice (so a point 2 mm above a 4 mm slice's centre belongs to the 7 mm slice
    above it when they touch there). Points outside the stack go to the end slices.
    """
    c = np.asarray(centres_mm, dtype=float)
    h = np.asarray(heights_mm, dtype=float)
    if len(c) == 0:
        raise ValueError("no slices")
    bounds = c[:-1] + (c[1:] - c[:-1]) * h[:-1] / (h[:-1] + h[1:])
    return np.searchsorted(bounds, np.asarray(z_mm, dtype=float), side="right")
