"""Geometry of a stack of slices, from every slice's ImagePositionPatient and
ImageOrientationPatient (never from a reader's single spacing).

`check_stack` sorts slices along the plane normal, removes duplicate positions, measures
the step, gaps, unevenness and gantry tilt, and returns the regular grid the stack belongs
on, together with the fractional grid index of every kept slice (which a resampler uses to
fill gaps and even out spacing). Problems it cannot correct raise `SeriesError`.

Variable-thickness stacks: a sequential head protocol is often acquired as contiguous
*blocks*, e.g. 14 slices 4 mm thick through the posterior fossa, then 14 slices 7 mm thick
through the cerebrum. Within a block the slices are regular and, along the slice normal,
one thickness apart (with gantry tilt the step in z is thickness / cos(tilt)). Such a stack
has no holes even though its median step makes every thick slice look like "missing"
ones: `spacing_blocks` recognises it from every slice's SliceThickness, and the grid it
belongs on has the finest block's spacing (`StackGeometry.blocks` records each block).
A stack whose thickness changes but whose slices do not touch (a hole at a junction, or
slices further apart than they are thick) is not a block stack: it is checked for missing
slices like any other.
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
    #: a step along the normal above this many slice thicknesses leaves part of the head
    #: unsampled (e.g. 2.5 mm steps of 1.25 mm slices: every second slice missing): flagged
    sparse_ratio: float = 1.5
    #: a block is contiguous when its step along the normal is at most its SliceThickness
    #: times (1 + this); at a junction the step may be (t1 + t2) / 2 times (1 + this)
    block_contiguity_tol: float = 0.1


@dataclass(frozen=True)
class SliceGeometry:
    """What one slice's header says about where it is."""

    position: tuple[float, float, float]  # ImagePositionPatient
    orientation: tuple[float, float, float, float, float, float]  # ImageOrientationPatient
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]  # (between rows, between columns), as in DICOM
    thickness: float | None = None  # SliceThickness, mm (None: not in the header)


@dataclass(frozen=True)
class SpacingBlock:
    """One regular block of a variable-thickness stack (positions along the normal, mm)."""

    first_slice: int  # index of its first slice among the kept slices (feet to head)
    n_slices: int
    first_z_mm: float  # world z of its first and last slice positions
    last_z_mm: float
    spacing_mm: float  # step between its slices along the slice normal
    thickness_mm: float  # SliceThickness of its slices

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("first_slice", "n_slices", "first_z_mm",
                                              "last_z_mm", "spacing_mm", "thickness_mm")}

    def describe(self) -> str:
        return (f"{self.n_slices} x {self.thickness_mm:g} mm every {self.spacing_mm:.3g} mm "
                f"(z {self.first_z_mm:.1f} to {self.last_z_mm:.1f})")


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
    #: contiguous blocks of different thickness (empty for a single-thickness stack); the
    #: grid then has the finest block's spacing
    blocks: tuple[SpacingBlock, ...] = ()
    #: why the stack samples only part of the depth (step >> thickness), or None
    sparse: str | None = None

    @property
    def variable_spacing(self) -> bool:
        return len(self.blocks) > 1

    @property
    def regular(self) -> bool:
        """True when every grid slice is an input slice at an integer position."""
        return self.missing_slices == 0 and not self.uneven and not self.variable_spacing

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
    thickness = [slices[i].thickness for i in order]
    blocks = spacing_blocks(d_sorted, thickness, pos[order, 2], rules, series=series)
    if blocks:
        nominal = min(b.spacing_mm for b in blocks)
        idx = (d_sorted - d_sorted[0]) / nominal
        # the grid stops at the last whole step below the top slice (nothing is invented)
        n_grid = int(np.floor(idx[-1] + rules.uneven_tol)) + 1
        missing, gap_max, gap_mm = _block_gaps(steps, blocks)
        uneven = False
        hint = "; the stack is " + " then ".join(b.describe() for b in blocks)
    else:
        nominal = float(np.median(steps))
        idx = (d_sorted - d_sorted[0]) / nominal
        n_grid = int(round(idx[-1])) + 1
        gaps = np.rint(steps / nominal).astype(int) - 1
        missing, gap_max, gap_mm = n_grid - len(order), int(gaps.max(initial=0)), nominal
        uneven = bool(np.abs(idx - np.rint(idx)).max() > rules.uneven_tol)
        hint = _thickness_hint(thickness, steps)
    if missing > rules.max_missing_fraction * n_grid or gap_max > rules.max_gap_slices:
        raise SeriesError(ErrorCode.MISSING_SLICES,
                          f"{missing} slices missing of {n_grid} (largest gap "
                          f"{gap_max} slices of {gap_mm:.3g} mm)" + hint, series=series)
    # stacking direction: from the first to the last slice, scaled to one grid step
    along = pos[order[-1]] - pos[order[0]]
    stack_step = along * nominal / float(along @ normal)
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
    if blocks:
        notes.append("variable slice spacing, contiguous blocks: "
                     + "; ".join(b.describe() for b in blocks)
                     + f"; read on a regular grid of {nominal:.3g} mm along the slice normal")
    if tilt:
        notes.append(f"gantry tilt {tilt:.2f} deg measured from positions")
    sparse = None if blocks else sparse_sampling(len(order), nominal, thickness, rules)
    if sparse:
        notes.append(sparse)
    return StackGeometry(grid, tuple(int(i) for i in order), tuple(float(v) for v in idx),
                         duplicates, int(missing), uneven, tilt, nominal, tuple(notes),
                         tuple(blocks or ()), sparse)


def sparse_sampling(n_slices: int, step_mm: float, thickness: list[float | None],
                    rules: StackRules = StackRules()) -> str | None:
    """A note when slices lie further apart along the normal than ``rules.sparse_ratio``
    times their thickness (the gaps between them were never imaged), else None."""
    known = [t for t in thickness if t]
    if not known:
        return None
    t = float(np.median(known))
    if step_mm <= rules.sparse_ratio * t:
        return None
    unsampled = 1 - t / step_mm
    return (f"sparse_slices: {n_slices} slices {step_mm:.3g} mm apart, {t:.3g} mm thick: "
            f"{unsampled:.0%} of the depth is not sampled (slices missing from the archive, "
            "e.g. every second one, or a sparse protocol)")


def spacing_blocks(d: np.ndarray, thickness: list[float | None], z: np.ndarray,
                   rules: StackRules = StackRules(), *, series: str | None = None
                   ) -> list[SpacingBlock] | None:
    """The contiguous blocks of a variable-thickness stack, or None when it is not one.

    Args:
        d: positions of the kept slices along the slice normal, ascending (mm).
        thickness: SliceThickness of each of those slices (None where absent).
        z: world z of each slice position, for the record.

    A block stack has at least two runs of slices of one thickness each, every run of at
    least two slices; within a run, steps along the normal are whole multiples of the
    run's spacing (a multiple > 1 is a missing slice, counted by the caller), and that
    spacing is at most the thickness (times 1 + ``rules.block_contiguity_tol``): the slices
    touch. Between runs the step is at most the mean of the two thicknesses (same
    tolerance).

    Raises:
        SeriesError: MISSING_SLICES when the thickness changes in runs but the slices do not
            touch at a junction (a hole between blocks), naming where.
    """
    if len(d) < 4 or any(t is None or not t > 0 for t in thickness):
        return None
    t = np.asarray(thickness, dtype=float)
    change = np.flatnonzero(np.abs(np.diff(t)) > 0.01 * np.maximum(t[:-1], t[1:])) + 1
    if len(change) == 0:
        return None
    bounds = [0, *change.tolist(), len(t)]
    if min(b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)) < 2:
        return None  # a lone slice of another thickness: not a block protocol
    tol = rules.block_contiguity_tol
    blocks = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        steps = np.diff(d[a:b])
        spacing = float(np.min(steps))
        multiples = steps / spacing
        if np.abs(multiples - np.rint(multiples)).max() > rules.uneven_tol:
            return None  # not regular within the run
        spacing = float(np.median(steps[np.rint(multiples) == 1]))
        thick = float(np.median(t[a:b]))
        if spacing > thick * (1 + tol):
            return None  # slices further apart than they are thick: not contiguous
        blocks.append(SpacingBlock(a, b - a, float(z[a]), float(z[b - 1]), spacing, thick))
    for left, right in zip(blocks[:-1], blocks[1:], strict=True):
        last, first = right.first_slice - 1, right.first_slice
        step = float(d[first] - d[last])
        touching = (left.thickness_mm + right.thickness_mm) / 2
        if step > touching * (1 + tol):
            raise SeriesError(
                ErrorCode.MISSING_SLICES,
                f"the slice thickness changes from {left.thickness_mm:g} to "
                f"{right.thickness_mm:g} mm between z {z[last]:.1f} and {z[first]:.1f}, "
                f"{step:.3g} mm apart along the slice normal where {touching:.3g} mm would "
                f"make them touch: {step - touching:.3g} mm of the head is not covered",
                series=series)
    return blocks


def _block_gaps(steps: np.ndarray, blocks: list[SpacingBlock]) -> tuple[int, int, float]:
    """(missing slices in all blocks, largest gap in its block's slices, that block's
    spacing) of a block stack."""
    missing, largest, spacing = 0, 0, blocks[0].spacing_mm
    for b in blocks:
        inner = steps[b.first_slice:b.first_slice + b.n_slices - 1]
        gaps = np.rint(inner / b.spacing_mm).astype(int) - 1
        missing += int(gaps.sum())
        if gaps.max(initial=0) > largest:
            largest, spacing = int(gaps.max()), b.spacing_mm
    return missing, largest, spacing


def _thickness_hint(thickness: list[float | None], steps: np.ndarray) -> str:
    """Why the check may have gone wrong, when the stack mixes slice thicknesses."""
    known = sorted({round(t, 3) for t in thickness if t})
    if len(known) < 2:
        return ""
    return (f"; the stack mixes slice thicknesses {', '.join(f'{t:g}' for t in known)} mm "
            f"with steps of {np.min(steps):.3g} to {np.max(steps):.3g} mm, but not as "
            "contiguous blocks (each block's step = its thickness)")


def signed_tilt_deg(geometry: StackGeometry) -> float:
    """The measured tilt with cohort's sign (`cohort.geometry`: negative when the front edge
    of each slice lies higher than its back edge); 0 below the tilt tolerance."""
    if geometry.tilt_deg == 0:
        return 0.0
    return float(np.sign(geometry.grid.signed_tilt_deg)) * geometry.tilt_deg
