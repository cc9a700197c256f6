"""Smooth random fields of one subject, in the head frame: what makes shapes organic.

A lattice of nodes every ``SPACING_MM`` over the head carries per-subject Gaussian-smoothed
noise in several channels:

* ``warp`` (3 channels, mm): a smooth displacement. Every solid is evaluated at
  ``head + warp(head)``, so skull, skull base, face and neck bend together (no boxes, slabs
  or cylinders survive it), and landmark events move with the anatomy around them;
* ``diploe`` (0..1): how dense the marrow between the skull's tables is, here and there;
* ``thickness`` (about 0.5..1.5): a factor on the skull's bone layers, over the vault;
* ``sulci`` (zero-mean): the cortex folds where this field is near zero;
* ``floor`` and ``border`` (mm): waves on the skull-base floor's height and on the borders
  between its fossae, so that no straight ridge survives.

A field is sampled trilinearly; over a render chunk it is sampled on a coarse sub-grid and
interpolated up (a chunk is an affine image of index space, and the fields vary over many
millimetres), which costs a few array passes instead of one per node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

SPACING_MM = 4.0
WARP, DIPLOE, THICKNESS, SULCI, FLOOR, BORDER = slice(0, 3), 3, 4, 5, 6, 7
CHANNELS = 8
#: the warp's gradient is kept below this (a fold-free, gently bending displacement)
MAX_SLOPE = 0.15
#: coarse sub-grid steps (in the chunk's own index units: k, j, i) for chunk sampling
COARSE_STEP = (2, 4, 4)


@dataclass(frozen=True)
class FieldSpec:
    """How rough a subject is: amplitudes and correlation lengths (mm) of each field."""

    warp_mm: float = 5.0  # largest displacement, about
    warp_length_mm: float = 28.0
    fine_warp_mm: float = 1.2  # a finer ripple on every surface
    fine_warp_length_mm: float = 7.0
    asymmetry_mm: float = 0.6  # the warp's part that differs between the sides
    diploe_length_mm: float = 7.0
    thickness_length_mm: float = 25.0
    sulci_length_mm: float = 5.0
    fold_waves: int = 14  # waves over the sphere of directions that make the sulci
    fold_wavenumber: tuple[float, float] = (10.0, 18.0)  # per radian
    floor_mm: float = 1.2  # SD of the floor's height offset
    floor_length_mm: float = 25.0
    border_mm: float = 2.5  # SD of the fossa borders' offset
    border_length_mm: float = 30.0


@dataclass(frozen=True)
class SubjectFields:
    origin: tuple[float, float, float]  # head-frame position (u, v, w) of node [0, 0, 0]
    data: np.ndarray  # float32 (CHANNELS, nw, nv, nu)
    warp_bound_mm: float  # largest displacement anywhere

    def _normalised(self, u, v, w) -> torch.Tensor:
        """Points as grid_sample's (x, y, z) in -1..1 (x along u)."""
        n = self.data.shape[1:]  # (nw, nv, nu)
        out = []
        for coord, o, size in ((u, self.origin[0], n[2]), (v, self.origin[1], n[1]),
                               (w, self.origin[2], n[0])):
            out.append(torch.as_tensor((np.asarray(coord, np.float32) - np.float32(o))
                                       * np.float32(2.0 / (SPACING_MM * (size - 1))) - 1.0))
        return torch.stack(out, dim=-1)

    def sample(self, u, v, w) -> np.ndarray:
        """All channels at head-frame points of any (equal) shape: (CHANNELS, *shape)."""
        u = np.asarray(u, np.float32)
        shape = u.shape
        grid = self._normalised(u.reshape(1, 1, 1, -1), np.asarray(v).reshape(1, 1, 1, -1),
                                np.asarray(w).reshape(1, 1, 1, -1))
        vol = torch.from_numpy(self.data)[None]
        out = torch.nn.functional.grid_sample(vol, grid, mode="bilinear",
                                              padding_mode="border", align_corners=True)
        return out[0, :, 0, 0].numpy().reshape(CHANNELS, *shape)

    def warp_points(self, points: np.ndarray) -> np.ndarray:
        """Head-frame points (n, 3) -> template points (where the solids are defined)."""
        p = np.asarray(points, np.float32)
        d = self.sample(p[:, 0], p[:, 1], p[:, 2])[WARP]
        return p + d.T

    def volume_ratio(self, point, step_mm: float = 2.0) -> float:
        """Template volume per head-frame volume near a head-frame point: det(I + dD/dh)."""
        p = np.asarray(point, float)
        jac = np.eye(3)
        for axis in range(3):
            e = np.zeros(3)
            e[axis] = step_mm
            d = self.sample(*np.stack([p + e, p - e]).T)[WARP]  # (3, 2)
            jac[:, axis] += (d[:, 0] - d[:, 1]) / (2 * step_mm)
        return float(np.linalg.det(jac))

    def unwarp_points(self, template: np.ndarray, iterations: int = 12) -> np.ndarray:
        """The head-frame points whose template points are ``template`` (n, 3): the inverse
        of the warp, by fixed-point iteration (it converges: the warp is a small, smooth
        displacement with a gradient far below one)."""
        t = np.asarray(template, np.float64)
        h = t.copy()
        for _ in range(iterations):
            d = self.sample(h[:, 0], h[:, 1], h[:, 2])[WARP].T
            h = t - d
        return h


def make_fields(rng: np.random.Generator, lo, hi, spec: FieldSpec = FieldSpec(),
                center=(0.0, 0.0, 0.0)) -> SubjectFields:
    """Fields over the head-frame box lo..hi (mm), drawn from ``rng``.

    The shape fields (warp, skull thickness, floor, borders) are mirror-symmetric about the
    midsagittal plane u = 0 but for a small asymmetric part of the warp
    (``spec.asymmetry_mm``), as heads are; the tissue textures (diploe, sulci) are not."""
    lo = np.asarray(lo, float) - 2 * SPACING_MM
    hi = np.asarray(hi, float) + 2 * SPACING_MM
    half_u = max(abs(lo[0]), abs(hi[0]))  # a lattice symmetric about u = 0
    lo[0], hi[0] = -half_u, half_u
    n = np.ceil((hi - lo) / SPACING_MM).astype(int) + 1  # (nu, nv, nw)
    lo[0] = -(n[0] - 1) * SPACING_MM / 2
    shape = (int(n[2]), int(n[1]), int(n[0]))
    data = np.empty((CHANNELS, *shape), np.float32)

    def smooth(length_mm: float, count: int = 1) -> np.ndarray:
        """Zero-mean, unit-SD noise with correlation length ``length_mm``; long lengths are
        drawn on a coarser lattice (a quarter of the length) and interpolated up."""
        step = max(1, int(length_mm / 4.0 / SPACING_MM))
        small = tuple(-(-s // step) + 1 for s in shape)
        f = rng.standard_normal((count, *small), dtype=np.float32)
        f = gaussian_filter(f, sigma=(0, *(length_mm / SPACING_MM / step,) * 3), mode="wrap",
                            truncate=2.5)
        if step > 1:
            f = torch.nn.functional.interpolate(
                torch.from_numpy(f)[None], scale_factor=step, mode="trilinear",
                align_corners=True)[0].numpy()
        f = f[:, : shape[0], : shape[1], : shape[2]]
        return f / np.maximum(f.std(axis=(1, 2, 3), keepdims=True), 1e-9)

    data[WARP] = (spec.warp_mm / 2.5) * smooth(spec.warp_length_mm, 3)
    data[WARP] += (spec.fine_warp_mm / 2.5) * smooth(spec.fine_warp_length_mm, 3)
    _mirror(data[WARP])
    data[WARP] += (spec.asymmetry_mm / 2.5) * smooth(spec.warp_length_mm * 1.5, 3)
    data[DIPLOE] = np.clip(0.5 + 0.22 * smooth(spec.diploe_length_mm)[0], 0.0, 1.0)
    data[THICKNESS] = np.clip(1.0 + 0.2 * smooth(spec.thickness_length_mm)[0], 0.55, 1.5)
    data[SULCI] = _folds(rng, lo, shape, center, spec) + 0.35 * smooth(spec.sulci_length_mm)[0]
    data[SULCI] /= max(float(data[SULCI].std()), 1e-9)
    data[FLOOR] = spec.floor_mm * smooth(spec.floor_length_mm)[0]
    data[BORDER] = spec.border_mm * smooth(spec.border_length_mm)[0]
    for c in (THICKNESS, FLOOR, BORDER):
        data[c] = (data[c] + data[c][..., ::-1]) / 2
    for c in (FLOOR, BORDER):  # functions of (u, v) only: the floor stays one surface
        data[c] = data[c].mean(axis=0, keepdims=True)
        data[c] /= max(float(data[c].std()), 1e-9) / (spec.floor_mm if c == FLOOR
                                                       else spec.border_mm)
    bound = float(np.sqrt((data[WARP] ** 2).sum(axis=0)).max())
    # the warp's largest gradient (render windows rely on it staying small)
    slope = max(float(np.abs(np.diff(data[c], axis=ax)).max()) / SPACING_MM
                for c in range(3) for ax in range(3))
    if slope > MAX_SLOPE:
        data[WARP] *= MAX_SLOPE / slope
        bound *= MAX_SLOPE / slope
    return SubjectFields(tuple(float(x) for x in lo), data, bound)


def _folds(rng: np.random.Generator, lo: np.ndarray, shape: tuple[int, int, int], center,
           spec: FieldSpec) -> np.ndarray:
    """A field of the direction from the brain's centre only: a sum of waves over the
    sphere of directions, whose zero sets are sheets running radially in from the
    surface, as sulci do (unit SD)."""
    u = lo[0] + SPACING_MM * np.arange(shape[2]) - center[0]
    v = lo[1] + SPACING_MM * np.arange(shape[1]) - center[1]
    w = lo[2] + SPACING_MM * np.arange(shape[0]) - center[2]
    d = np.stack(np.broadcast_arrays(u[None, None, :], v[None, :, None], w[:, None, None]))
    d /= np.maximum(np.linalg.norm(d, axis=0, keepdims=True), 1e-6)
    out = np.zeros(shape)
    for _ in range(spec.fold_waves):
        n = rng.standard_normal(3)
        n /= np.linalg.norm(n)
        k = rng.uniform(*spec.fold_wavenumber)
        out += np.cos(k * np.tensordot(n, d, axes=1) + rng.uniform(0, 2 * np.pi))
    return (out / max(float(out.std()), 1e-9)).astype(np.float32)


def _mirror(warp: np.ndarray) -> None:
    """Make a displacement (3, nw, nv, nu) mirror-symmetric about u = 0, in place: its u
    part odd, its v and w parts even under u -> -u."""
    flipped = warp[..., ::-1].copy()
    warp[0] = (warp[0] - flipped[0]) / 2
    warp[1:] = (warp[1:] + flipped[1:]) / 2


def chunk_fields(fields: SubjectFields, coords_at, shape: tuple[int, int, int],
                 channels: tuple[int, ...] | None = None) -> np.ndarray:
    """The fields over a whole render chunk of ``shape`` (nk, nj, ni): sampled on a coarse
    sub-grid whose corners are the chunk's corners and interpolated trilinearly.
    ``coords_at(k, j, i)`` gives head-frame (u, v, w) for 1-D index arrays (broadcast).
    ``channels``: the first ones only, in order (all when None); the rest are left out."""
    idx = [np.linspace(0, s - 1, 1 if s == 1 else max(2, -(-(s - 1) // step) + 1),
                       dtype=np.float32)
           for s, step in zip(shape, COARSE_STEP, strict=True)]
    u, v, w = coords_at(idx[0][:, None, None], idx[1][None, :, None], idx[2][None, None, :])
    coarse = fields.sample(*np.broadcast_arrays(u, v, w))  # (C, nkc, njc, nic)
    if channels is not None:
        coarse = coarse[list(channels)]
    t = torch.from_numpy(np.ascontiguousarray(coarse))[None]
    if t.shape[2:] == shape:
        return coarse
    if shape[0] == 1:  # one plane: bilinear in-plane
        out = torch.nn.functional.interpolate(t[:, :, 0], size=shape[1:], mode="bilinear",
                                              align_corners=True)[:, :, None]
    else:
        out = torch.nn.functional.interpolate(t, size=shape, mode="trilinear",
                                              align_corners=True)
    return out[0].numpy()
