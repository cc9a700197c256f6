"""Render a phantom onto a scanner voxel grid: CT numbers with partial-volume effects.

The head frame is placed in the scanner by a pose (rotation R, translation t):
``world = R @ head + t``. Smooth anatomy is evaluated at ``scale`` times the pixel size
(a brain kernel's resolution) and interpolated up; through-plane partial volume comes from
averaging sub-planes across the slice thickness. Every point is moved by the subject's warp
before a solid is evaluated there (`cohort.synth.fields`). Calcified plaques are evaluated
at full resolution, since they are often only a few voxels large.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cohort.geometry import Grid
from cohort.synth.fields import (
    BORDER,
    DIPLOE,
    FLOOR,
    SULCI,
    THICKNESS,
    SubjectFields,
    chunk_fields,
)
from cohort.synth.phantom import (
    CORTICAL,
    CSF,
    DIPLOE_HU,
    FALX,
    FAT,
    GREY,
    MUSCLE,
    Phantom,
    Vault,
)
from cohort.synth.solids import Ellipsoid, Solid, WallPatch

#: the fields the cranium needs per voxel (the floor's are tabulated in a `FloorMap`)
SHELL_CHANNELS = (0, 1, 2, DIPLOE, THICKNESS, SULCI)

AIR_HU = -1000.0


@dataclass(frozen=True)
class Placement:
    """Where the head frame sits in the scanner: world = rotation @ head + translation."""

    rotation: np.ndarray
    translation: np.ndarray

    def to_world(self, head_points: np.ndarray) -> np.ndarray:
        return np.asarray(head_points) @ self.rotation.T + self.translation


def _sub_grid(grid: Grid, scale: int, n_sub: int) -> Grid:
    """Grid of the evaluation points: in-plane step times ``scale``, ``n_sub`` planes a slice."""
    o = np.asarray(grid.origin, float)
    c, r, s = (np.asarray(v, float) for v in (grid.col_step, grid.row_step, grid.slice_step))
    o = o + (scale - 1) / 2 * (c + r) - (n_sub - 1) / (2 * n_sub) * s
    nk, nj, ni = grid.shape
    shape = (nk * n_sub, -(-nj // scale), -(-ni // scale))
    return Grid(tuple(o), tuple(c * scale), tuple(r * scale), tuple(s / n_sub), shape)


class _Evaluator:
    """Head-frame coordinates of any window of a grid, for one placement."""

    def __init__(self, grid: Grid, placement: Placement):
        rt = placement.rotation.T
        self.h0 = rt @ (np.asarray(grid.origin) - placement.translation)
        self.a = rt @ grid.matrix  # columns: head-frame step per i, j, k
        self.a_inv = np.linalg.inv(self.a)
        self.shape = grid.shape

    def window(self, lo: np.ndarray, hi: np.ndarray, k0: int, k1: int):
        """Index ranges (k, j, i slices) of the grid covering a head-frame box, or None."""
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                            for z in (lo[2], hi[2])])
        idx = (corners - self.h0) @ self.a_inv.T  # (8, 3) as i, j, k
        mn = np.floor(idx.min(axis=0)).astype(int) - 1
        mx = np.ceil(idx.max(axis=0)).astype(int) + 2
        nk, nj, ni = self.shape
        i0, i1 = max(mn[0], 0), min(mx[0], ni)
        j0, j1 = max(mn[1], 0), min(mx[1], nj)
        kk0, kk1 = max(mn[2], k0), min(mx[2], k1)
        if i0 >= i1 or j0 >= j1 or kk0 >= kk1:
            return None
        return slice(kk0, kk1), slice(j0, j1), slice(i0, i1)

    def coords(self, win) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ks, js, is_ = win
        k = np.arange(ks.start, ks.stop, dtype=np.float32)[:, None, None]
        j = np.arange(js.start, js.stop, dtype=np.float32)[None, :, None]
        i = np.arange(is_.start, is_.stop, dtype=np.float32)[None, None, :]
        return self.coords_at(k, j, i)

    def coords_at(self, k, j, i) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Head-frame (u, v, w) at index arrays k, j, i (broadcast against each other)."""
        out = []
        for d in range(3):
            a = self.a[d].astype(np.float32)
            out.append((np.float32(self.h0[d]) + a[0] * i + a[1] * j) + a[2] * k)
        return out[0], out[1], out[2]


def _vault_luts(vault: Vault, edge: float, step: float = 0.05):
    """CT number, and the shares of diploe and of scalp fat, as functions of depth under
    the skin, blurred over one edge width."""
    depth_max = max(vault.radii) + 5
    e = np.arange(-2 * edge, depth_max, step)
    bounds = np.cumsum([t for t, _ in vault.layers[:-1]])
    layer = np.searchsorted(bounds, e, side="right")
    values = np.array([hu for _, hu in vault.layers])
    lut = values[layer]
    lut[e < 0] = vault.layers[0][1]
    dip = (layer == vault.diploe_layer).astype(float)
    fat = (values[layer] == FAT).astype(float)
    width = max(1, int(round(edge / step)))
    box = np.ones(width) / width
    out = []
    for table in (lut, dip, fat):
        t = np.convolve(np.pad(table, width, mode="edge"), box, mode="same")[width:-width]
        out.append(t.astype(np.float32))
    return float(e[0]), step, out[0], out[1], out[2]


def _ramp(x: np.ndarray, edge: float) -> np.ndarray:
    """Occupancy of a boundary at signed distance x (positive inside), over one edge."""
    return np.clip(np.float32(0.5) + x / np.float32(edge), 0, 1)


def _paint_vault(vault: Vault, coords, f: np.ndarray, out: np.ndarray, edge: float,
                 luts, floor: FloorMap) -> None:
    """The cranium on a window: ``coords`` its (warped) head-frame points, ``f`` the
    subject's fields there (channels first), ``floor`` its skull base."""
    u, v, w = coords
    e = -Ellipsoid(hu=0.0, center=vault.center, radii=vault.radii).distance(u, v, w)
    e *= vault.reference_radius / min(vault.radii)
    # bone layers thicker or thinner: depth under the skin -> depth in the layer table
    factor = np.maximum(f[THICKNESS] * vault.regional(u, v, w) * vault.skull_factor, 0.35)
    bone = np.float32(vault.bone_mm)
    e_table = e - (factor - 1) / factor * np.clip(e - vault.scalp_mm, 0, factor * bone)
    e0, step, table, dip_share, _ = luts
    idx = np.clip(((e_table - e0) / step).astype(np.int32), 0, len(table) - 1)
    val = table[idx]
    lo, hi = DIPLOE_HU
    val += dip_share[idx] * (np.float32(lo) + np.float32(hi - lo) * f[DIPLOE])
    # sulci: CSF folds into the cortex where the sulcal field is near zero
    csf_end = vault.scalp_mm + bone + vault.csf_mm
    band = _ramp(e_table - csf_end + 0.5, edge) * _ramp(csf_end + 13.0 - e_table, 4.0)
    fold = np.abs(f[SULCI])
    width = np.float32(1.25 * vault.sulcal_width)
    # grey matter lines every sulcus, CSF fills its middle
    val += band * np.clip(1.5 - fold / (3.0 * width), 0, 1) * (np.float32(GREY) - val)
    val += band * np.clip(2.0 - 2.0 * fold / width, 0, 1) * (np.float32(CSF) - val)
    # the temporalis muscle in place of scalp fat over the temporal squama
    val += luts[4][idx] * vault.temporal(u, v, w) * np.float32(MUSCLE - FAT)
    # the interhemispheric fissure above the corpus callosum (deeper towards the poles),
    # with the falx in it
    mid = np.abs(u)
    fissure = (_ramp(e_table - csf_end, edge) * _ramp(w - (28.0 - 0.004 * (v - 8.0) ** 2), 2.0))
    val += fissure * _ramp(np.float32(vault.csf_mm / 2 + 0.4) - mid, edge) * (
        np.float32(CSF) - val)
    val += fissure * _ramp(np.float32(0.4) - mid, edge) * (np.float32(FALX) - val)
    occ = _ramp(e, edge)
    floor_lo, floor_hi = vault.floor_range()
    if w.min() < floor_hi + edge:  # the skull base cuts this window
        fl, scale, plate = floor.lookup(u, v)
        # distance to the floor along its normal, so oblique parts get edges as sharp as flat
        d = (w - fl) * scale
        above = _ramp(d, edge)
        brain = val + (1 - _ramp(d - np.float32(vault.csf_mm), edge)) * (np.float32(CSF) - val)
        c_top = _ramp(d + 1.0, edge)  # cortex 1 mm, diploe, cortex 1 mm, then the neck
        d_top = _ramp(d + plate - 1.0, edge)
        c_bot = _ramp(d + plate, edge)
        diploe = np.float32(lo) + np.float32(hi - lo) * f[DIPLOE]
        cortex = np.float32(CORTICAL - 150)
        plate_hu = ((c_top - above) * cortex + (d_top - c_top) * diploe
                    + (c_bot - d_top) * cortex + (1 - c_bot) * np.float32(MUSCLE))
        inner = above * brain + plate_hu
        c = _ramp(e - vault.scalp_mm, edge)
        val = val + c * (inner - val)
        # below the skull base the cranium's shell (and its scalp) ends: neck and face
        # (painted before the vault) show through
        occ *= _ramp(d + plate + vault.below_base_mm, edge)
    out += occ * (val - out)


@dataclass(frozen=True)
class FloorMap:
    """The skull-base floor of one subject tabulated over (u, v): its height (with the
    subject's floor and border fields), the factor that turns a height difference into a
    distance along its normal, and the plate's thickness. One bilinear lookup per voxel
    instead of three evaluations of the floor."""

    origin: tuple[float, float]
    step: float
    data: np.ndarray  # float32 (3, nv, nu)

    def lookup(self, u: np.ndarray, v: np.ndarray):
        nv, nu = self.data.shape[1:]
        gx = (np.asarray(u, np.float32) - np.float32(self.origin[0])) * np.float32(
            2.0 / (self.step * (nu - 1))) - 1.0
        gy = (np.asarray(v, np.float32) - np.float32(self.origin[1])) * np.float32(
            2.0 / (self.step * (nv - 1))) - 1.0
        grid = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=-1))[None, None]
        out = torch.nn.functional.grid_sample(torch.from_numpy(self.data)[None], grid,
                                              mode="bilinear", padding_mode="border",
                                              align_corners=True)[0, :, 0]
        return tuple(out[c].numpy().reshape(np.shape(u)) for c in range(3))


def floor_map(vault: Vault, fields: SubjectFields, step: float = 0.5) -> FloorMap:
    """Tabulate ``vault``'s floor over its (u, v) extent (`FloorMap`)."""
    lo, hi = vault.bbox()
    u = np.arange(lo[0] - 10.0, hi[0] + 10.0 + step, step)
    v = np.arange(lo[1] - 10.0, hi[1] + 10.0 + step, step)
    uu, vv = np.meshgrid(u, v)  # (nv, nu)
    f = fields.sample(uu, vv, np.full(uu.shape, vault.floor_central, np.float32))
    border = f[BORDER].astype(float)
    height = vault.floor(uu, vv, f[FLOOR].astype(float), border)
    gv, gu = np.gradient(height, step)
    scale = 1.0 / np.sqrt(1.0 + gu * gu + gv * gv)
    plate = vault.plate(uu, vv, border)
    data = np.stack([height, scale, plate]).astype(np.float32)
    return FloorMap((float(u[0]), float(v[0])), step, data)


def head_boxes(fields: SubjectFields, boxes: list[tuple[np.ndarray, np.ndarray]]
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Head-frame boxes holding every point that the warp takes into each template box
    lo..hi: its corners and centre unwarped (all boxes at once), widened for the warp's
    bending in between (its gradient is below 0.15, kept so by `make_fields`; never more
    than twice the largest displacement)."""
    pts = []
    for lo, hi in boxes:
        lo, hi = np.maximum(lo, -1e4), np.minimum(hi, 1e4)
        pts += [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        pts.append((lo + hi) / 2)
    head = fields.unwarp_points(np.asarray(pts), iterations=6).reshape(len(boxes), 9, 3)
    out = []
    for (lo, hi), h in zip(boxes, head, strict=True):
        extent = float(np.max(np.minimum(hi, 1e4) - np.maximum(lo, -1e4)))
        slack = min(1.5 + 0.15 * extent, 2.0 * fields.warp_bound_mm + 1.0)
        out.append((h.min(axis=0) - slack, h.max(axis=0) + slack))
    return out


def render_anatomy(phantom: Phantom, placement: Placement, grid: Grid, *, scale: int = 2,
                   n_sub: int = 1, chunk: int = 24) -> np.ndarray:
    """Noise-free CT numbers (float32, [k, j, i]) of the phantom's anatomy on ``grid``."""
    fine = _sub_grid(grid, scale, n_sub)
    ev = _Evaluator(fine, placement)
    edge = float(min(fine.spacing[:2]))
    luts = _vault_luts(phantom.vault, edge)
    boxes = head_boxes(phantom.fields, [s.bbox() for s in phantom.solids])
    nk, nj, ni = fine.shape
    out = np.full(fine.shape, AIR_HU, dtype=np.float32)
    floor = floor_map(phantom.vault, phantom.fields)
    for k0 in range(0, nk, chunk):
        k1 = min(nk, k0 + chunk)
        wins = [ev.window(lo, hi, k0, k1) for lo, hi in boxes]
        if all(win is None for win in wins):
            continue
        # points and fields only where some solid can be: the union of the windows
        j0 = min(win[1].start for win in wins if win is not None)
        j1 = max(win[1].stop for win in wins if win is not None)
        i0 = min(win[2].start for win in wins if win is not None)
        i1 = max(win[2].stop for win in wins if win is not None)
        u, v, w = ev.coords((slice(k0, k1), slice(j0, j1), slice(i0, i1)))
        f = chunk_fields(phantom.fields,
                         lambda k, j, i, k0=k0, j0=j0, i0=i0: ev.coords_at(k + k0, j + j0, i + i0),
                         (k1 - k0, j1 - j0, i1 - i0), channels=SHELL_CHANNELS)
        u, v, w = u + f[0], v + f[1], w + f[2]
        for solid, win in zip(phantom.solids, wins, strict=True):
            if win is None:
                continue
            local = (slice(win[0].start - k0, win[0].stop - k0),
                     slice(win[1].start - j0, win[1].stop - j0),
                     slice(win[2].start - i0, win[2].stop - i0))
            coords = (u[local], v[local], w[local])
            if isinstance(solid, Vault):
                _paint_vault(solid, coords, f[(slice(None), *local)], out[win], edge, luts,
                             floor)
            else:
                _paint(solid, coords, out[win], edge)
    out = out.reshape(grid.shape[0], n_sub, *fine.shape[1:]).mean(axis=1)
    if scale > 1:
        t = torch.from_numpy(out)[None]
        t = torch.nn.functional.interpolate(t, scale_factor=scale, mode="bilinear",
                                            align_corners=False)[0]
        out = t[:, : grid.shape[1], : grid.shape[2]].contiguous().numpy()
    return out


def _paint(solid: Solid, coords, out: np.ndarray, edge: float) -> None:
    f = np.clip(0.5 - solid.distance(*coords) / edge, 0, 1)
    if not f.any():
        return
    out += f * (np.float32(solid.hu) - out)


@dataclass(frozen=True)
class Occupancy:
    """Fraction of each voxel in a window that a plaque fills (averaged over thickness)."""

    window: tuple[slice, slice, slice]
    fraction: np.ndarray


def plaque_occupancy(plaques: tuple[WallPatch, ...], placement: Placement, grid: Grid, *,
                     n_sub: int = 1, fields: SubjectFields | None = None
                     ) -> list[Occupancy | None]:
    """Per plaque, its voxel occupancy on ``grid`` (None when it lies outside the grid);
    points are moved by ``fields``' warp first, as the anatomy's."""
    fine = _sub_grid(grid, 1, n_sub)
    ev = _Evaluator(fine, placement)
    edge = float(min(fine.spacing[:2]))
    result: list[Occupancy | None] = []
    for p in plaques:
        if isinstance(p, WallPatch):  # where the patch is in the head frame: its hull
            pts = p.hull_points()
            if fields is not None:
                pts = fields.unwarp_points(pts)
            lo, hi = pts.min(axis=0), pts.max(axis=0)
        else:
            lo, hi = p.bbox()
        win = ev.window(lo - 1.0, hi + 1.0, 0, fine.shape[0])
        if win is None:
            result.append(None)
            continue
        # widen to whole slices so that sub-planes group evenly
        k0 = (win[0].start // n_sub) * n_sub
        k1 = -(-win[0].stop // n_sub) * n_sub
        win = (slice(k0, k1), win[1], win[2])
        u, v, w = ev.coords(win)
        u, v, w = np.broadcast_arrays(u, v, w)
        if fields is not None:
            d = fields.sample(u, v, w)
            u, v, w = u + d[0], v + d[1], w + d[2]
        if isinstance(p, WallPatch):
            f = p.occupancy(u, v, w, edge)
        else:
            f = np.clip(0.5 - p.distance(u, v, w) / edge, 0, 1)
        f = f.reshape(-1, n_sub, *f.shape[1:]).mean(axis=1)
        if f.max() <= 0:
            result.append(None)
            continue
        # trim to the voxels the plaque touches
        nz = np.nonzero(f)
        lo_i = [int(a.min()) for a in nz]
        hi_i = [int(a.max()) + 1 for a in nz]
        f = f[lo_i[0]:hi_i[0], lo_i[1]:hi_i[1], lo_i[2]:hi_i[2]]
        kc = k0 // n_sub
        coarse = (slice(kc + lo_i[0], kc + hi_i[0]),
                  slice(win[1].start + lo_i[1], win[1].start + hi_i[1]),
                  slice(win[2].start + lo_i[2], win[2].start + hi_i[2]))
        result.append(Occupancy(coarse, f))
    return result


def paint_plaques(hu: np.ndarray, plaques: tuple[Ellipsoid, ...],
                  occupancies: list[Occupancy | None]) -> None:
    """Blend plaques into a CT volume in place."""
    for p, occ in zip(plaques, occupancies, strict=True):
        if occ is None:
            continue
        sub = hu[occ.window]
        sub += occ.fraction * (np.float32(p.hu) - sub)
