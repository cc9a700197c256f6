"""One synthetic CT scan of a subject: placement in the scanner, field of view, voxel grid,
rendered CT numbers, and its ground truth (landmark slices, calcium mask, segment labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cohort.anatomy import (
    CALCIUM_HU,
    LANDMARK_KINDS,
    SEGMENTS,
    SIDES,
    segment_label,
    segment_of_slices,
)
from cohort.geometry import Grid
from cohort.read.stack import StackRules
from cohort.synth.acquisition import Protocol, add_kernel_and_noise
from cohort.synth.artefacts import StreakModel, add_motion, streak_error
from cohort.synth.phantom import Phantom
from cohort.synth.render import (
    Occupancy,
    Placement,
    paint_plaques,
    plaque_occupancy,
    render_anatomy,
)
from cohort.synth.solids import rotation
from cohort.synth.subject import Pose

#: the annotation rule: a voxel is calcium when the plaque in it makes it read >= 130 HU on
#: the noise-free native grid over soft tissue (45 HU), i.e. when the plaque fills at least
#: (130 - 45) / (plaque HU - 45) of it. Dense plaques bloom by up to a voxel; faint ones
#: (just above 130 HU) vanish where partial volume on thick slices dilutes them.
SOFT_TISSUE_HU = 45.0


def calcium_voxels(fraction: np.ndarray, plaque_hu: float) -> np.ndarray:
    """The voxels of a plaque's occupancy ``fraction`` that the annotation rule keeps."""
    if plaque_hu <= CALCIUM_HU:
        return np.zeros(fraction.shape, dtype=bool)
    return SOFT_TISSUE_HU + fraction * (plaque_hu - SOFT_TISSUE_HU) >= CALCIUM_HU


@dataclass(frozen=True)
class Coverage:
    """Head-frame heights of the bottom and top of the scanned range (mm)."""

    bottom: float
    top_margin: float  # above the vertex
    neck_cut: bool


def sample_coverage(rng: np.random.Generator, phantom: Phantom, neck_cut_p: float) -> Coverage:
    lowest_cc = min(phantom.subject.side(s).z_carotid_canal for s in SIDES)
    if rng.random() < neck_cut_p:  # the field of view stops just below the skull base
        return Coverage(lowest_cc - float(rng.uniform(9.0, 22.0)), float(rng.uniform(1, 14)), True)
    return Coverage(float(rng.uniform(-100.0, -62.0)), float(rng.uniform(1.0, 14.0)), False)


def placement_of(pose: Pose, table_z: float) -> Placement:
    """Pose -> rotation and translation; the vault centre sits near the centre of the FOV."""
    r = rotation(pose.yaw_deg, pose.pitch_deg, pose.roll_deg)
    sx, sy, _ = pose.shift_mm
    return Placement(r, np.array([sx, sy - 12.0, table_z]))


def acquisition_grid(phantom: Phantom, placement: Placement, coverage: Coverage,
                     p: Protocol) -> Grid:
    """The scanner's voxel grid: axial (or gantry-tilted) slices covering the head."""
    v = phantom.vault
    # world heights of the scanned range, from head-frame extremes under the placement
    c = np.asarray(v.center)
    top = max(placement.to_world(c + np.array(d) * np.asarray(v.radii))[2]
              for d in [(0, 0, 1), (0.3, 0, 0.95), (-0.3, 0, 0.95), (0, 0.3, 0.95),
                        (0, -0.3, 0.95)]) + coverage.top_margin
    bottom = placement.to_world(np.array([0.0, 12.0, coverage.bottom]))[2]
    dz = p.slice_thickness_mm
    nk = int(np.ceil((top - bottom) / dz)) + 1
    px, n = p.pixel_spacing_mm, p.matrix
    t = np.radians(p.tilt_deg)
    col = np.array([px, 0.0, 0.0])
    # sign as scanners write it: GantryDetectorTilt < 0 <-> column direction z < 0 (Philips)
    row = px * np.array([0.0, np.cos(t), np.sin(t)])
    fov_center = np.array([0.0, 0.0])
    origin = np.array([fov_center[0] - px * (n - 1) / 2,
                       fov_center[1] - px * np.cos(t) * (n - 1) / 2, bottom])
    # a tilted plane through the isocentre row: shift so that the centre row sits at `bottom`
    origin[2] -= px * np.sin(t) * (n - 1) / 2
    return Grid(tuple(origin), tuple(col), tuple(row), (0.0, 0.0, dz), (nk, n, n))


def stepped_grids(phantom: Phantom, placement: Placement, coverage: Coverage,
                  p: Protocol) -> list[Grid]:
    """The two contiguous blocks of a stepped (sequential) head protocol, feet to head.

    As on scanners, the slices of a block lie one thickness apart along the (tilted) slice
    normal, so thickness / cos(tilt) apart in z, and the blocks touch: the first upper slice
    sits half of each thickness above the last lower one. The blocks meet at a height drawn
    around the skull base (`Protocol.block_split` of the range from 10 mm below the lower
    carotid canal to 35 mm above the higher clinoid), so that landmarks fall in either block.
    """
    base = acquisition_grid(phantom, placement, coverage, p)
    cos_t = float(np.cos(np.radians(p.tilt_deg)))
    lower, upper = p.slice_thickness_mm / cos_t, p.upper_thickness_mm / cos_t
    nj, ni = base.shape[1:]
    centre_shift = float(base.world((ni - 1) / 2, (nj - 1) / 2, 0)[2] - base.origin[2])
    z_bottom = base.origin[2] + centre_shift
    z_top = z_bottom + (base.shape[0] - 1) * base.slice_step[2]
    heights = [float(placement.to_world(phantom.landmark_point(s, k))[2])
               for s in SIDES for k in ("carotid_canal", "anterior_clinoid")]
    lo, hi = min(heights) - 10.0, max(heights) + 35.0
    junction = lo + float(p.block_split) * (hi - lo)
    n1 = max(2, int(np.ceil((junction - z_bottom) / lower)))
    first_upper = (n1 - 1) * lower + (lower + upper) / 2  # above the lowest slice
    n2 = max(2, int(np.ceil((z_top - z_bottom - first_upper) / upper)) + 1)
    o = np.asarray(base.origin, dtype=float)
    return [Grid(tuple(o), base.col_step, base.row_step, (0.0, 0.0, lower), (n1, nj, ni)),
            Grid(tuple(o + [0.0, 0.0, first_upper]), base.col_step, base.row_step,
                 (0.0, 0.0, upper), (n2, nj, ni))]


def stepped_regular_grid(blocks: list[Grid]) -> Grid:
    """The regular grid the reader resamples a stepped stack to, in the stack's own (maybe
    tilted) frame: the lower (finest) block's spacing from its first slice, up to the last
    whole step below the top slice (`cohort.read.stack.check_stack`)."""
    first, last = blocks[0], blocks[-1]
    step = first.slice_step[2]
    extent = last.origin[2] + (last.shape[0] - 1) * last.slice_step[2] - first.origin[2]
    nk = int(np.floor(extent / step + StackRules().uneven_tol)) + 1
    return Grid(first.origin, first.col_step, first.row_step, first.slice_step,
                (nk, *first.shape[1:]))


def stepped_truth_grid(blocks: list[Grid]) -> Grid:
    """The regular axial grid the reader puts a stepped stack on (`stepped_regular_grid`,
    tilt corrected)."""
    return stepped_regular_grid(blocks).axial_equivalent()


def native_centres(blocks: list[Grid], thicknesses_mm: list[float], tilt_deg: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """World z at the image centre, and height along z, of every acquired slice."""
    cos_t = float(np.cos(np.radians(tilt_deg)))
    z, h = [], []
    for g, t in zip(blocks, thicknesses_mm, strict=True):
        nj, ni = g.shape[1:]
        z.append(g.world((ni - 1) / 2, (nj - 1) / 2, np.arange(g.shape[0]))[:, 2])
        h.append(np.full(g.shape[0], t / cos_t))
    return np.concatenate(z), np.concatenate(h)


def subsamples(thickness_mm: float) -> int:
    """Sub-planes per slice for through-plane partial volume (about one per 1.25 mm)."""
    return max(1, int(round(thickness_mm / 1.25)))


@dataclass
class ScanTruth:
    """Ground truth of one scan on its reference (axial) grid."""

    grid: Grid
    landmark_slices: dict[str, int]  # e.g. "left_petrolingual" -> slice index
    landmark_z_mm: dict[str, float]
    mask: np.ndarray  # uint8 [k, j, i]
    labels: np.ndarray  # uint8 [k, j, i], codes of cohort.anatomy.SEGMENT_LABELS
    segment_volumes_mm3: dict[str, float]
    segment_voxels: dict[str, int]
    plaques_in_scan: int


def landmark_truth(phantom: Phantom, placement: Placement, grid: Grid):
    """Slice index and world z of each landmark on an axial grid."""
    z0, dz = grid.origin[2], grid.slice_step[2]
    slices, zs = {}, {}
    for side in SIDES:
        for kind in LANDMARK_KINDS:
            z = float(placement.to_world(phantom.landmark_point(side, kind))[2])
            slices[f"{side}_{kind}"] = int(np.rint((z - z0) / dz))
            zs[f"{side}_{kind}"] = z
    return slices, zs


def observed_rows(acquired: Grid, axial: Grid) -> np.ndarray:
    """(slices, rows) of the ``axial`` grid a reader's tilt correction can fill from the
    ``acquired`` (tilted) stack: its source point lies between the first and last acquired
    slice. Elsewhere the corrected volume is air (`cohort.read.resample`), and calcium
    there was never imaged."""
    kk, jj = np.meshgrid(np.arange(axial.shape[0], dtype=float),
                         np.arange(axial.shape[1], dtype=float), indexing="ij")
    k_src = acquired.index(axial.world(np.zeros_like(jj), jj, kk))[..., 2]
    return (k_src >= -1e-6) & (k_src <= acquired.shape[0] - 1 + 1e-6)


def scan_truth(phantom: Phantom, placement: Placement, grid: Grid, n_sub: int,
               occupancies: list[Occupancy | None] | None = None,
               acquired: Grid | None = None) -> ScanTruth:
    """Landmarks, calcium mask and segment labels on ``grid`` (must be axial); with the
    ``acquired`` grid of a tilted stack, only calcium in the part it imaged
    (`observed_rows`)."""
    assert grid.tilt_deg < 1e-6, "ground truth lives on an axial grid"
    seen = None
    if acquired is not None and acquired.tilt_deg >= 1e-6:
        seen = observed_rows(acquired, grid)
    slices, zs = landmark_truth(phantom, placement, grid)
    if occupancies is None:
        occupancies = plaque_occupancy(phantom.plaques, placement, grid, n_sub=n_sub,
                                       fields=phantom.fields)
    mask = np.zeros(grid.shape, dtype=np.uint8)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    seg_of = {}
    k_all = np.arange(grid.shape[0])
    for side in SIDES:
        lm = [slices[f"{side}_{k}"] for k in LANDMARK_KINDS]
        seg_of[side] = segment_label(side, segment_of_slices(k_all, *lm))
    found = set()
    for plaque, side, owner, occ in zip(phantom.plaques, phantom.plaque_sides,
                                        phantom.plaque_of_piece, occupancies, strict=True):
        if occ is None:
            continue
        sel = calcium_voxels(occ.fraction, plaque.hu)
        if seen is not None:
            sel &= seen[occ.window[0], occ.window[1]][:, :, None]
        if not sel.any():
            continue
        found.add(owner)
        m = mask[occ.window]
        m[sel] = 1
        lab = labels[occ.window]
        ks = np.arange(occ.window[0].start, occ.window[0].stop)
        lab[sel] = np.broadcast_to(seg_of[side][ks][:, None, None], sel.shape)[sel]
    voxel = float(np.prod(grid.spacing))
    counts = np.zeros(len(SEGMENTS) + 1, dtype=np.int64)
    covered = np.zeros(grid.shape[0], dtype=bool)  # slices that may hold calcium
    for occ in occupancies:
        if occ is not None:
            covered[occ.window[0]] = True
    for k in np.flatnonzero(covered):
        counts += np.bincount(labels[k].ravel(), minlength=len(counts))
    volumes = {name: float(counts[i + 1]) * voxel for i, name in enumerate(SEGMENTS)}
    voxels = {name: int(counts[i + 1]) for i, name in enumerate(SEGMENTS)}
    return ScanTruth(grid, slices, zs, mask, labels, volumes, voxels, len(found))


@dataclass(frozen=True)
class ScanArtefacts:
    """What the scanner adds to one acquisition, besides noise."""

    streak_k_hu: float = 0.0  # beam hardening (HU per (bone cm)^2; 0: none)
    holder: bool = False  # a head holder behind the head
    #: motion: where (0..1 of the way up the scan), over how many mm, shifted by (rows,
    #: columns) mm, and the moved share
    motion: tuple[float, float, float, float, float] | None = None

    def names(self) -> list[str]:
        out = []
        if self.streak_k_hu > 0:
            out.append("beam_hardening")
        if self.holder:
            out.append("head_holder")
        if self.motion is not None:
            out.append("motion")
        return out


def sample_artefacts(rng: np.random.Generator, p: Protocol, *, holder_p: float,
                     motion_p: float) -> ScanArtefacts:
    """Beam hardening always (stronger at low kVp), a head holder and motion sometimes."""
    k = float(StreakModel().k_hu * (120.0 / p.kvp) ** 2 * rng.uniform(0.7, 1.3))
    holder = bool(rng.random() < holder_p)
    draw = (float(rng.uniform(0.1, 0.9)), float(rng.uniform(3.0, 12.0)),
            float(rng.uniform(-3, 3)), float(rng.uniform(-3, 3)), float(rng.uniform(0.25, 0.5)))
    return ScanArtefacts(k, holder, draw if rng.random() < motion_p else None)


@dataclass(frozen=True)
class HeadHolder:
    """A carbon-fibre head holder, fixed to the table: the back of an elliptic trough along
    the scanner's z, in world coordinates (mm). Rigid, so not moved by the subject's warp."""

    center_xy: tuple[float, float]
    radii_xy: tuple[float, float]  # to the middle of its wall
    thickness: float
    back_y: float  # only the part behind this y (LPS: posterior is +y) is there
    top_z: float
    hu: float = 180.0


def head_holder(phantom: Phantom, placement: Placement) -> HeadHolder:
    """The holder under the back of this head, 6-10 mm from the scalp where the head rests
    on foam (air, here: below the head's -300 HU)."""
    v = phantom.vault
    c_world = placement.to_world(np.asarray(v.center))
    # the head's outline in the table plane, around the vault centre
    g = np.random.default_rng(0).standard_normal((600, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    skin = placement.to_world(np.asarray(v.center) + g * np.asarray(v.radii)) - c_world
    ru, rv = v.radii[0], v.radii[1]
    scale = float(np.sqrt((skin[:, 0] / ru) ** 2 + (skin[:, 1] / rv) ** 2).max())
    gap = 8.0 + phantom.fields.warp_bound_mm
    return HeadHolder(center_xy=(float(c_world[0]), float(c_world[1])),
                      radii_xy=(scale * ru + gap + 2.0, scale * rv + gap + 2.0), thickness=4.0,
                      back_y=float(c_world[1] + 0.3 * rv), top_z=float(c_world[2] + 35.0))


def paint_holder(hu: np.ndarray, grid: Grid, holder: HeadHolder) -> None:
    """Draw the holder into a volume on ``grid``, in place. Every slice of a scanner grid
    sees the same (x, y) at a pixel (slices step along z), so its cross-section is computed
    once; the top is checked per pixel (a tilted slice's rows climb in z)."""
    nk, nj, ni = hu.shape
    j, i = np.mgrid[0:nj, 0:ni].astype(np.float64)
    o = np.asarray(grid.origin, float)
    col, row = np.asarray(grid.col_step, float), np.asarray(grid.row_step, float)
    x = o[0] + i * col[0] + j * row[0]
    y = o[1] + i * col[1] + j * row[1]
    (cx, cy), (rx, ry) = holder.center_xy, holder.radii_xy
    rho = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    d = np.maximum(np.abs((rho - 1.0) * min(rx, ry)) - holder.thickness / 2, holder.back_y - y)
    occ = np.clip(0.5 - d / float(min(grid.spacing[:2])), 0.0, 1.0).astype(np.float32)
    if not occ.any():
        return
    z0 = o[2] + i * col[2] + j * row[2]  # pixel z on slice 0
    dz = float(np.asarray(grid.slice_step, float)[2])
    for k in range(nk):
        a = np.where(z0 + k * dz <= holder.top_z, occ, np.float32(0.0))
        hu[k] += a * (np.float32(holder.hu) - hu[k])


def render_scan(phantom: Phantom, placement: Placement, grid: Grid, p: Protocol,
                render_scale: int, artefacts: ScanArtefacts = ScanArtefacts()):
    """Noise-free CT numbers (with calcium and the scanner's artefacts) and the plaque
    occupancies on ``grid``."""
    n_sub = subsamples(p.slice_thickness_mm)
    scale = 1 if p.matrix <= 256 else render_scale
    hu = render_anatomy(phantom, placement, grid, scale=scale, n_sub=n_sub)
    if artefacts.holder:
        paint_holder(hu, grid, head_holder(phantom, placement))
    occ = plaque_occupancy(phantom.plaques, placement, grid, n_sub=n_sub, fields=phantom.fields)
    paint_plaques(hu, phantom.plaques, occ)
    if artefacts.streak_k_hu > 0:
        _streaks(hu, phantom, placement, grid, artefacts.streak_k_hu)
    if artefacts.motion is not None:
        where, extent, dy, dx, weight = artefacts.motion
        dz = float(grid.spacing[2])
        add_motion(hu, int(where * grid.shape[0]), max(1, int(round(extent / dz))),
                   (dy / grid.spacing[1], dx / grid.spacing[0]), weight)
    return hu, occ


#: beam hardening fades out over this height (mm) above the skull base
TAPER_MM = 15.0


def _streaks(hu: np.ndarray, phantom: Phantom, placement: Placement, grid: Grid,
             k_hu: float) -> None:
    """Beam hardening on the slices through the skull base and the teeth (below 25 mm above
    the higher clinoid), each slice on its own, as a scanner reconstructs them (interpolating
    between slices would fade the streaks' rings in between and stripe a reformat)."""
    top = max(float(placement.to_world(phantom.landmark_point(s, "anterior_clinoid"))[2])
              for s in SIDES) + 25.0
    nk, nj, ni = hu.shape
    centres = grid.world((ni - 1) / 2, (nj - 1) / 2, np.arange(nk))[:, 2]
    below = np.flatnonzero(centres <= top + TAPER_MM)
    if below.size == 0:
        return
    k1 = int(below[-1]) + 1
    err = streak_error(hu[:k1], float(grid.spacing[0]), StreakModel(k_hu=k_hu, min_error_hu=0.0))
    # fade out over TAPER_MM above the skull base: no step between neighbouring slices
    fade = np.clip((top + TAPER_MM - centres[:k1]) / TAPER_MM, 0.0, 1.0).astype(np.float32)
    err *= fade[:, None, None]
    err[hu[:k1] <= -500.0] = 0.0  # air outside the head stays air
    hu[:k1] += err


def finish_image(clean_hu: np.ndarray, p: Protocol, rng: np.random.Generator) -> np.ndarray:
    """Kernel sharpness and noise on a copy of the noise-free image."""
    return add_kernel_and_noise(clean_hu.copy(), p, rng)
