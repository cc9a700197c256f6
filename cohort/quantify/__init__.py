"""Quantification: landmarks + side + calcium mask -> segment volumes, risk groups, QC flags.

    summary = summarise_calcium(mask, hu, grid, side_of)     # CPU stage, a few KB
    result = quantify(summary, landmarks, QuantifyConfig(), probabilities)
    labels = label_map(mask, grid, landmarks, side_of)        # NIfTI / QC pictures
"""

from cohort.quantify.config import QuantifyConfig
from cohort.quantify.labels import label_map
from cohort.quantify.qc import QCFlag
from cohort.quantify.risk import risk_group, tertile_cutoffs
from cohort.quantify.segments import SegmentResult, SegmentStats, quantify
from cohort.quantify.side import SideFunction, plane_side
from cohort.quantify.summary import CalciumSummary, summarise_calcium

__all__ = [
    "CalciumSummary", "QCFlag", "QuantifyConfig", "SegmentResult", "SegmentStats",
    "SideFunction", "label_map", "plane_side", "quantify", "risk_group", "summarise_calcium",
    "tertile_cutoffs",
]
