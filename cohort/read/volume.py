"""`Volume`: CT numbers on a voxel grid with their world geometry (LPS, mm)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from cohort.geometry import Grid


@dataclass
class Volume:
    """A HU volume: ``array`` is float32 indexed ``[k, j, i]`` (slice, row, column) on
    ``grid``; slice 0 is the most inferior. ``provenance`` says what was done to get here
    (tilt correction, resampling, dropped duplicates), for the output tables."""

    array: np.ndarray
    grid: Grid
    series_uid: str | None = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.shape != self.grid.shape:
            raise ValueError(f"array shape {self.array.shape} does not match grid shape "
                             f"{self.grid.shape}")

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(column, row, slice) spacing in mm."""
        return self.grid.spacing

    def slice_z_mm(self) -> np.ndarray:
        """World z (superior axis) of every slice at the grid's first voxel column."""
        return self.grid.slice_positions()[:, 2]

    def to_sitk(self) -> sitk.Image:
        """The volume as a SimpleITK image (spacing, origin and direction set).

        Raises:
            ValueError: the grid is sheared (gantry tilt not corrected); SimpleITK images
                have orthogonal axes.
        """
        m = self.grid.matrix
        spacing = np.linalg.norm(m, axis=0)
        direction = m / spacing
        if np.abs(direction.T @ direction - np.eye(3)).max() > 1e-6:
            raise ValueError("a sheared (gantry-tilted) grid has no SimpleITK equivalent; "
                             "correct the tilt first (cohort.read.resample.correct_tilt)")
        img = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        img.SetOrigin(tuple(float(v) for v in self.grid.origin))
        img.SetSpacing(tuple(float(v) for v in spacing))
        img.SetDirection(tuple(float(v) for v in direction.ravel()))
        return img

    @classmethod
    def from_sitk(cls, img: sitk.Image, *, series_uid: str | None = None,
                  provenance: dict | None = None) -> Volume:
        """A volume from a SimpleITK image, in LPS; slices reordered so that slice 0 is
        the most inferior when the third axis points downwards."""
        arr = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
        d = np.array(img.GetDirection(), dtype=float).reshape(3, 3)
        sp = np.array(img.GetSpacing(), dtype=float)
        m = d * sp
        origin = np.array(img.GetOrigin(), dtype=float)
        if m[2, 2] < 0:  # third axis runs head to feet: flip to feet to head
            origin = origin + m[:, 2] * (arr.shape[0] - 1)
            m[:, 2] = -m[:, 2]
            arr = arr[::-1]
        grid = Grid(tuple(origin), tuple(m[:, 0]), tuple(m[:, 1]), tuple(m[:, 2]), arr.shape)
        return cls(np.ascontiguousarray(arr), grid, series_uid, dict(provenance or {}))
