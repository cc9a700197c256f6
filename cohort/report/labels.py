"""Words for the codes the tables carry: exclusion reasons, QC flags, landmarks, segments.

The codes stay visible beside the words (they are what one filters by in `cohort query`);
a code without words here is shown as it is.
"""

from __future__ import annotations

from cohort.errors import ErrorCode
from cohort.quantify.qc import QCFlag
from cohort.report.attrition import NO_MASK

E = ErrorCode
REASONS: dict[str, str] = {
    E.NOT_DICOM: "not DICOM", E.DICOMDIR: "DICOMDIR (media directory)",
    E.NOT_IMAGE: "DICOM without pixels (report, state)", E.TRUNCATED: "truncated file",
    E.UNREADABLE_HEADER: "unreadable header", E.NO_PIXEL_DATA: "no pixel data",
    E.UNSUPPORTED_COMPRESSION: "vendor-private compression", E.IO_ERROR: "storage error",
    E.NOT_CT: "not CT", E.LOCALIZER: "localizer (scout)",
    E.DERIVED: "derived / secondary capture", E.COLOR: "colour images",
    E.MULTIFRAME: "enhanced multi-frame", E.NOT_AXIAL: "not axial",
    E.TOO_FEW_SLICES: "too few slices", E.MISSING_SLICES: "missing slices",
    E.DUPLICATE_SLICES: "conflicting duplicate slices",
    E.MIXED_ORIENTATION: "mixed orientation", E.INCONSISTENT_GEOMETRY: "inconsistent geometry",
    E.SIZE_MISMATCH: "image size mismatch",
    E.UNSUPPORTED_TRANSFER_SYNTAX: "unsupported transfer syntax",
    E.DECODE_FAILED: "pixels could not be decoded", E.DECODER_CRASHED: "decoder crashed",
    E.TIMEOUT: "time limit exceeded", E.OVERSIZED: "larger than the limit",
    E.NO_SKULL: "no skull found", E.INVALID_NIFTI: "calcium mask unreadable",
    E.MASK_MISMATCH: "calcium mask on another grid", E.MASK_MISSING: "calcium mask missing",
    E.PROCESSING_FAILED: "unexpected failure (a bug)",
    "not_preferred": "another series of the study preferred",
    NO_MASK: "no calcium mask asked for (landmarks only)",
}

FLAGS: dict[str, str] = {
    QCFlag.LOW_LANDMARK_CONFIDENCE: "a landmark's probability is below the model's threshold",
    QCFlag.LANDMARKS_OUT_OF_ORDER: "landmarks of a side out of anatomical order",
    QCFlag.LANDMARK_OUTSIDE_SCAN: "a landmark outside the scanned slices",
    QCFlag.LEFT_RIGHT_APART: "left and right landmarks of a kind far apart",
    QCFlag.CALCIUM_ABOVE_CLINOID: "calcium far above the anterior clinoid",
    QCFlag.CALCIUM_BELOW_CANAL: "calcium far below the carotid canal",
    QCFlag.SLICES_REPAIRED: "duplicate or missing slices repaired on reading",
    QCFlag.SPARSE_SLICES: "slices further apart than their thickness",
    QCFlag.MASK_PROBLEM: "calcium mask missing or unusable",
    QCFlag.LANDMARK_GAP_IMPLAUSIBLE: "two landmarks of a side implausibly close or far",
    QCFlag.CALCIUM_AT_CROP_EDGE: "calcium at the segmenter's crop edge (volume a lower bound)",
    QCFlag.SEGMENTER_UNTRAINED_SPACING: "pixels the segmenter never learned from (volumes "
                                        "may be far off)",
}

KINDS: dict[str, str] = {
    "carotid_canal": "carotid canal", "petrolingual": "petrolingual ligament",
    "anterior_clinoid": "anterior clinoid",
    "cervical": "cervical", "petrous": "petrous", "cavernous": "cavernous",
    "supraclinoid": "supraclinoid",
}
SHORT: dict[str, str] = {"carotid_canal": "CC", "petrolingual": "PL", "anterior_clinoid": "AC"}


def reason(code: str) -> str:
    """Words for an exclusion code (the code itself when there are none)."""
    return REASONS.get(code, code.replace("_", " "))


def flag(code: str) -> str:
    return FLAGS.get(code, code.replace("_", " "))


def kind(code: str) -> str:
    return KINDS.get(code, code.replace("_", " "))
