"""Regularise a stack along depth (gaps, uneven spacing) and correct gantry tilt by
resampling onto the axial grid `Grid.axial_equivalent` describes. Interpolation is linear
along depth only: in-plane pixels are never moved for tilt about the row axis."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

from cohort.geometry import Grid

AIR_HU = -1024.0


def regularise(slices: np.ndarray, slice_index: np.ndarray, n_grid: int) -> np.ndarray:
    """Slices at fractional grid positions ``slice_index`` (ascending) -> ``n_grid`` slices
    at integer positions, by linear interpolation between the neighbouring input slices."""
    idx = np.asarray(slice_index, dtype=float)
    if len(idx) == n_grid and np.allclose(idx, np.arange(n_grid), atol=1e-6):
        return slices
    g = np.arange(n_grid, dtype=float)
    hi = np.clip(np.searchsorted(idx, g, side="left"), 1, len(idx) - 1)
    lo = hi - 1
    w = np.clip((g - idx[lo]) / (idx[hi] - idx[lo]), 0.0, 1.0).astype(np.float32)
    return slices[lo] * (1 - w)[:, None, None] + slices[hi] * w[:, None, None]


def correct_tilt(array: np.ndarray, grid: Grid) -> tuple[np.ndarray, Grid]:
    """Resample a sheared stack onto its axial equivalent (same shape).

    Voxels of the axial grid that the acquisition did not cover are set to air.
    """
    target = grid.axial_equivalent()
    if target is grid:
        return array, grid
    nk, nj, ni = grid.shape
    j = np.arange(nj, dtype=float)
    k = np.arange(nk, dtype=float)
    jj, kk = np.meshgrid(j, k)  # (nk, nj)
    src = grid.index(target.world(np.zeros_like(jj), jj, kk))  # (nk, nj, 3) as i, j, k
    di = grid.index(target.world(np.ones_like(jj), jj, kk))[..., 0] - src[..., 0]
    if (np.abs(src[..., 0]).max() < 1e-6 and np.abs(src[..., 1] - jj).max() < 1e-6
            and np.abs(di - 1).max() < 1e-6):
        # tilt about the row axis: each row j moves along depth only
        # the shift along depth is the same for every slice of a row: k' = k + shift[j]
        shift = src[0, :, 2]
        out = np.full(grid.shape, AIR_HU, dtype=np.float32)
        for j in range(nj):
            s0 = int(np.floor(shift[j]))
            w = np.float32(shift[j] - s0)
            # output slices k whose sources k + s0 and k + s0 + 1 both exist
            if w < 1e-6:  # on a source slice: copy it
                k_lo, k_hi = max(0, -s0), min(nk, nk - s0)
                if k_hi > k_lo:
                    out[k_lo:k_hi, j] = array[k_lo + s0:k_hi + s0, j]
                continue
            k_lo, k_hi = max(0, -s0), min(nk, nk - s0 - 1)
            if k_hi <= k_lo:
                continue
            a = array[k_lo + s0:k_hi + s0, j]
            b = array[k_lo + s0 + 1:k_hi + s0 + 1, j]
            out[k_lo:k_hi, j] = a + w * (b - a)
        return out, target
    return _general(array, grid, target), target


def _general(array: np.ndarray, grid: Grid, target: Grid) -> np.ndarray:
    """Any affine resampling, slab by slab to bound memory."""
    nk, nj, ni = target.shape
    out = np.empty(target.shape, dtype=np.float32)
    jj, ii = np.meshgrid(np.arange(nj, dtype=float), np.arange(ni, dtype=float), indexing="ij")
    for k in range(nk):
        src = grid.index(target.world(ii, jj, np.full_like(ii, k)))
        coords = np.stack([src[..., 2], src[..., 1], src[..., 0]])
        out[k] = map_coordinates(array, coords, order=1, mode="constant", cval=AIR_HU)
    return out
