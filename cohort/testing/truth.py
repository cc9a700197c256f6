"""Ground truth of a synthetic cohort, as tests compare a run against it."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import SimpleITK as sitk

from cohort.anatomy import SEGMENT_LABELS, SEGMENTS
from cohort.geometry import Grid
from cohort.quantify import quantify, summarise_calcium
from cohort.read.volume import Volume


def side_from_labels(labels: np.ndarray, grid: Grid) -> Callable[[np.ndarray], np.ndarray]:
    """A side function (+1 left, -1 right) that looks each calcium point up in a truth label
    map (codes 1-4 right, 5-8 left) on ``grid``."""
    def side_of(points: np.ndarray) -> np.ndarray:
        i, j, k = np.rint(grid.index(points)).astype(int).T
        codes = labels[k, j, i]
        assert (codes > 0).all(), "asked for the side of a point without a label"
        return np.where(codes >= SEGMENT_LABELS["left_cervical"], 1.0, -1.0)

    return side_of


def truth_segment_voxels(mask_path: str, labels_path: str,
                         landmarks: Mapping[str, int]) -> dict[str, int]:
    """Voxels per segment of a truth calcium mask split by ``landmarks`` (slices of the
    mask's grid), each voxel on the side its truth label says."""
    mask = Volume.from_sitk(sitk.ReadImage(mask_path))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(labels_path))
    hu = np.full(mask.array.shape, 500.0, np.float32)  # counts do not depend on it
    result = quantify(summarise_calcium(mask.array, hu, mask.grid,
                                        side_from_labels(labels, mask.grid)),
                      {name: int(k) for name, k in landmarks.items()})
    return {name: result.segments[name].voxels for name in SEGMENTS}
