"""The coded concepts of cohort's DICOM SEG and SR: what the eight segments are, what is
measured in them, and the landmarks that bound them.

Standard codes where the standard or SNOMED CT has one that was checked (pydicom's
dictionary of the DICOM standard's context groups; SNOMED CT for the cavernous part);
private codes (coding scheme ``99COHORT``, as PS3.16 8.2 allows) for what has none:
the landmark positions and the risk group. Cervical, petrous and supraclinoid parts of the
ICA have no SNOMED CT concept in the standard's context groups: their anatomic region is
the internal carotid artery itself, the part named in the segment label.
"""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from cohort.anatomy import LANDMARK_KINDS, SEGMENT_KINDS, SIDES

PRIVATE_SCHEME = "99COHORT"

#: SEG segmented property category and type: the calcium voxels
MORPHOLOGICALLY_ALTERED_STRUCTURE = Code("49755003", "SCT", "Morphologically Altered Structure")
CALCIFICATION = codes.SCT.PathologicCalcification  # 18115005

INTERNAL_CAROTID_ARTERY = codes.SCT.InternalCarotidArtery  # 86117002
#: the part of the ICA a segment covers, where SNOMED CT has a concept for it
SEGMENT_REGION: dict[str, Code] = {
    "cervical": INTERNAL_CAROTID_ARTERY,
    "petrous": INTERNAL_CAROTID_ARTERY,
    "cavernous": Code("8752000", "SCT", "Cavernous portion of internal carotid artery"),
    "supraclinoid": INTERNAL_CAROTID_ARTERY,
}
LATERALITY: dict[str, Code] = {"right": codes.SCT.Right, "left": codes.SCT.Left}
BILATERAL = codes.SCT.Bilateral

#: SR measurements of a segment
CALCIUM_VOLUME = codes.DCM.VolumeOfVascularCalcification  # 112197
PLAQUE_COUNT = codes.DCM.NumberOfCalcifications  # 111038
PEAK_HU = codes.DCM.AttenuationCoefficient  # 112031, with derivation Maximum
MAXIMUM = codes.SCT.Maximum
MM3 = Code("mm3", "UCUM", "cubic millimeter")
MM = Code("mm", "UCUM", "millimeter")
HU = codes.UCUM.HounsfieldUnit
NO_UNITS = Code("1", "UCUM", "no units")

RISK_GROUP = Code("RISK-GROUP", PRIVATE_SCHEME, "ICAC risk group")


def risk_group(name: str) -> Code:
    """The coded value of a risk group (the run's own names, e.g. ``moderate``)."""
    return Code(name.upper()[:16], PRIVATE_SCHEME, f"ICAC risk group {name}")


_LANDMARK_SHORT = {"carotid_canal": "CC", "petrolingual": "PL", "anterior_clinoid": "AC"}
_LANDMARK_TEXT = {"carotid_canal": "carotid canal", "petrolingual": "petrolingual ligament",
                  "anterior_clinoid": "anterior clinoid"}


def landmark_slice(kind: str) -> Code:
    """The landmark's acquired slice index (0 = most inferior), as in the series table."""
    return Code(f"{_LANDMARK_SHORT[kind]}-SLICE", PRIVATE_SCHEME,
                f"{_LANDMARK_TEXT[kind]} landmark slice")


def landmark_z(kind: str) -> Code:
    """The landmark's world z (mm, LPS superior axis), as in the series table."""
    return Code(f"{_LANDMARK_SHORT[kind]}-Z", PRIVATE_SCHEME,
                f"{_LANDMARK_TEXT[kind]} landmark z")


#: the landmark at the proximal (inferior) boundary of each segment (`cohort.anatomy`: a
#: slice on a landmark belongs to the distal segment); the cervical segment has none
BOUNDARY_LANDMARK: dict[str, str | None] = dict(
    zip(SEGMENT_KINDS, (None, *LANDMARK_KINDS), strict=True))


def segment_label_text(side: str, kind: str) -> str:
    """The SEG's SegmentLabel of a segment (LO, at most 64 characters)."""
    if side not in SIDES or kind not in SEGMENT_KINDS:
        raise ValueError(f"unknown segment {side} {kind}; expected a side of {SIDES} and a "
                         f"kind of {SEGMENT_KINDS}")
    return f"{side} {kind} ICA calcium"
