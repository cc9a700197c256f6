"""`CalciumSummary`: what the CPU stage keeps of a calcium mask, a few kilobytes per series.

Segment membership depends only on a voxel's side and slice (cohort.anatomy), so per-side,
per-slice voxel counts and peak CT numbers are enough to compute every segment's volume and
peak once the landmarks are known, and plaque pieces with their voxels per slice let a
plaque that crosses a landmark be counted in, or split exactly between, both segments.
No full-resolution array travels past this point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cohort.geometry import Grid
from cohort.quantify.components import nonzero_flat, sparse_components
from cohort.quantify.side import SideFunction, side_codes


@dataclass(frozen=True)
class CalciumSummary:
    """Calcium of one series by side, slice and plaque piece.

    Side codes index `cohort.anatomy.SIDES` (0 right, 1 left). A *plaque piece* is one
    26-connected component of the mask restricted to one side: a component that crosses
    the midline gives one piece per side. Its voxels per slice are stored ragged:
    piece ``p`` covers slices ``piece_first_slice[p] + arange(len)``, with counts
    ``piece_counts[piece_offsets[p]:piece_offsets[p + 1]]`` (zeros possible inside the
    range for a piece cut by the midline).
    """

    n_slices: int
    voxel_mm3: float  # volume of one voxel
    slice_spacing_mm: float  # distance between consecutive slice planes
    slice_voxels: np.ndarray  # int64 (2, n_slices): calcium voxels per side and slice
    slice_peak_hu: np.ndarray  # float32 (2, n_slices): peak HU there, NaN without calcium
    piece_side: np.ndarray  # int8 (pieces,)
    piece_first_slice: np.ndarray  # int64 (pieces,)
    piece_offsets: np.ndarray  # int64 (pieces + 1,)
    piece_counts: np.ndarray  # int64 (sum of piece lengths,)
    piece_peak_hu: np.ndarray  # float32 (pieces,)

    @property
    def n_pieces(self) -> int:
        return len(self.piece_side)

    @property
    def total_voxels(self) -> int:
        return int(self.slice_voxels.sum())

    def piece_slices(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """Slice indices and voxel counts of piece ``p``."""
        counts = self.piece_counts[self.piece_offsets[p]:self.piece_offsets[p + 1]]
        return self.piece_first_slice[p] + np.arange(len(counts)), counts

    def piece_entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(piece, slice, voxels) of every slice a piece has voxels on, flattened."""
        lengths = np.diff(self.piece_offsets)
        piece = np.repeat(np.arange(self.n_pieces), lengths)
        within = np.arange(len(self.piece_counts)) - self.piece_offsets[piece]
        slices = self.piece_first_slice[piece] + within
        keep = self.piece_counts > 0
        return piece[keep], slices[keep], self.piece_counts[keep]

    def to_dict(self) -> dict:
        """Plain Python values (numbers, nested lists; None for NaN), e.g. for a Ray Data
        row or JSON."""
        return {name: _plain(value) for name, value in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> CalciumSummary:
        """The inverse of `to_dict`."""
        return cls(
            n_slices=int(d["n_slices"]), voxel_mm3=float(d["voxel_mm3"]),
            slice_spacing_mm=float(d["slice_spacing_mm"]),
            slice_voxels=np.asarray(d["slice_voxels"], dtype=np.int64).reshape(2, -1),
            # None -> NaN on conversion to a float array
            slice_peak_hu=np.asarray(d["slice_peak_hu"], dtype=np.float32).reshape(2, -1),
            piece_side=np.asarray(d["piece_side"], dtype=np.int8),
            piece_first_slice=np.asarray(d["piece_first_slice"], dtype=np.int64),
            piece_offsets=np.asarray(d["piece_offsets"], dtype=np.int64),
            piece_counts=np.asarray(d["piece_counts"], dtype=np.int64),
            piece_peak_hu=np.asarray(d["piece_peak_hu"], dtype=np.float32),
        )


def slice_spacing_mm(grid: Grid) -> float:
    """Distance between consecutive slice planes (the slice step along the plane normal)."""
    return float(abs(np.asarray(grid.slice_step, dtype=float) @ grid.normal))


def summarise_calcium(mask: np.ndarray, hu: np.ndarray, grid: Grid,
                      side_of: SideFunction) -> CalciumSummary:
    """Summarise a binary calcium mask by side, slice and plaque piece.

    Args:
        mask: calcium mask [k, j, i] on ``grid`` (bool or integers; nonzero = calcium).
        hu: CT numbers [k, j, i] on the same grid (for peak HU).
        grid: the voxel grid of both.
        side_of: world points (n, 3) -> signed distance (n,) mm from the midline, positive
            towards the patient's left (see `cohort.quantify.side`).

    Raises:
        ValueError: the arrays do not match the grid, or the side function misbehaves.
    """
    if mask.shape != tuple(grid.shape) or hu.shape != tuple(grid.shape):
        raise ValueError(f"mask {mask.shape} and CT {hu.shape} must both have the grid's "
                         f"shape {tuple(grid.shape)}")
    nk = grid.shape[0]
    flat = nonzero_flat(mask)  # sorted: k-major, so slices ascend
    k, j, i = np.unravel_index(flat, mask.shape)
    side = side_codes(side_of, grid.world(i, j, k))
    values = np.asarray(hu[k, j, i], dtype=np.float32)

    cell = side.astype(np.int64) * nk + k  # (side, slice) cell of each voxel
    slice_voxels = np.bincount(cell, minlength=2 * nk).reshape(2, nk)
    slice_peak = _group_max(cell, values, 2 * nk).reshape(2, nk)

    comp = sparse_components(flat, mask.shape)
    keys, piece = np.unique(comp * 2 + side, return_inverse=True)  # pieces by (component, side)
    n_pieces = len(keys)
    first = np.full(n_pieces, nk, dtype=np.int64)
    last = np.full(n_pieces, -1, dtype=np.int64)
    np.minimum.at(first, piece, k)
    np.maximum.at(last, piece, k)
    offsets = np.concatenate([[0], np.cumsum(last - first + 1)]).astype(np.int64)
    counts = np.bincount(offsets[piece] + k - first[piece], minlength=int(offsets[-1]))
    return CalciumSummary(
        n_slices=nk,
        voxel_mm3=float(abs(np.linalg.det(grid.matrix))),
        slice_spacing_mm=slice_spacing_mm(grid),
        slice_voxels=slice_voxels.astype(np.int64),
        slice_peak_hu=slice_peak,
        piece_side=(keys % 2).astype(np.int8),
        piece_first_slice=first,
        piece_offsets=offsets,
        piece_counts=counts.astype(np.int64),
        piece_peak_hu=_group_max(piece, values, n_pieces),
    )


def _plain(value):
    """numpy arrays -> nested lists of Python ints / floats, NaN -> None."""
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype.kind != "f":
        return value.tolist()
    if value.ndim > 1:
        return [_plain(row) for row in value]
    return [None if np.isnan(v) else v for v in value.astype(float).tolist()]


def _group_max(group: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Maximum of ``values`` per group id in 0..n-1 (float32), NaN for an empty group."""
    out = np.full(n, -np.inf, dtype=np.float32)
    np.maximum.at(out, group, values)
    out[np.isneginf(out)] = np.nan
    return out

