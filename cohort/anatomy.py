"""The vocabulary of the method: sides, landmarks, segments, label codes, the boundary rule,
and the calcium annotation rule (`CALCIUM_HU`).

One place for the names every stage shares (generator, quantification, output tables).

Slice indices count from the most inferior slice (index 0) upward, i.e. in order of
increasing z along the patient's superior axis (LPS), whatever order the files came in.

Boundary rule: a slice exactly on a landmark belongs to the *distal* (superior) segment.
So for one side with landmark slices ``cc <= pl <= ac``:

    cervical      k <  cc
    petrous       cc <= k < pl
    cavernous     pl <= k < ac
    supraclinoid  k >= ac
"""

from __future__ import annotations

import numpy as np

#: the annotation rule of the second paper: calcium is the voxels >= 130 HU inside a circle an
#: annotator draws around it (single voxels discarded); the generator's truth, the
#: segmenter's candidate gate and the threshold baseline all use it
CALCIUM_HU = 130.0
SIDES: tuple[str, ...] = ("right", "left")
LANDMARK_KINDS: tuple[str, ...] = ("carotid_canal", "petrolingual", "anterior_clinoid")
SEGMENT_KINDS: tuple[str, ...] = ("cervical", "petrous", "cavernous", "supraclinoid")

#: the six landmarks, in the order the model's localization head emits them
LANDMARKS: tuple[str, ...] = tuple(f"{s}_{k}" for s in SIDES for k in LANDMARK_KINDS)
#: the eight segments; label code = 1 + position in this tuple (0 is background)
SEGMENTS: tuple[str, ...] = tuple(f"{s}_{k}" for s in SIDES for k in SEGMENT_KINDS)
SEGMENT_LABELS: dict[str, int] = {name: i + 1 for i, name in enumerate(SEGMENTS)}


def side_sign(side: str) -> int:
    """+1 for the patient's left (LPS +x), -1 for the right."""
    if side not in SIDES:
        raise ValueError(f"unknown side {side!r}; expected one of {SIDES}")
    return 1 if side == "left" else -1


def segment_of_slices(slices: np.ndarray, cc: int, pl: int, ac: int) -> np.ndarray:
    """Segment index (0 cervical .. 3 supraclinoid) of each slice index, for one side.

    Uses the distal boundary rule of this module. Landmarks must be in anatomical order.
    """
    if not cc <= pl <= ac:
        raise ValueError(f"landmarks out of anatomical order: carotid canal {cc}, "
                         f"petrolingual {pl}, anterior clinoid {ac}")
    k = np.asarray(slices)
    return (k >= cc).astype(np.int8) + (k >= pl) + (k >= ac)


def segment_label(side: str, segment_index: np.ndarray) -> np.ndarray:
    """Label codes (1..8) for segment indices (0..3) on one side."""
    offset = SIDES.index(side) * len(SEGMENT_KINDS)
    return (np.asarray(segment_index) + 1 + offset).astype(np.uint8)
