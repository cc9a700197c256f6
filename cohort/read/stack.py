"""Geometry of a stack of slices, from every slice's ImagePositionPatient and
ImageOrientationPatient (never from a reader's single spacing).

`check_stack` sorts slices along the plane normal, removes duplicate positions, measures
the step, gaps, unevenness and gantry tilt, and returns the regular grid the stack belongs
on, together with the fractional grid index of every kept slice (which a resampler uses to
fill gaps and even out spacing). Problems it cannot correct raise `SeriesError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cohort.errors import ErrorCode, SeriesError
from cohort.geometry import Grid


@dataclass(frozen=True)
class StackRules:
    """Tolerances of the geometry checks (mm and degrees)."""

    min_slices: int = 16  # fewer cannot cover a head at any thickness in use
    orientation_tol: float = 1e-3  # max difference of direction cosines within a stack
    duplicate_tol_mm: float = 0.01  # positions closer than this are the same slice
    uneven_tol: float = 0.05  # relative deviation of a step from the nominal one
    max_missing_fraction: float = 0.1  # missing slices beyond this share fail the series
    max_gap_slices: int = 3  # a single gap of more missing slices fails the series
    max_axial_angle_deg: float = 45.0  # normal further than this from z: not an axial stack
    tilt_tol_deg: float = 0.5  # stacking direction vs normal: below this, no tilt


@dataclass(frozen=True)
class SliceGeometry:
    """What one slice's header says about where it is."""

    position: tuple[float, float, float]  # ImagePositionPatient
    orientation: tuple[float, float, float, float, float, float]  # ImageOrientationPatient
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]  # (between rows, between columns), as in DICOM


@dataclass(frozen=True)
class StackGeometry:
    """The result of `check_stack`."""

    grid: Grid  # regular (possibly sheared) grid of the stack, slice 0 lowest along the normal
    order: tuple[int, ...]  # input indices of the kept slices, in grid order
    slice_index: tuple[float, ...]  # fractional grid index of each kept slice
    duplicates: tuple[int, ...]  # input indices dropped as duplicate positions
    missing_slices: int  # grid slices no input slice fills (gaps)
    uneven: bool  # steps deviate from the nominal step beyond the tolerance
    tilt_deg: float  # gantry tilt measured from the positions (0 when none)
    step_mm: float  # nominal distance between consecutive slice planes, along the normal
    notes: tuple[str, ...] = field(default=())

    @property
    def regular(self) -> bool:
        """True when every grid slice is an input slice at an integer position."""
        return self.missing_slices == 0 and not self.uneven

    @property
    def needs_resampling(self) -> bool:
        return not self.regular or self.tilt_deg > 0


def check_stack(slices: list[SliceGeometry], rules: StackRules = StackRules(), *,
                series: str | None = None) -> StackGeometry:
    """Validate a stack's geometry and describe the regular grid it belongs on.

    Raises:
        SeriesError: MIXED_ORIENTATION, INCONSISTENT_GEOMETRY, NOT_AXIAL, TOO_FEW_SLICES,
            DUPLICATE_SLICES or MISSING_SLICES, naming the series.
    """
    if not slices:
        raise SeriesError(ErrorCode.TOO_FEW_SLICES, "no image slices", series=series)
    iop = np.array([s.orientation for s in slices], dtype=float)
    if np.abs(iop - iop[0]).max() > rules.orientation_tol:
        raise SeriesError(ErrorCode.MIXED_ORIENTATION,
                          "slices have different ImageOrientationPatient; a series must be "
                          "one stack (discovery splits such series by orientation)",
                          series=series)
    shapes = {(s.rows, s.columns) for s in slices}
    spacings = {tuple(round(v, 4) for v in s.pixel_spacing) for s in slices}
    if len(shapes) > 1 or len(spacings) > 1:
        raise SeriesError(ErrorCode.INCONSISTENT_GEOMETRY,
                          f"slices differ in size {sorted(shapes)} or pixel spacing "
                          f"{sorted(spacings)}", series=series)
    row_dir = iop[0, :3] / np.linalg.norm(iop[0, :3])
    col_dir = iop[0, 3:] / np.linalg.norm(iop[0, 3:])
    normal = np.cross(row_dir, col_dir)
    axial_angle = float(np.degrees(np.arccos(min(1.0, abs(normal[2])))))
    if axial_angle > rules.max_axial_angle_deg:
        raise SeriesError(ErrorCode.NOT_AXIAL,
                          f"image planes are {axial_angle:.0f} degrees from axial (coronal, "
                          "sagittal or oblique); cohort analyses axial head CT", series=series)
    if normal[2] < 0:  # sort from feet to head, whatever the orientation's handedness
        normal = -normal
    pos = np.array([s.position for s in slices], dtype=float)
    d = pos @ normal
    order = np.argsort(d, kind="stable")
    d_sorted = d[order]
    keep = np.concatenate([[True], np.diff(d_sorted) > rules.duplicate_tol_mm])
    duplicates = tuple(int(i) for i in order[~keep])
    order = order[keep]
    d_sorted = d_sorted[keep]
    if len(duplicates) > len(order) // 2:
        raise SeriesError(ErrorCode.DUPLICATE_SLICES,
                          f"{len(duplicates)} of {len(slices)} slices repeat a position: two "
                          "acquisitions share this SeriesInstanceUID", series=series)
    if len(order) < rules.min_slices:
        raise SeriesError(ErrorCode.TOO_FEW_SLICES,
                          f"{len(order)} distinct slices, at least {rules.min_slices} needed",
                          series=series)
    steps = np.diff(d_sorted)
    nominal = float(np.median(steps))
    idx = (d_sorted - d_sorted[0]) / nominal
    n_grid = int(round(idx[-1])) + 1
    missing = n_grid - len(order)
    gaps = np.rint(steps / nominal).astype(int) - 1
    if missing > rules.max_missing_fraction * n_grid or gaps.max(initial=0) > rules.max_gap_slices:
        raise SeriesError(ErrorCode.MISSING_SLICES,
                          f"{missing} slices missing of {n_grid} (largest gap "
                          f"{int(gaps.max(initial=0))} slices of {nominal:.3g} mm)",
                          series=series)
    uneven = bool(np.abs(idx - np.rint(idx)).max() > rules.uneven_tol)
    # stacking direction: from the first to the last slice, per grid step
    stack_step = (pos[order[-1]] - pos[order[0]]) / (n_grid - 1)
    cos_t = abs(float(stack_step @ normal)) / float(np.linalg.norm(stack_step))
    tilt = float(np.degrees(np.arccos(min(1.0, cos_t))))
    if tilt < rules.tilt_tol_deg:
        tilt = 0.0
        stack_step = normal * nominal
    ps = slices[0].pixel_spacing
    grid = Grid(tuple(pos[order[0]]), tuple(row_dir * ps[1]), tuple(col_dir * ps[0]),
                tuple(stack_step), (n_grid, slices[0].rows, slices[0].columns))
    notes = []
    if duplicates:
        notes.append(f"{len(duplicates)} duplicate slice(s) dropped")
    if missing:
        notes.append(f"{missing} missing slice(s) interpolated")
    if uneven:
        notes.append("uneven spacing resampled to a regular grid")
    if tilt:
        notes.append(f"gantry tilt {tilt:.2f} deg measured from positions")
    return StackGeometry(grid, tuple(int(i) for i in order), tuple(float(v) for v in idx),
                         duplicates, int(missing), uneven, tilt, nominal, tuple(notes))


def signed_tilt_deg(geometry: StackGeometry) -> float:
    """Tilt with the sign of the shear along the column direction (DICOM convention varies
    by vendor; this is the geometric sign: positive when the stack leans towards +column)."""
    g = geometry.grid
    if geometry.tilt_deg == 0:
        return 0.0
    s = np.asarray(g.slice_step)
    col = np.asarray(g.row_step) / np.linalg.norm(g.row_step)
    return float(np.sign(s @ col) * geometry.tilt_deg)
