"""Where the calcium segmenter looks: a box around both internal carotid arteries, from
below the carotid canal to above the anterior clinoid, at the scan's native resolution.

In-plane, the box is fixed in millimetres around the midsagittal plane the job already
computes (`cohort.preprocess.hemisphere`): ``lateral_mm`` to each side of it, and from
``anterior_mm`` in front of its point (the skull's centroid) to ``posterior_mm`` behind it.
Along depth it spans the slices from ``below_mm`` under the lower carotid-canal landmark
to ``above_mm`` over the higher anterior-clinoid landmark (the DST's landmarks). So the
cost of a scan is small and the same for every head, whatever the scan's field of view or
length. The defaults hold every calcium voxel of the synthetic cohorts (measured: within
34 mm of the midline, 36 mm in front of and 7 mm behind the centroid, 45 mm below the canal
and 22 mm above the clinoid); real heads may differ, which is why the segmenter's rows say
when predicted calcium touches the box's edge (it may go on outside, unmeasured).

Two steps, because the landmarks come later than the pixels in the job: `slab_box` (the
in-plane box over every slice, in the CPU stage) and `depth_range` (the slices, once the
landmarks are known). Crops are (H, W, D) = (rows, columns, slices), depth last, as every
network input in cohort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cohort.anatomy import SIDES
from cohort.errors import ConfigError
from cohort.geometry import Grid


@dataclass(frozen=True)
class CropConfig:
    lateral_mm: float = 40.0  # to each side of the midsagittal plane
    anterior_mm: float = 45.0  # in front of the plane's point (the skull centroid)
    posterior_mm: float = 20.0  # behind it
    below_mm: float = 45.0  # under the lower carotid-canal landmark
    above_mm: float = 25.0  # over the higher anterior-clinoid landmark

    def __post_init__(self) -> None:
        if min(self.lateral_mm, self.anterior_mm + self.posterior_mm, self.below_mm,
               self.above_mm) <= 0:
            raise ConfigError(f"the arterial crop needs positive extents, got {self}")


@dataclass(frozen=True)
class Box:
    """Half-open voxel ranges [start, stop) along slices (k), rows (j) and columns (i)."""

    k: tuple[int, int]
    j: tuple[int, int]
    i: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.k[1] - self.k[0], self.j[1] - self.j[0], self.i[1] - self.i[0])

    def take(self, array: np.ndarray) -> np.ndarray:
        """The box of a [k, j, i] array as (H, W, D) = (rows, columns, slices)."""
        a = array[self.k[0]:self.k[1], self.j[0]:self.j[1], self.i[0]:self.i[1]]
        return np.ascontiguousarray(a.transpose(1, 2, 0))

    def sub_grid(self, grid: Grid) -> Grid:
        """The grid of the box's voxels (same steps, origin at its first voxel)."""
        origin = grid.world(self.i[0], self.j[0], self.k[0])
        return Grid(tuple(float(v) for v in origin), grid.col_step, grid.row_step,
                    grid.slice_step, self.shape)

    def to_list(self) -> list[int]:
        return [*self.k, *self.j, *self.i]

    @classmethod
    def from_list(cls, v) -> Box:
        v = [int(x) for x in v]
        return cls((v[0], v[1]), (v[2], v[3]), (v[4], v[5]))


def _in_plane_axes(grid: Grid, normal) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors towards the patient's left (the plane normal, in the image plane) and
    towards the front (anterior, -y in LPS), both in the image plane."""
    z = np.asarray(grid.normal, dtype=float)
    left = np.asarray(normal, dtype=float)
    left = left - z * (left @ z)
    left /= np.linalg.norm(left)
    if left[0] < 0:  # LPS: +x is the patient's left
        left = -left
    front = np.cross(z, left)
    if front[1] > 0:  # anterior is -y
        front = -front
    return left, front


def slab_box(grid: Grid, point, normal, config: CropConfig = CropConfig()) -> Box:
    """The in-plane box around the arteries over every slice (see module).

    Raises:
        ValueError: the box misses the image (a midline plane outside the head).
    """
    left, front = _in_plane_axes(grid, normal)
    p = np.asarray(point, dtype=float)
    corners = [p + a * left + b * front
               for a in (-config.lateral_mm, config.lateral_mm)
               for b in (-config.posterior_mm, config.anterior_mm)]
    # the plane's point may lie on any slice: take the corners onto slice 0's plane
    ijk = grid.index(np.array(corners))
    nk, nj, ni = grid.shape
    j0, j1 = int(np.floor(ijk[:, 1].min())), int(np.ceil(ijk[:, 1].max())) + 1
    i0, i1 = int(np.floor(ijk[:, 0].min())), int(np.ceil(ijk[:, 0].max())) + 1
    j0, j1, i0, i1 = max(j0, 0), min(j1, nj), max(i0, 0), min(i1, ni)
    if j1 <= j0 or i1 <= i0:
        raise ValueError(f"the arterial crop around the midline point {p.round(1).tolist()} "
                         f"misses the image ({nj} x {ni} pixels)")
    return Box((0, nk), (j0, j1), (i0, i1))


def depth_range(landmarks: dict[str, int], slice_z_mm: np.ndarray,
                config: CropConfig = CropConfig()) -> tuple[int, int]:
    """[k0, k1) of the slices from ``below_mm`` under the lower carotid canal to
    ``above_mm`` over the higher anterior clinoid (slice centres ``slice_z_mm``, ascending,
    one per volume slice; landmarks are volume slice indices)."""
    z = np.asarray(slice_z_mm, dtype=float)
    canal = min(z[int(landmarks[f"{s}_carotid_canal"])] for s in SIDES)
    clinoid = max(z[int(landmarks[f"{s}_anterior_clinoid"])] for s in SIDES)
    lo, hi = min(canal, clinoid) - config.below_mm, max(canal, clinoid) + config.above_mm
    k0 = int(np.searchsorted(z, lo, side="left"))
    k1 = int(np.searchsorted(z, hi, side="right"))
    return max(0, k0), min(len(z), max(k1, k0 + 1))


def arterial_box(grid: Grid, point, normal, landmarks: dict[str, int],
                 config: CropConfig = CropConfig()) -> Box:
    """Both steps at once (training data, where landmarks are known up front)."""
    slab = slab_box(grid, point, normal, config)
    z = grid.slice_positions() @ np.asarray(grid.normal, dtype=float)
    if z[-1] < z[0]:
        raise ValueError("slices must ascend (slice 0 the most inferior)")
    return Box(depth_range(landmarks, z, config), slab.j, slab.i)


def edge_voxels(mask: np.ndarray, box: Box, full_shape: tuple[int, int, int]) -> int:
    """Mask voxels (H, W, D crop) on a face of the box that is not also the image's edge:
    calcium there may continue outside the crop, unmeasured."""
    n = 0
    nk, nj, ni = full_shape
    faces = [(box.j[0] > 0, mask[0]), (box.j[1] < nj, mask[-1]),
             (box.i[0] > 0, mask[:, 0]), (box.i[1] < ni, mask[:, -1]),
             (box.k[0] > 0, mask[:, :, 0]), (box.k[1] < nk, mask[:, :, -1])]
    for inner, face in faces:
        if inner:
            n += int(np.count_nonzero(face))
    return n
