"""QC flags of a quantified series: short, stable strings written into the output tables.

A flag never changes a number; it says which series a person should look at. Never rename
a flag's value (users filter by it); add new ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

import numpy as np

from cohort.anatomy import LANDMARK_KINDS, LANDMARKS, SIDES
from cohort.quantify.boundaries import in_order, side_landmarks
from cohort.quantify.config import QuantifyConfig
from cohort.quantify.summary import CalciumSummary


class QCFlag(StrEnum):
    """Why a quantified series deserves a look. The value is what the tables carry."""

    LOW_LANDMARK_CONFIDENCE = "low_landmark_confidence"  # a probability below the threshold
    LANDMARKS_OUT_OF_ORDER = "landmarks_out_of_order"  # cc <= pl <= ac fails on a side
    LANDMARK_OUTSIDE_SCAN = "landmark_outside_scan"  # a slice index outside 0..n_slices-1
    LEFT_RIGHT_APART = "left_right_landmarks_apart"  # same landmark, sides too far apart
    CALCIUM_ABOVE_CLINOID = "calcium_above_clinoid"  # calcium far above a side's clinoid
    CALCIUM_BELOW_CANAL = "calcium_below_canal"  # calcium far below a side's carotid canal
    # reading repaired the stack: duplicate slices dropped, missing ones interpolated, or
    # uneven spacing resampled (what was done is in the row's error_detail note)
    SLICES_REPAIRED = "slices_repaired"


def low_confidence(probabilities: Mapping[str, float | None] | None,
                   config: QuantifyConfig) -> tuple[str, ...]:
    """Landmarks whose probability is below the threshold (or not a number), in the order
    of `LANDMARKS`; landmarks without a probability are not judged."""
    if not probabilities:
        return ()
    out = []
    for name in LANDMARKS:
        p = probabilities.get(name)
        if p is None:
            continue
        if not np.isfinite(p) or p < config.min_landmark_probability:
            out.append(name)
    return tuple(out)


def qc_flags(summary: CalciumSummary, landmarks: Mapping[str, int],
             low_confidence_landmarks: tuple[str, ...], config: QuantifyConfig) -> tuple[str, ...]:
    """Every flag that applies, in the order of `QCFlag`."""
    raised = set()
    if low_confidence_landmarks:
        raised.add(QCFlag.LOW_LANDMARK_CONFIDENCE)
    spacing = summary.slice_spacing_mm
    for side_code, side in enumerate(SIDES):
        bounds = side_landmarks(landmarks, side)
        if not in_order(bounds):
            raised.add(QCFlag.LANDMARKS_OUT_OF_ORDER)
        if min(bounds) < 0 or max(bounds) >= summary.n_slices:
            raised.add(QCFlag.LANDMARK_OUTSIDE_SCAN)
        calcified = np.flatnonzero(summary.slice_voxels[side_code])
        if len(calcified):
            # the lowest and highest of the three, so that the check needs no order
            if (calcified[-1] - max(bounds)) * spacing > config.max_above_clinoid_mm:
                raised.add(QCFlag.CALCIUM_ABOVE_CLINOID)
            if (min(bounds) - calcified[0]) * spacing > config.max_below_canal_mm:
                raised.add(QCFlag.CALCIUM_BELOW_CANAL)
    for kind in LANDMARK_KINDS:
        gap = abs(landmarks[f"left_{kind}"] - landmarks[f"right_{kind}"]) * spacing
        if gap > config.max_side_gap_mm:
            raised.add(QCFlag.LEFT_RIGHT_APART)
    return tuple(flag.value for flag in QCFlag if flag in raised)
