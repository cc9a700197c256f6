"""`label_map`: the segment code of every calcium voxel, for NIfTI output and QC pictures."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cohort.anatomy import SIDES, segment_label, segment_of_slices
from cohort.geometry import Grid
from cohort.quantify.boundaries import usable_bounds, validate_landmarks
from cohort.quantify.components import nonzero_flat
from cohort.quantify.side import SideFunction, side_codes


def label_map(mask: np.ndarray, grid: Grid, landmarks: Mapping[str, int],
              side_of: SideFunction) -> np.ndarray:
    """uint8 [k, j, i]: 0 background, else the calcium voxel's code of
    `cohort.anatomy.SEGMENT_LABELS`.

    Side and segment follow the same rules as `summarise_calcium` and `quantify`; a side
    whose landmarks are out of order is labelled with its three slices sorted (what
    `quantify` reports under its default ``out_of_order="sort"``), so every calcium voxel
    has a label.

    Raises:
        ValueError: the mask does not match the grid, a landmark is missing, or the side
            function misbehaves.
    """
    if mask.shape != tuple(grid.shape):
        raise ValueError(f"mask {mask.shape} must have the grid's shape {tuple(grid.shape)}")
    landmarks = validate_landmarks(landmarks)
    flat = nonzero_flat(mask)
    k, j, i = np.unravel_index(flat, mask.shape)
    side = side_codes(side_of, grid.world(i, j, k))
    codes = np.zeros(len(k), dtype=np.uint8)
    for side_code, name in enumerate(SIDES):
        on = side == side_code
        bounds = usable_bounds(landmarks, name, "sort")
        codes[on] = segment_label(name, segment_of_slices(k[on], *bounds))
    out = np.zeros(mask.shape, dtype=np.uint8)
    out.reshape(-1)[flat] = codes
    return out
