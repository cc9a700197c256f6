"""QC flags of a quantified series: short, stable strings written into the output tables.

A flag never changes a number; it says which series a person should look at. Never rename
a flag's value (users filter by it); add new ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

from cohort.anatomy import LANDMARK_KINDS, LANDMARKS, SIDES
from cohort.quantify.boundaries import in_order, side_landmarks
from cohort.quantify.config import FALLBACK_MIN_LANDMARK_PROBABILITY, QuantifyConfig
from cohort.quantify.summary import CalciumSummary


class QCFlag(StrEnum):
    """Why a quantified series deserves a look. The value is what the tables carry."""

    LOW_LANDMARK_CONFIDENCE = "low_landmark_confidence"  # a probability below the threshold
    # cc <= pl <= ac fails on a side: in the landmarks given, or in the model's own most
    # probable slices (the job then reports the most probable ordered ones and lists the
    # landmarks it moved as low confidence)
    LANDMARKS_OUT_OF_ORDER = "landmarks_out_of_order"
    LANDMARK_OUTSIDE_SCAN = "landmark_outside_scan"  # a slice index outside 0..n_slices-1
    # same landmark, sides too far apart: both are listed as low confidence
    LEFT_RIGHT_APART = "left_right_landmarks_apart"
    CALCIUM_ABOVE_CLINOID = "calcium_above_clinoid"  # calcium far above a side's clinoid
    CALCIUM_BELOW_CANAL = "calcium_below_canal"  # calcium far below a side's carotid canal
    # reading repaired the stack: duplicate slices dropped, missing ones interpolated, or
    # uneven spacing resampled (what was done is in the row's error_detail note)
    SLICES_REPAIRED = "slices_repaired"
    # the slice step is well above the slice thickness: part of the head was never imaged
    # (slices missing from the archive, e.g. every second one, or a sparse protocol)
    SPARSE_SLICES = "sparse_slices"
    # the calcium mask is missing or unusable: landmarks kept, segment volumes not computed
    # (the mask_* code and why are in error_code / error_detail)
    MASK_PROBLEM = "mask_problem"
    # consecutive landmarks of a side closer or farther apart than any anatomy
    # (QuantifyConfig.landmark_gap_mm): one of them is misplaced; both are listed as low
    # confidence, so a landmark far from the anatomy it names is flagged even when the
    # model was sure of it
    LANDMARK_GAP_IMPLAUSIBLE = "landmark_gap_implausible"
    # the calcium segmenter found calcium on an inner face of its arterial crop: the plaque
    # may go on outside the crop, where nothing is measured (volumes are then a lower bound)
    CALCIUM_AT_CROP_EDGE = "calcium_at_crop_edge"
    # the series' in-plane pixels lie outside the range the calcium segmenter was trained
    # on (with a margin): its volumes may be far off (on 0.9 mm pixels, the shipped one
    # trained on 0.4-0.5 mm overcalled tenfold)
    SEGMENTER_UNTRAINED_SPACING = "segmenter_untrained_spacing"


#: where a row's low-confidence threshold came from (``with_model_threshold``)
THRESHOLD_SOURCES = ("config", "model", "fallback")


def with_model_threshold(config: QuantifyConfig, model_threshold: float | None
                         ) -> tuple[QuantifyConfig, str]:
    """``config`` with the low-confidence threshold that applies to a series, and its source.

    Args:
        config: its ``min_landmark_probability``, when set, wins for every model.
        model_threshold: the model's own threshold (the row's ``confidence_threshold``, from
            its checkpoint); None or NaN when the checkpoint carries none.

    Returns:
        The config with ``min_landmark_probability`` set, and ``"config"``, ``"model"`` or
        ``"fallback"`` (neither: ``FALLBACK_MIN_LANDMARK_PROBABILITY``).
    """
    if config.min_landmark_probability is not None:
        return config, "config"
    if model_threshold is not None and np.isfinite(model_threshold):
        return replace(config, min_landmark_probability=float(model_threshold)), "model"
    return replace(config, min_landmark_probability=FALLBACK_MIN_LANDMARK_PROBABILITY), "fallback"


def low_confidence(probabilities: Mapping[str, float | None] | None,
                   config: QuantifyConfig) -> tuple[str, ...]:
    """Landmarks whose probability is below the threshold (or not a number), in the order
    of `LANDMARKS`; landmarks without a probability are not judged. The threshold is
    ``config.min_landmark_probability``, or the fallback when it is None (pass the config
    through ``with_model_threshold`` to use the model's own)."""
    if not probabilities:
        return ()
    threshold = config.min_landmark_probability
    if threshold is None:
        threshold = FALLBACK_MIN_LANDMARK_PROBABILITY
    out = []
    for name in LANDMARKS:
        p = probabilities.get(name)
        if p is None:
            continue
        if not np.isfinite(p) or p < threshold:
            out.append(name)
    return tuple(out)


def implausible_landmarks(landmarks: Mapping[str, int], spacing_mm: float,
                          config: QuantifyConfig) -> tuple[str, ...]:
    """Landmarks in a pair of consecutive landmarks of one side (canal -> petrolingual,
    petrolingual -> clinoid) whose distance along the slice normal lies outside
    ``config.landmark_gap_mm`` widened by one slice step (a landmark may sit a slice off
    either way), in the order of `LANDMARKS`. The pair is judged on its sorted slices, so
    landmarks merely out of order are left to that flag."""
    lo, hi = config.landmark_gap_mm
    out: set[str] = set()
    for side in SIDES:
        names = [f"{side}_{kind}" for kind in LANDMARK_KINDS]
        order = sorted(names, key=lambda n: landmarks[n])
        for a, b in zip(order, order[1:], strict=False):
            gap = (landmarks[b] - landmarks[a]) * spacing_mm
            if gap < lo - spacing_mm or gap > hi + spacing_mm:
                out.update((a, b))
    return tuple(n for n in LANDMARKS if n in out)


def apart_landmarks(landmarks: Mapping[str, int], spacing_mm: float,
                    config: QuantifyConfig) -> tuple[str, ...]:
    """Both sides' landmarks of each kind whose left and right lie farther apart than
    ``config.max_side_gap_mm`` (one of the two is misplaced; which, the geometry cannot
    say), in the order of `LANDMARKS`."""
    out: set[str] = set()
    for kind in LANDMARK_KINDS:
        if abs(landmarks[f"left_{kind}"] - landmarks[f"right_{kind}"]) * spacing_mm > \
                config.max_side_gap_mm:
            out.update((f"left_{kind}", f"right_{kind}"))
    return tuple(n for n in LANDMARKS if n in out)


def qc_flags(summary: CalciumSummary, landmarks: Mapping[str, int],
             low_confidence_landmarks: tuple[str, ...], config: QuantifyConfig) -> tuple[str, ...]:
    """Every flag that applies, in the order of `QCFlag`."""
    raised = set()
    if low_confidence_landmarks:
        raised.add(QCFlag.LOW_LANDMARK_CONFIDENCE)
    spacing = summary.slice_spacing_mm
    if implausible_landmarks(landmarks, spacing, config):
        raised.add(QCFlag.LANDMARK_GAP_IMPLAUSIBLE)
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
    if apart_landmarks(landmarks, spacing, config):
        raised.add(QCFlag.LEFT_RIGHT_APART)
    return tuple(flag.value for flag in QCFlag if flag in raised)


def flag_reordered(values: dict, reordered: str | None) -> dict:
    """A series row's ``qc_flags`` and ``low_confidence_landmarks`` (lists, as
    `cohort.quantify.segments` writes them) when decoding had to move the landmarks named
    in ``reordered`` (comma-separated, `cohort.job.landmarks`) to keep anatomical order:
    those landmarks count as low confidence and the series is flagged out of order."""
    # tables give None or NaN where nothing moved
    moved = [n for n in reordered.split(",") if n] if isinstance(reordered, str) else []
    if not moved:
        return values
    low = set(values.get("low_confidence_landmarks") or ()) | set(moved)
    flags = set(values.get("qc_flags") or ()) | {QCFlag.LANDMARKS_OUT_OF_ORDER.value,
                                                 QCFlag.LOW_LANDMARK_CONFIDENCE.value}
    return {**values, "low_confidence_landmarks": [n for n in LANDMARKS if n in low],
            "qc_flags": [f.value for f in QCFlag if f.value in flags] +
            [f for f in values.get("qc_flags") or () if f not in {q.value for q in QCFlag}]}


@dataclass(frozen=True)
class FlagSummary:
    """How many quantified series were flagged, and why (for a run's summary)."""

    series: int  # rows with status "ok"
    flagged: int  # of them, with at least one flag
    by_flag: dict[str, int]  # series per flag: every QCFlag (0 too), then any other value seen
    low_confidence_by_landmark: dict[str, int]  # series per landmark of LANDMARKS found low
    threshold_sources: dict[str, int]  # series per source of their confidence threshold

    def lines(self) -> list[str]:
        """Plain text: the flagged count, then one line per flag raised."""
        out = [f"QC: {self.flagged} of {self.series} quantified series flagged"]
        for flag, n in self.by_flag.items():
            if not n:
                continue
            line = f"  {flag}: {n}"
            if flag == QCFlag.LOW_LANDMARK_CONFIDENCE:
                line += " (" + ", ".join(f"{name} {k}" for name, k in
                                         self.low_confidence_by_landmark.items() if k) + ")"
            out.append(line)
        if self.threshold_sources:
            out.append("  confidence threshold from: " + ", ".join(
                f"{source} {n}" for source, n in self.threshold_sources.items()))
        return out


class FlagCounter:
    """`summarise_flags` one row at a time, in constant memory (a run of 100,000 series
    adds its rows as they arrive)."""

    def __init__(self) -> None:
        self.series = self.flagged = 0
        self.by_flag = {flag.value: 0 for flag in QCFlag}
        self.by_landmark = dict.fromkeys(LANDMARKS, 0)
        self.sources: dict[str, int] = {}

    def add(self, row: Mapping) -> None:
        if row.get("status", "ok") != "ok":
            return
        self.series += 1
        flags = _as_list(row.get("qc_flags"))
        self.flagged += bool(flags)
        for flag in dict.fromkeys(flags):  # a flag listed twice counts once per series
            self.by_flag[flag] = self.by_flag.get(flag, 0) + 1
        for name in dict.fromkeys(_as_list(row.get("low_confidence_landmarks"))):
            self.by_landmark[name] = self.by_landmark.get(name, 0) + 1
        source = row.get("confidence_threshold_source")
        if isinstance(source, str):
            self.sources[source] = self.sources.get(source, 0) + 1

    def summary(self) -> FlagSummary:
        return FlagSummary(series=self.series, flagged=self.flagged, by_flag=dict(self.by_flag),
                           low_confidence_by_landmark=dict(self.by_landmark),
                           threshold_sources=dict(self.sources))


def summarise_flags(rows: Iterable[Mapping]) -> FlagSummary:
    """Count, over output rows with status "ok", the series flagged and the series per flag,
    per low-confidence landmark and per source of the confidence threshold
    (``confidence_threshold_source``, where the rows carry it)."""
    counter = FlagCounter()
    for row in rows:
        counter.add(row)
    return counter.summary()


def _as_list(value) -> list:
    """A list column's value as a list: tables give lists or arrays, and None or NaN for
    a missing one."""
    if value is None or isinstance(value, float):
        return []
    return [str(v) for v in value]
