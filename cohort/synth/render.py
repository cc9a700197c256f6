"""Render a phantom onto a scanner voxel grid: CT numbers with partial-volume effects.

The head frame is placed in the scanner by a pose (rotation R, translation t):
``world = R @ head + t``. Smooth anatomy is evaluated at ``scale`` times the pixel size
(a brain kernel's resolution) and interpolated up; through-plane partial volume comes from
averaging sub-planes across the slice thickness. Calcified plaques are evaluated at full
resolution, since they are often only a few voxels large.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cohort.geometry import Grid
from cohort.synth.phantom import BASE, MUSCLE, Phantom, Vault
from cohort.synth.solids import Ellipsoid, Solid

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
        out = []
        for d in range(3):
            a = self.a[d].astype(np.float32)
            out.append((np.float32(self.h0[d]) + a[0] * i + a[1] * j) + a[2] * k)
        return out[0], out[1], out[2]


def _vault_lut(vault: Vault, edge: float, step: float = 0.05):
    """CT number as a function of depth under the skin, blurred over one edge width."""
    depth_max = max(vault.radii) + 5
    e = np.arange(-2 * edge, depth_max, step)
    bounds = np.cumsum([t for t, _ in vault.layers[:-1]])
    values = np.array([hu for _, hu in vault.layers])
    lut = values[np.searchsorted(bounds, e, side="right")]
    lut[e < 0] = vault.layers[0][1]
    width = max(1, int(round(edge / step)))
    lut = np.convolve(np.pad(lut, width, mode="edge"), np.ones(width) / width, mode="same")
    return float(e[0]), step, lut[width:-width].astype(np.float32)


def _paint_vault(vault: Vault, ev: _Evaluator, out: np.ndarray, win, edge: float, lut) -> None:
    u, v, w = ev.coords(win)
    e = -Ellipsoid(hu=0.0, center=vault.center, radii=vault.radii).distance(u, v, w)
    e *= vault.reference_radius / min(vault.radii)
    e0, step, table = lut
    idx = np.clip(((e - e0) / step).astype(np.int32), 0, len(table) - 1)
    val = table[idx]
    f = np.clip(0.5 + e / edge, 0, 1)
    floor_lo, floor_hi = vault.floor_range()
    if w.min() < floor_hi + edge:  # the skull base cuts this window
        fl = vault.floor(u, v)
        # distance to the floor along its normal, so oblique parts get edges as sharp as flat
        gu = vault.floor(u + 1.0, v) - fl
        gv = vault.floor(u, v + 1.0) - fl
        s = ((w - fl) / np.sqrt(1.0 + gu * gu + gv * gv)).astype(np.float32)
        a = np.clip(0.5 + s / edge, 0, 1)
        b = np.clip(0.5 + (s + vault.base_plate_mm) / edge, 0, 1)
        inner = a * val + (b - a) * np.float32(BASE) + (1 - b) * np.float32(MUSCLE)
        c = np.clip(0.5 + (e - vault.scalp_mm) / edge, 0, 1)
        val = val + c * (inner - val)
        # below the skull base the cranium's shell (and its scalp) ends: neck and face
        # (painted before the vault) show through
        f *= np.clip(0.5 + (s + vault.base_plate_mm + vault.below_base_mm) / edge, 0, 1)
    sub = out[win]
    sub += f * (val - sub)


def render_anatomy(phantom: Phantom, placement: Placement, grid: Grid, *, scale: int = 2,
                   n_sub: int = 1, chunk: int = 24) -> np.ndarray:
    """Noise-free CT numbers (float32, [k, j, i]) of the phantom's anatomy on ``grid``."""
    fine = _sub_grid(grid, scale, n_sub)
    ev = _Evaluator(fine, placement)
    edge = float(min(fine.spacing[:2]))
    lut = _vault_lut(phantom.vault, edge)
    boxes = [s.bbox() for s in phantom.solids]
    nk = fine.shape[0]
    out = np.full(fine.shape, AIR_HU, dtype=np.float32)
    for k0 in range(0, nk, chunk):
        k1 = min(nk, k0 + chunk)
        for solid, (lo, hi) in zip(phantom.solids, boxes, strict=True):
            win = ev.window(lo, hi, k0, k1)
            if win is None:
                continue
            if isinstance(solid, Vault):
                _paint_vault(solid, ev, out, win, edge, lut)
            else:
                _paint(solid, ev, out, win, edge)
    out = out.reshape(grid.shape[0], n_sub, *fine.shape[1:]).mean(axis=1)
    if scale > 1:
        t = torch.from_numpy(out)[None]
        t = torch.nn.functional.interpolate(t, scale_factor=scale, mode="bilinear",
                                            align_corners=False)[0]
        out = t[:, : grid.shape[1], : grid.shape[2]].contiguous().numpy()
    return out


def _paint(solid: Solid, ev: _Evaluator, out: np.ndarray, win, edge: float) -> None:
    u, v, w = ev.coords(win)
    f = np.clip(0.5 - solid.distance(u, v, w) / edge, 0, 1)
    if not f.any():
        return
    sub = out[win]
    sub += f * (np.float32(solid.hu) - sub)


@dataclass(frozen=True)
class Occupancy:
    """Fraction of each voxel in a window that a plaque fills (averaged over thickness)."""

    window: tuple[slice, slice, slice]
    fraction: np.ndarray


def plaque_occupancy(plaques: tuple[Ellipsoid, ...], placement: Placement, grid: Grid, *,
                     n_sub: int = 1) -> list[Occupancy | None]:
    """Per plaque, its voxel occupancy on ``grid`` (None when it lies outside the grid)."""
    fine = _sub_grid(grid, 1, n_sub)
    ev = _Evaluator(fine, placement)
    edge = float(min(fine.spacing[:2]))
    result: list[Occupancy | None] = []
    for p in plaques:
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
        f = np.clip(0.5 - p.distance(u, v, w) / edge, 0, 1)
        f = f.reshape(-1, n_sub, *f.shape[1:]).mean(axis=1)
        coarse = (slice(k0 // n_sub, k1 // n_sub), win[1], win[2])
        result.append(Occupancy(coarse, f) if f.max() > 0 else None)
    return result


def paint_plaques(hu: np.ndarray, plaques: tuple[Ellipsoid, ...],
                  occupancies: list[Occupancy | None]) -> None:
    """Blend plaques into a CT volume in place."""
    for p, occ in zip(plaques, occupancies, strict=True):
        if occ is None:
            continue
        sub = hu[occ.window]
        sub += occ.fraction * (np.float32(p.hu) - sub)
