"""What a checkpoint carries to calibrate its landmark probabilities at inference, read and
written here so that inference and training both reach it without one importing the other:
one temperature per landmark (temperature scaling, fitted on the validation split of the
fold; see `cohort.train.calibration`) and the confidence threshold of the
``low_landmark_confidence`` QC flag. Everything is plain Python values, so a checkpoint's
metadata stays loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.special import softmax

from cohort.anatomy import LANDMARKS
from cohort.errors import ConfigError


def apply_temperatures(logits: np.ndarray, temperatures) -> np.ndarray:
    """Calibrated probabilities of one scan: softmax over slices of logits / T.

    Args:
        logits: (landmarks, depth) logits of one scan.
        temperatures: (landmarks,) temperatures, or one for all landmarks.

    Returns:
        (landmarks, depth) float64 probabilities; each row sums to 1.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must have shape (landmarks, depth), got {z.shape}")
    temps = checked_temperatures(temperatures, z.shape[0])
    return softmax(z / temps[:, None], axis=1)


def temperatures_to_metadata(temperatures, names: Sequence[str] = LANDMARKS) -> dict[str, float]:
    """``{landmark: T}`` of plain floats, for a checkpoint's metadata."""
    temps = checked_temperatures(temperatures, len(names))
    return {name: float(t) for name, t in zip(names, temps, strict=True)}


def temperatures_from_metadata(metadata: Mapping[str, float],
                               names: Sequence[str] = LANDMARKS) -> np.ndarray:
    """The (landmarks,) temperatures stored by ``temperatures_to_metadata``.

    Raises:
        ValueError: a landmark is missing or a temperature is not a positive number.
    """
    missing = [n for n in names if n not in metadata]
    if missing:
        raise ValueError(f"checkpoint metadata lacks temperatures for {missing}; refit them "
                         "with fit_temperatures on the validation split")
    return checked_temperatures([metadata[n] for n in names], len(names))


def threshold_from_metadata(metadata: Mapping | None) -> float | None:
    """The threshold stored by ``ConfidenceThreshold.to_metadata``, or None when a checkpoint
    carries none (written before thresholds were fitted).

    Raises:
        ConfigError: the entry has no value in [0, 1] (a checkpoint edited by hand).
    """
    if metadata is None:
        return None
    value = metadata.get("value") if isinstance(metadata, Mapping) else None
    if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"checkpoint metadata holds a confidence threshold without a value in "
                         f"0-1: {metadata!r}; refit it with fit_confidence_threshold on the "
                         "validation split")
    return float(value)


#: what a landmark's probability (``<landmark>_prob``) measures, as a checkpoint's confidence
#: threshold names it: ``top1``, the probability of the reported slice (checkpoints of before
#: Gaussian targets); ``within_1_slice``, the probability that the true slice lies within one
#: slice of the reported one, i.e. that the landmark is right by Acc(tau=1)
CONFIDENCE_MEASURES = ("top1", "within_1_slice")


def confidence_measure(threshold_metadata: Mapping | None) -> str:
    """The measure a checkpoint's threshold was fitted on (``top1`` when it does not say)."""
    measure = (threshold_metadata or {}).get("confidence", "top1")
    if measure not in CONFIDENCE_MEASURES:
        raise ConfigError(f"checkpoint confidence threshold measures {measure!r}; this version "
                          f"knows {', '.join(CONFIDENCE_MEASURES)}")
    return measure


def landmark_confidence(probabilities: np.ndarray, slices, measure: str = "top1") -> np.ndarray:
    """(landmarks,) confidence of the chosen ``slices`` of one scan's (landmarks, depth)
    probabilities, by ``measure`` (see `CONFIDENCE_MEASURES`)."""
    p = np.asarray(probabilities, dtype=np.float64)
    k = np.asarray(slices, dtype=np.int64)
    if measure == "top1":
        return p[np.arange(len(k)), k]
    if measure == "within_1_slice":
        c = np.cumsum(np.pad(p, ((0, 0), (1, 0))), axis=1)  # c[:, j] = sum p[:, :j]
        hi = np.minimum(k + 2, p.shape[1])
        lo = np.maximum(k - 1, 0)
        return c[np.arange(len(k)), hi] - c[np.arange(len(k)), lo]
    raise ValueError(f"unknown confidence measure {measure!r}; choose from "
                     f"{', '.join(CONFIDENCE_MEASURES)}")


def checked_temperatures(temperatures, n_marks: int) -> np.ndarray:
    """(landmarks,) float64 temperatures; a single value is used for every landmark."""
    temps = np.asarray(temperatures, dtype=np.float64).reshape(-1)
    if temps.size == 1:
        temps = np.full(n_marks, temps[0])
    if temps.size != n_marks:
        raise ValueError(f"give one temperature per landmark ({n_marks}) or one for all, got "
                         f"{temps.size}")
    if not (np.isfinite(temps) & (temps > 0)).all():
        raise ValueError(f"temperatures must be finite and > 0, got {temps.tolist()}")
    return temps
