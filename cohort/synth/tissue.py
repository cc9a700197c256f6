"""Tissue proportions of a head CT: the share of head voxels in each CT-number band.

The measure the realism target is stated in (issue 16): the voxels of the head's largest
connected component above -300 HU (so air, the table and the head holder are out), from the
skull base up to the vertex, each acquired slice counted once (whatever its thickness).
The skull base is the lowest carotid-canal landmark: the canal's lower opening lies in the
under surface of the petrous bone, the part of the base that every head protocol covers.

The real-head figures are from a clinical scan (skull base to vertex) measured the same
way; a synthetic cohort should land within ``TOLERANCE_POINTS`` of each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

HEAD_HU = -300.0  # above this, a voxel can belong to the head (air and foam are below)
TOLERANCE_POINTS = 3.0


@dataclass(frozen=True)
class Band:
    name: str
    lo: float
    hi: float
    real_lo: float  # the real head's share (percent), a range where two scans differ
    real_hi: float

    def contains(self, hu: np.ndarray) -> np.ndarray:
        return (hu >= self.lo) & (hu < self.hi)

    @property
    def real_mid(self) -> float:
        return (self.real_lo + self.real_hi) / 2

    def off_by(self, share: float) -> float:
        """Percentage points outside the real range (0 inside it)."""
        return max(self.real_lo - share, share - self.real_hi, 0.0)


BANDS = (
    Band("below 0 HU (fat, CSF, air cells)", HEAD_HU, 0.0, 17.0, 19.0),
    Band("0-100 HU (brain, muscle)", 0.0, 100.0, 59.0, 60.0),
    Band("100-400 HU (thin bone, partial volume, calcium)", 100.0, 400.0, 9.0, 9.0),
    Band("above 400 HU (dense bone)", 400.0, np.inf, 13.5, 14.0),
    Band("above 1000 HU", 1000.0, np.inf, 5.0, 5.0),
)


def head_component(hu: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of voxels above HEAD_HU (boolean, same shape)."""
    above = hu > HEAD_HU
    labels, n = ndimage.label(above)
    if n == 0:
        return above
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def band_counts(hu: np.ndarray, first_slice: int = 0) -> tuple[np.ndarray, int]:
    """Voxel counts per band (BANDS order) of the head component from ``first_slice`` up
    (slice 0 the lowest), and the number of head voxels counted."""
    head = head_component(hu)[first_slice:]
    values = hu[first_slice:][head]
    return np.array([int(b.contains(values).sum()) for b in BANDS]), int(values.size)


def shares(counts: np.ndarray, total: int) -> list[float]:
    """Percent of head voxels per band."""
    return [100.0 * float(c) / max(total, 1) for c in counts]


def table_lines(rows: list[tuple[str, list[float]]]) -> list[str]:
    """A plain-text table: the real head's ranges, then each (label, shares) row, with the
    worst distance (points) outside the real range."""
    names = ("<0", "0-100", "100-400", ">400", ">1000")
    head = f"{'':<34}" + "".join(f"{n:>9}" for n in names) + f"{'worst off':>11}"
    real = f"{'real head CT':<34}" + "".join(
        f"{(f'{b.real_lo:g}' if b.real_lo == b.real_hi else f'{b.real_lo:g}-{b.real_hi:g}'):>9}"
        for b in BANDS)
    out = [head, real]
    for label, s in rows:
        worst = max(b.off_by(v) for b, v in zip(BANDS, s, strict=True))
        out.append(f"{label:<34}" + "".join(f"{v:>9.1f}" for v in s) + f"{worst:>11.1f}")
    return out
