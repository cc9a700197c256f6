"""`quantify`: landmarks + a calcium summary -> eight segment volumes, risk group, QC flags.

Every number is a sum over the summary's per-slice counts between landmark slices, with
the distal boundary rule of `cohort.anatomy.segment_of_slices` (a slice on a landmark
belongs to the segment above it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cohort.anatomy import LANDMARKS, SEGMENT_KINDS, SEGMENTS, SIDES, segment_of_slices
from cohort.quantify.boundaries import usable_bounds, validate_landmarks
from cohort.quantify.config import QuantifyConfig
from cohort.quantify.qc import (
    apart_landmarks,
    implausible_landmarks,
    low_confidence,
    qc_flags,
)
from cohort.quantify.risk import risk_group
from cohort.quantify.summary import CalciumSummary


@dataclass(frozen=True)
class SegmentStats:
    """Calcium in one segment.

    ``plaques`` counts plaque pieces with at least one voxel in the segment: a plaque that
    crosses a landmark counts in *each* segment it touches, so the eight counts may add up
    to more than `SegmentResult.n_plaques`.
    """

    voxels: int
    volume_mm3: float
    plaques: int
    peak_hu: float | None  # None without calcium


@dataclass(frozen=True)
class SegmentResult:
    """Segment-specific ICAC of one series.

    ``segments`` maps each name of `cohort.anatomy.SEGMENTS` to its stats, or to None when
    its side's landmarks were out of order under ``QuantifyConfig(out_of_order="omit")``.
    Totals count every calcium voxel and plaque piece, whatever the landmarks.
    """

    segments: dict[str, SegmentStats | None]
    total_voxels: int
    total_mm3: float
    n_plaques: int  # plaque pieces (a plaque crossing the midline is one piece per side)
    risk_group: str
    qc_flags: tuple[str, ...]  # values of cohort.quantify.qc.QCFlag
    low_confidence_landmarks: tuple[str, ...]

    def as_row(self) -> dict:
        """Flat plain values for a table row: ``<segment>_mm3 / _voxels / _plaques /
        _peak_hu`` (None where unknown), totals, risk group, flags as a list."""
        row: dict = {}
        for name in SEGMENTS:
            s = self.segments[name]
            row[f"{name}_mm3"] = None if s is None else s.volume_mm3
            row[f"{name}_voxels"] = None if s is None else s.voxels
            row[f"{name}_plaques"] = None if s is None else s.plaques
            row[f"{name}_peak_hu"] = None if s is None else s.peak_hu
        row.update(total_calcium_mm3=self.total_mm3, total_calcium_voxels=self.total_voxels,
                   n_plaques=self.n_plaques, risk_group=self.risk_group,
                   qc_flags=list(self.qc_flags),
                   low_confidence_landmarks=list(self.low_confidence_landmarks))
        return row


def quantify(summary: CalciumSummary, landmarks: Mapping[str, int],
             config: QuantifyConfig | None = None,
             probabilities: Mapping[str, float | None] | None = None) -> SegmentResult:
    """Segment volumes, plaque counts, peak HU, total volume, risk group and QC flags.

    Args:
        summary: the series' calcium (`summarise_calcium`).
        landmarks: slice index of each of `cohort.anatomy.LANDMARKS`.
        config: thresholds; `QuantifyConfig()` when None.
        probabilities: the model's probability of each landmark slice, for the confidence
            flag; None (or a missing name) skips that check.

    Landmarks out of anatomical order, outside the scan, or far apart between the sides do
    not raise: the result carries a QC flag instead.

    Raises:
        ValueError: a landmark is missing or not a slice index.
    """
    config = config or QuantifyConfig()
    landmarks = validate_landmarks(landmarks)
    odd = set(implausible_landmarks(landmarks, summary.slice_spacing_mm, config)) | set(
        apart_landmarks(landmarks, summary.slice_spacing_mm, config))
    low = tuple(n for n in LANDMARKS if n in set(low_confidence(probabilities, config)) | odd)
    segments: dict[str, SegmentStats | None] = {}
    piece, piece_slice, _ = summary.piece_entries()
    all_slices = np.arange(summary.n_slices)
    for side_code, side in enumerate(SIDES):
        bounds = usable_bounds(landmarks, side, config.out_of_order)
        names = [f"{side}_{kind}" for kind in SEGMENT_KINDS]
        if bounds is None:
            segments.update(dict.fromkeys(names))
            continue
        seg = segment_of_slices(all_slices, *bounds)  # (n_slices,) 0..3
        voxels = summary.slice_voxels[side_code]
        peaks = summary.slice_peak_hu[side_code]
        on_side = summary.piece_side[piece] == side_code
        # (piece, segment) pairs with at least one voxel: a piece counts once per segment
        touched = np.unique(piece[on_side] * 4 + segment_of_slices(piece_slice[on_side], *bounds))
        plaques = np.bincount(touched % 4, minlength=4)
        for g, name in enumerate(names):
            n = int(voxels[seg == g].sum())
            segments[name] = SegmentStats(
                voxels=n, volume_mm3=float(n) * summary.voxel_mm3, plaques=int(plaques[g]),
                peak_hu=float(np.nanmax(peaks[seg == g])) if n else None)
    total = summary.total_voxels
    total_mm3 = float(total) * summary.voxel_mm3
    return SegmentResult(
        segments=segments, total_voxels=total, total_mm3=total_mm3,
        n_plaques=summary.n_pieces,
        risk_group=risk_group(total_mm3, config.risk_thresholds_mm3, config.risk_groups),
        qc_flags=qc_flags(summary, landmarks, low, config),
        low_confidence_landmarks=low)
