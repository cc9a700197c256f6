"""Fitting a checkpoint's landmark decoding (`cohort.model.decoding.LandmarkDecoding`) on
held-out scans: location offsets, and whether mirroring, offsets and the median rule help.

Location calibration is to *where* a distribution sits what temperature scaling is to how
wide it is. The model reads depth by slice index, not millimetres, so it cannot know a
scan's slice spacing except from how fast the anatomy changes; on synthetic scans it puts
some landmarks a fraction of a millimetre high or low, and by how much depends on the
spacing (thin slices most). Per band of slice spacing (`cohort.model.decoding.SPACING_BANDS`)
and landmark, the offset is the median, over held-out scans, of (expected slice - true
slice) x spacing: a median, so one wild scan does not move it; a band with fewer than
`MIN_SCANS_PER_BAND` scans gets none.

Whether the fitted decoding is kept is decided out of sample: the scans are split in two by
patient, each half's offsets are fitted on the other half, and the decoding is kept only if
its MAE in slices on those held-out halves is lower than the paper's (plain pass, no
offsets, most probable slices). The threshold of the ``low_landmark_confidence`` flag is then
fitted on all the scans, on the slices the kept decoding reports.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cohort.anatomy import LANDMARKS
from cohort.model.calibration import apply_temperatures
from cohort.model.decoding import (
    SPACING_BANDS,
    LandmarkDecoding,
    combine,
    ordered_slices,
    spacing_band,
)
from cohort.train.calibration import ConfidenceThreshold, fit_confidence_threshold

logger = logging.getLogger(__name__)

MIN_SCANS_PER_BAND = 5


def fit_location_offsets(probabilities_list: Sequence[np.ndarray], true_slices,
                         spacings_mm: Sequence[float],
                         min_scans: int = MIN_SCANS_PER_BAND) -> dict[str, dict[str, float]]:
    """Band -> landmark -> median of (expected slice - true slice) x spacing, in mm.

    Args:
        probabilities_list: per scan, (landmarks, depth) distributions (as decoded, before
            any offset).
        true_slices: (scans, landmarks) true slice indices.
        spacings_mm: per scan, the slice spacing of its model input.
        min_scans: bands with fewer scans get no entry (no offset).
    """
    true = np.asarray(true_slices, dtype=np.float64)
    if true.shape != (len(probabilities_list), len(LANDMARKS)) or len(spacings_mm) != len(true):
        raise ValueError(f"need one (landmarks, depth) array, one row of {len(LANDMARKS)} true "
                         f"slices and one spacing per scan; got {len(probabilities_list)}, "
                         f"{true.shape}, {len(spacings_mm)}")
    errors: dict[str, list[np.ndarray]] = {}
    for p, t, sp in zip(probabilities_list, true, spacings_mm, strict=True):
        p = np.asarray(p, dtype=np.float64)
        expected = (p * np.arange(p.shape[1])).sum(axis=1) / p.sum(axis=1)
        errors.setdefault(spacing_band(sp), []).append((expected - t) * float(sp))
    return {band: {n: float(v) for n, v in zip(LANDMARKS, np.median(errors[band], axis=0),
                                                strict=True)}
            for band in SPACING_BANDS if len(errors.get(band, ())) >= min_scans}


@dataclass(frozen=True)
class DecodingFit:
    """A fitted decoding, the threshold fitted on its slices, and the evidence."""

    decoding: LandmarkDecoding
    threshold: ConfidenceThreshold
    kept: bool  # the candidate beat the paper's decoding out of sample
    held_out_mae: dict[str, float]  # "paper" and "candidate": MAE (slices), cross-fitted
    held_out_acc: dict[str, float]  # the same for Acc(tau=1)
    scans: int

    def to_metadata(self) -> dict:
        return {**self.decoding.to_metadata(), "kept": self.kept, "scans": self.scans,
                "held_out_mae": self.held_out_mae, "held_out_acc": self.held_out_acc}


def decode_all(plain: Sequence[np.ndarray], mirrored: Sequence[np.ndarray | None],
               spacings_mm: Sequence[float], decoding: LandmarkDecoding
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """Per scan the distributions a decoding chooses from, and (scans, landmarks) slices."""
    probs = [combine(p, m, sp, decoding)
             for p, m, sp in zip(plain, mirrored, spacings_mm, strict=True)]
    return probs, np.stack([ordered_slices(p, decoding.rule)[0] for p in probs])


def fit_decoding(logits: Sequence[np.ndarray], mirrored_logits: Sequence[np.ndarray],
                 true_slices, spacings_mm: Sequence[float], groups: Sequence[str],
                 temperatures, *, fitted_on: str, mirror: bool = True, rule: str = "median"
                 ) -> DecodingFit:
    """Fit (see module) a decoding with ``mirror`` and ``rule`` on held-out scans.

    Args:
        logits, mirrored_logits: per scan (landmarks, depth), the plain pass and the mirrored
            one with its rows back in `LANDMARKS` order.
        groups: per scan its patient (the two halves never share one).
        temperatures: the checkpoint's, applied before anything else.
    """
    true = np.asarray(true_slices, dtype=np.int64)
    plain = [apply_temperatures(lg, temperatures) for lg in logits]
    mirr = [apply_temperatures(lg, temperatures) for lg in mirrored_logits]
    spacings = [float(s) for s in spacings_mm]
    base = LandmarkDecoding(mirror=mirror, rule=rule)
    # out of sample: each half of the patients gets the offsets of the other half
    patients = sorted(set(groups))
    half = {g: i % 2 for i, g in enumerate(patients)}
    side = np.array([half[g] for g in groups])
    candidate_err = np.zeros(true.shape)
    for h in (0, 1):
        fit = side != h
        probs, _ = decode_all([plain[i] for i in np.flatnonzero(fit)],
                              [mirr[i] for i in np.flatnonzero(fit)],
                              [spacings[i] for i in np.flatnonzero(fit)], base)
        offsets = fit_location_offsets(probs, true[fit], [spacings[i] for i in
                                                          np.flatnonzero(fit)])
        held = np.flatnonzero(~fit)
        _, chosen = decode_all([plain[i] for i in held], [mirr[i] for i in held],
                               [spacings[i] for i in held],
                               LandmarkDecoding(mirror=mirror, rule=rule, offsets_mm=offsets))
        candidate_err[held] = np.abs(chosen - true[held])
    _, paper = decode_all(plain, [None] * len(plain), spacings, LandmarkDecoding())
    paper_err = np.abs(paper - true)
    mae = {"paper": float(paper_err.mean()), "candidate": float(candidate_err.mean())}
    acc = {"paper": float((paper_err <= 1).mean()), "candidate": float((candidate_err <= 1).mean())}
    kept = mae["candidate"] < mae["paper"]
    if kept:
        probs, _ = decode_all(plain, mirr, spacings, base)
        decoding = LandmarkDecoding(mirror=mirror, rule=rule, fitted_on=fitted_on,
                                    offsets_mm=fit_location_offsets(probs, true, spacings))
    else:
        decoding = LandmarkDecoding(fitted_on=fitted_on)
    probs, chosen = decode_all(plain, mirr, spacings, decoding)
    threshold = fit_confidence_threshold(probs, true, confidence="within_1_slice",
                                         criterion="flagged_mostly_wrong", chosen_slices=chosen)
    logger.info("decoding on %d held-out scans: MAE %.3f (paper) -> %.3f (mirror=%s, offsets, "
                "%s), cross-fitted; %s", len(true), mae["paper"], mae["candidate"], mirror, rule,
                "kept" if kept else "not kept")
    return DecodingFit(decoding=decoding, threshold=threshold, kept=kept, held_out_mae=mae,
                       held_out_acc=acc, scans=len(true))
