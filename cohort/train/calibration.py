"""Temperature scaling of the localization head, and the expected calibration error (ECE).

The head emits, per scan, a (landmarks, depth) array of logits; each landmark's softmax over
the scan's slices is its distribution. Temperature scaling (Guo et al., 2017) divides one
landmark's logits by a scalar T > 0 before the softmax: T > 1 softens an over-confident
head, T < 1 sharpens an under-confident one. The argmax and the ranking of slices do not
change, so MAE, Top-k, Acc(tau=1) and kappa stay as they are; only the probabilities do.

One T per landmark is fitted on the VALIDATION split of a fold (never on its test split),
by minimising the mean negative log-likelihood of the true slice over log T in a bounded
interval. The NLL is convex in 1/T, hence unimodal in log T, so a bounded 1-D search finds
its minimum. Temperatures are plain Python floats (``temperatures_to_metadata``) so that a
checkpoint's metadata stays loadable with ``torch.load(weights_only=True)``.

ECE: the top-1 confidence (probability of the argmax slice) of every scan x landmark pair
falls into one of ``n_bins`` equal-width bins over [0, 1], right-closed ((0, 1/n], ...,
((n-1)/n, 1], as ``sklearn.calibration.calibration_curve`` bins); ECE is the mean over
pairs of |accuracy of its bin - mean confidence of its bin|, i.e.
sum_b |B_b| / N * |acc(B_b) - conf(B_b)|. "Correct" means the argmax is the true slice
(Top-1), with ties broken by the lower slice index as ``np.argmax`` and
``cohort.train.metrics.top_k_hits`` break them.

Confidence threshold (the ``low_landmark_confidence`` QC flag): after the temperatures, on the
same validation split, one threshold on the calibrated top-1 probability is chosen for all
landmarks pooled (temperatures already put the landmarks on one probability scale, and a
validation split of ~10 scans holds too few wrong landmarks to choose one per landmark). A
landmark is "right" when its argmax lies within one slice of the truth (Acc(tau=1): an error
of one slice moves a segment boundary by one slice, which is what the paper counts as a hit),
else "wrong". The threshold maximises Youden's J = TPR - FPR over the ROC curve of
``sklearn.metrics.roc_curve`` (right = positive, score = probability): it weighs a flagged right
landmark and an unflagged wrong one alike, whatever the model's error rate, and it depends
on where both the right and the wrong landmarks lie (a "keep 95% of right landmarks" rule
depends on the right ones only). Ties go to the largest threshold (a flag errs on the side
of a look). A landmark is flagged when its probability is *below* the threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from cohort.anatomy import LANDMARKS
from cohort.model.calibration import (
    apply_temperatures,
    checked_temperatures,
    landmark_confidence,
)
from cohort.train.metrics import OVERALL

logger = logging.getLogger(__name__)

REPORT_COLUMNS = ("landmark", "n", "temperature", "nll_before", "nll_after",
                  "ece_before", "ece_after")


@dataclass(frozen=True)
class CalibrationConfig:
    """How temperatures are searched."""

    t_min: float = 0.05  # smallest temperature tried (20x sharper than the raw head)
    t_max: float = 50.0  # largest temperature tried (50x softer)
    xatol: float = 1e-6  # absolute tolerance of the search on log T

    def __post_init__(self) -> None:
        if not 0 < self.t_min < 1 < self.t_max < np.inf:
            raise ValueError(f"temperature bounds must satisfy 0 < t_min < 1 < t_max, got "
                             f"t_min={self.t_min}, t_max={self.t_max}")


# --- fitting ---------------------------------------------------------------------------------

def fit_shared_temperature(logits_list: Sequence[np.ndarray], true_slices,
                           config: CalibrationConfig = CalibrationConfig(),
                           names: Sequence[str] = LANDMARKS) -> np.ndarray:
    """One temperature for all landmarks (minimising their pooled NLL), as (landmarks,)
    equal values: one parameter instead of six, for validation splits of a few dozen scans,
    on which per-landmark temperatures overfit (measured: 0.26-1.51 on 30 scans, worse test
    NLL; docs/landmarks.md)."""
    padded, true = _padded_logits(logits_list, true_slices, names)
    if np.isfinite(padded).sum(axis=2).max() < 2:
        return np.ones(len(names))

    def pooled(log_t):
        return sum(_nll(padded[m], true[:, m], np.exp(log_t)) for m in range(len(names)))

    bounds = (np.log(config.t_min), np.log(config.t_max))
    result = minimize_scalar(pooled, bounds=bounds, method="bounded",
                             options={"xatol": config.xatol})
    return np.full(len(names), float(np.exp(result.x)))


def fit_temperatures(logits_list: Sequence[np.ndarray], true_slices,
                     config: CalibrationConfig = CalibrationConfig(),
                     names: Sequence[str] = LANDMARKS) -> np.ndarray:
    """One temperature per landmark minimising the NLL of the true slices.

    Args:
        logits_list: one array per scan of the validation split, (landmarks, depth of that
            scan); depths may differ. ``-inf`` marks a slice that cannot be chosen.
        true_slices: (scans, landmarks) true slice indices.
        config: the search interval and tolerance.
        names: the landmarks, in the order of the arrays' first axis (for messages).

    Returns:
        (landmarks,) float64 temperatures, each in [t_min, t_max]. A landmark whose
        NLL does not depend on T (every scan has one slice) gets 1.0.

    Raises:
        ValueError: no scans, shapes disagree, NaN/+inf logits, or a true slice outside
            its scan.
    """
    padded, true = _padded_logits(logits_list, true_slices, names)
    temperatures = np.ones(len(names))
    bounds = (np.log(config.t_min), np.log(config.t_max))
    for m, name in enumerate(names):
        z, t = padded[m], true[:, m]
        if np.isfinite(z).sum(axis=1).max() < 2:
            continue  # one selectable slice per scan: every T gives probability 1
        result = minimize_scalar(lambda log_t, z=z, t=t: _nll(z, t, np.exp(log_t)),
                                 bounds=bounds, method="bounded",
                                 options={"xatol": config.xatol})
        temperatures[m] = float(np.exp(result.x))
        if min(abs(result.x - b) for b in bounds) < 1e-3:
            logger.warning("temperature of %s stopped at the bound %.3g of [%g, %g]: the "
                           "validation split is too small or too easy to calibrate it (a "
                           "head that is always right wants T -> 0)", name,
                           temperatures[m], config.t_min, config.t_max)
    return temperatures


#: the held-out NLL gain temperature scaling must show to be kept: less is noise on a
#: validation split of a few dozen scans (measured: a 0.1% held-out gain came with a 0.4%
#: loss on test)
MIN_NLL_GAIN = 0.01


def temperatures_help(logits_list: Sequence[np.ndarray], true_slices,
                      names: Sequence[str] = LANDMARKS, *, fit=None) -> tuple[bool, dict]:
    """Whether temperature scaling would improve probabilities on scans it was not fitted
    on, judged within the validation split alone (two-fold cross-fitting: fit on half the
    scans, score the NLL of the true slices on the other half, and swap).

    Args:
        fit: the fitting function judged (`fit_temperatures` by default).

    Returns:
        (helps, details): helps when the held-out NLL after scaling is at least
        `MIN_NLL_GAIN` below the one before;
        details hold both NLLs and the scans used, for the checkpoint's metadata.
    """
    n = len(logits_list)
    true = np.asarray(true_slices, dtype=np.int64)
    if n < 4:
        return False, {"scans": n, "reason": "fewer than 4 validation scans"}
    halves = [np.arange(0, n, 2), np.arange(1, n, 2)]
    before = after = 0.0
    for fit_on, score_on in (halves, halves[::-1]):
        temps = (fit or fit_temperatures)([logits_list[i] for i in fit_on], true[fit_on],
                                          names=names)
        padded, t = _padded_logits([logits_list[i] for i in score_on], true[score_on], names)
        before += sum(_nll_per_scan(padded[m], t[:, m], 1.0).sum() for m in range(len(names)))
        after += sum(_nll_per_scan(padded[m], t[:, m], temps[m]).sum()
                     for m in range(len(names)))
    pairs = n * len(names)
    details = {"scans": n, "held_out_nll_before": float(before / pairs),
               "held_out_nll_after": float(after / pairs)}
    return bool(after < (1 - MIN_NLL_GAIN) * before), details


# --- confidence threshold for the QC flag ----------------------------------------------------

#: how the threshold is chosen, as stored in a checkpoint's metadata: Youden's J on the
#: validation split, or "more_likely_wrong": 0.5 on a confidence that is itself the
#: probability of being right (``within_1_slice``), so that a flagged landmark is, by the
#: calibrated model's own account, more likely wrong than right; or "flagged_mostly_wrong":
#: the largest threshold under which, on the validation split, at least half of the flagged
#: landmarks are wrong (a flag that is right more often than not, as measured), at least
#: `FLAG_FLOOR`
THRESHOLD_CRITERION = "youden_j"
THRESHOLD_CRITERIA = ("youden_j", "more_likely_wrong", "flagged_mostly_wrong")


@dataclass(frozen=True)
class ConfidenceThreshold:
    """The probability below which a landmark is flagged as low confidence, and what it did
    on the data it was chosen on (the validation split)."""

    value: float  # in [0, 1]; a landmark with probability < value is flagged
    right_within_slices: int  # "right": |argmax - true slice| <= this
    n_right: int  # right landmarks (scan x landmark pairs) it was chosen on
    n_wrong: int  # wrong ones
    right_flagged: float  # share of the right ones below the value (NaN without any)
    wrong_flagged: float  # share of the wrong ones below the value (NaN without any)
    criterion: str = THRESHOLD_CRITERION
    confidence: str = "top1"  # the measure it applies to (cohort.model.calibration)

    def to_metadata(self) -> dict:
        """Plain Python values, for a checkpoint's metadata (``weights_only=True``)."""
        return {"value": float(self.value), "criterion": self.criterion,
                "confidence": self.confidence,
                "right_within_slices": int(self.right_within_slices),
                "n_right": int(self.n_right), "n_wrong": int(self.n_wrong),
                "right_flagged": float(self.right_flagged),
                "wrong_flagged": float(self.wrong_flagged)}


def youden_threshold(confidence, right) -> float:
    """The threshold on ``confidence`` that maximises Youden's J = TPR - FPR, where a positive
    (``right``) is kept when its confidence is >= the threshold; ties: the largest threshold.

    Args:
        confidence: (n,) scores, e.g. calibrated top-1 probabilities.
        right: (n,) bool, the prediction was right.

    Returns:
        One of the scores (flag: score < threshold). With a warning: 0.0 (flags nothing)
        without any wrong prediction or when no threshold separates right from wrong
        (J <= 0); 1.0 (flags all but certainties) without any right one.

    Raises:
        ValueError: lengths differ, no scores, or a score that is not finite.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    hit = np.asarray(right, dtype=bool).reshape(-1)
    if conf.shape != hit.shape:
        raise ValueError(f"confidence and right differ in length: {conf.size} vs {hit.size}")
    if conf.size == 0 or not np.isfinite(conf).all():
        raise ValueError("a confidence threshold needs at least one finite score")
    if hit.all():
        logger.warning("no wrong prediction among %d: the confidence threshold is 0 (flags "
                       "nothing)", hit.size)
        return 0.0
    if not hit.any():
        logger.warning("no right prediction among %d: the confidence threshold is 1 (flags "
                       "every one)", hit.size)
        return 1.0
    from sklearn.metrics import roc_curve  # training only; inference never fits a threshold

    fpr, tpr, thresholds = roc_curve(hit, conf, drop_intermediate=False)
    j = tpr - fpr  # thresholds decrease, so argmax takes the largest of tied thresholds
    best = int(np.argmax(j))
    if j[best] <= 0:
        logger.warning("the confidence does not separate right from wrong predictions "
                       "(Youden's J <= 0): the threshold is 0 (flags nothing)")
        return 0.0
    return float(thresholds[best])


#: "flagged_mostly_wrong" never goes below this: a landmark the model itself gives less than
#: this chance of lying within one slice is flagged whatever the validation split showed
#: (out-of-distribution scans give diffuse distributions; on the synthetic validation and
#: test splits of the shipped model almost no landmark is below it, docs/landmarks.md)
FLAG_FLOOR = 0.3


#: how sure the data must make us that flagged landmarks are wrong more often than not: the
#: one-sided lower bound, at this level, of the wrong fraction among them (Jeffreys interval
#: of a binomial) must exceed 1/2. 3 of 3 wrong pass (bound 0.56), 2 of 2 (0.43) and 5 of
#: 7 do not: thresholds are fitted on the few wrong landmarks of a good model, and one that
#: is mostly-wrong by luck on them is not on the next cohort (at 0.9, 2 of 2 wrong on the
#: shipped model's calibration cohort set 0.37, which flagged 6 right landmarks of seed 4242
#: and no wrong one; docs/landmarks.md)
FLAG_EVIDENCE = 0.95


def mostly_wrong_threshold(confidence, right, evidence: float = FLAG_EVIDENCE) -> float:
    """The largest threshold t (one of the scores, or 0) such that the landmarks scoring
    below t are, with ``evidence`` confidence, wrong more often than not (see
    `FLAG_EVIDENCE`): flag below it and a flag is right more often than not. 0 (flags
    nothing) where no threshold gives that evidence."""
    from scipy.stats import beta

    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    wrong = ~np.asarray(right, dtype=bool).reshape(-1)
    order = np.argsort(conf, kind="stable")
    c, w = conf[order], wrong[order]
    cum_wrong = np.cumsum(w)
    n = np.arange(1, len(c) + 1)
    sure = beta.ppf(1 - evidence, cum_wrong + 0.5, n - cum_wrong + 0.5) > 0.5  # flag n lowest
    best = 0.0
    for i in range(1, len(c)):  # flag the i lowest: threshold = c[i] (strictly below)
        if c[i] > c[i - 1] and sure[i - 1]:
            best = float(c[i])
    if len(c) and sure[-1]:
        best = float(c[-1]) + 1e-12
    return min(best, 1.0)


def fit_confidence_threshold(probabilities_list: Sequence[np.ndarray], true_slices,
                             right_within_slices: int = 1,
                             names: Sequence[str] = LANDMARKS, *,
                             confidence: str = "top1",
                             criterion: str = THRESHOLD_CRITERION,
                             chosen_slices=None) -> ConfidenceThreshold:
    """The QC threshold on a calibrated confidence (see module), for all landmarks.

    Args:
        probabilities_list: one (landmarks, depth) array of calibrated probabilities per
            scan of the VALIDATION split (``apply_temperatures`` with the fitted temperatures).
        true_slices: (scans, landmarks) true slice indices.
        right_within_slices: a prediction is right when within this many slices of the truth.
        names: the landmarks, in the order of the arrays' first axis.
        confidence: what is thresholded (`cohort.model.calibration.CONFIDENCE_MEASURES`).
        criterion: `THRESHOLD_CRITERIA`; ``more_likely_wrong`` needs ``within_1_slice``.
        chosen_slices: (scans, landmarks) the slices the decoding reports
            (`cohort.model.decoding`); None: each distribution's argmax.
    """
    if right_within_slices < 0:
        raise ValueError(f"right_within_slices must be >= 0, got {right_within_slices}")
    if criterion not in THRESHOLD_CRITERIA:
        raise ValueError(f"unknown threshold criterion {criterion!r}; choose from "
                         f"{', '.join(THRESHOLD_CRITERIA)}")
    if criterion == "more_likely_wrong" and confidence != "within_1_slice":
        raise ValueError("the more_likely_wrong criterion thresholds a probability of being "
                         "right: use confidence='within_1_slice'")
    conf, hit = _top1(probabilities_list, true_slices, names, within=right_within_slices,
                      measure=confidence, chosen=chosen_slices)
    conf, hit = conf.reshape(-1), hit.reshape(-1)
    if criterion == "more_likely_wrong":
        value = 0.5
    elif criterion == "flagged_mostly_wrong":
        value = max(mostly_wrong_threshold(conf, hit), FLAG_FLOOR)
    else:
        value = youden_threshold(conf, hit)
    flagged = conf < value
    return ConfidenceThreshold(
        value=value, right_within_slices=right_within_slices,
        n_right=int(hit.sum()), n_wrong=int((~hit).sum()),
        right_flagged=float(flagged[hit].mean()) if hit.any() else float("nan"),
        wrong_flagged=float(flagged[~hit].mean()) if (~hit).any() else float("nan"),
        criterion=criterion, confidence=confidence)


# --- calibration error -----------------------------------------------------------------------

def ece_from_confidences(confidence, correct, n_bins: int = 15) -> float:
    """Expected calibration error of top-1 confidences and whether each prediction was right.

    Args:
        confidence: (n,) probability of each predicted class, in [0, 1].
        correct: (n,) bool, the prediction was right.
        n_bins: equal-width, right-closed bins over [0, 1].

    Returns:
        ECE in [0, 1]; NaN with no predictions.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    hit = np.asarray(correct, dtype=bool).reshape(-1)
    if conf.shape != hit.shape:
        raise ValueError(f"confidence and correct differ in length: {conf.size} vs {hit.size}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if conf.size == 0:
        return float("nan")
    if not ((conf >= 0) & (conf <= 1)).all():
        raise ValueError("confidences must lie in [0, 1]; pass probabilities, not logits")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], conf, side="left")  # right-closed bins
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, weights=hit, minlength=n_bins)
                 - np.bincount(bins, weights=conf, minlength=n_bins))  # |B| * |acc - conf|
    return float(gap.sum() / count.sum())


def expected_calibration_error(probabilities_list: Sequence[np.ndarray], true_slices,
                               n_bins: int = 15,
                               names: Sequence[str] = LANDMARKS) -> dict[str, float]:
    """ECE of the top-1 (argmax) confidence per landmark, and ``"overall"`` over all
    scan x landmark pairs pooled.

    Args:
        probabilities_list: one (landmarks, depth) array of probabilities per scan.
        true_slices: (scans, landmarks) true slice indices.
        n_bins: equal-width bins over [0, 1].
        names: the landmarks, in the order of the arrays' first axis.
    """
    conf, hit = _top1(probabilities_list, true_slices, names)
    out = {name: ece_from_confidences(conf[:, m], hit[:, m], n_bins)
           for m, name in enumerate(names)}
    out[OVERALL] = ece_from_confidences(conf, hit, n_bins)
    return out


def calibration_report(logits_list: Sequence[np.ndarray], true_slices, temperatures,
                       n_bins: int = 15, names: Sequence[str] = LANDMARKS) -> pd.DataFrame:
    """NLL and ECE before (T = 1) and after temperature scaling, per landmark and overall.

    Compute it on data the temperatures were not fitted on (the test split) to judge the
    calibration; on the validation split it only shows the fit.

    Returns:
        A table with the columns ``REPORT_COLUMNS``: one row per landmark, then
        ``"overall"`` (pooled pairs; its temperature is NaN, as there is none).
    """
    temps = checked_temperatures(temperatures, len(names))
    padded, true = _padded_logits(logits_list, true_slices, names)
    before = [apply_temperatures(z, 1.0) for z in logits_list]
    after = [apply_temperatures(z, temps) for z in logits_list]
    ece_before = expected_calibration_error(before, true, n_bins, names)
    ece_after = expected_calibration_error(after, true, n_bins, names)
    nll_before = np.array([_nll_per_scan(padded[m], true[:, m], 1.0)
                           for m in range(len(names))]).T  # (scans, landmarks)
    nll_after = np.array([_nll_per_scan(padded[m], true[:, m], temps[m])
                          for m in range(len(names))]).T
    rows = [(name, len(true), float(temps[m]), float(nll_before[:, m].mean()),
             float(nll_after[:, m].mean()), ece_before[name], ece_after[name])
            for m, name in enumerate(names)]
    rows.append((OVERALL, int(true.size), float("nan"), float(nll_before.mean()),
                 float(nll_after.mean()), ece_before[OVERALL], ece_after[OVERALL]))
    return pd.DataFrame(rows, columns=list(REPORT_COLUMNS))


# --- internals -------------------------------------------------------------------------------

def _padded_logits(logits_list: Sequence[np.ndarray], true_slices,
                   names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged logits as one (landmarks, scans, max depth) array padded with -inf, and the
    (scans, landmarks) true slices, after checking both."""
    n_scans, n_marks = len(logits_list), len(names)
    if n_scans == 0:
        raise ValueError("no scans: calibration needs the logits of at least one validation "
                         "scan (more than a few dozen for a trustworthy temperature)")
    true = np.asarray(true_slices, dtype=np.int64)
    if true.shape != (n_scans, n_marks):
        raise ValueError(f"true_slices must have shape (scans, landmarks) = "
                         f"({n_scans}, {n_marks}), got {true.shape}")
    arrays = [np.asarray(z, dtype=np.float64) for z in logits_list]
    for s, z in enumerate(arrays):
        if z.ndim != 2 or z.shape[0] != n_marks or z.shape[1] == 0:
            raise ValueError(f"scan {s}: logits must have shape (landmarks={n_marks}, depth>0), "
                             f"got {z.shape}")
        if np.isnan(z).any() or np.isposinf(z).any():
            raise ValueError(f"scan {s}: logits contain NaN or +inf")
        for m, name in enumerate(names):
            t = int(true[s, m])
            if not 0 <= t < z.shape[1]:
                raise ValueError(f"scan {s}: true slice {t} of {name} lies outside its "
                                 f"{z.shape[1]} slices")
            if not np.isfinite(z[m, t]):
                raise ValueError(f"scan {s}: the true slice {t} of {name} has logit -inf")
    padded = np.full((n_marks, n_scans, max(z.shape[1] for z in arrays)), -np.inf)
    for s, z in enumerate(arrays):
        padded[:, s, :z.shape[1]] = z
    return padded, true


def _nll_per_scan(z: np.ndarray, true: np.ndarray, temperature: float) -> np.ndarray:
    """(scans,) -log softmax(z / T)[true] of one landmark; z is (scans, max depth)."""
    scaled = z / temperature
    return logsumexp(scaled, axis=1) - scaled[np.arange(len(true)), true]


def _nll(z: np.ndarray, true: np.ndarray, temperature: float) -> float:
    return float(_nll_per_scan(z, true, temperature).mean())


def _top1(probabilities_list: Sequence[np.ndarray], true_slices,
          names: Sequence[str], within: int = 0, measure: str = "top1", chosen=None
          ) -> tuple[np.ndarray, np.ndarray]:
    """(scans, landmarks) confidence of the argmax, or of the ``chosen`` slices (by
    ``measure``, top-1 probability by default) and whether it is within ``within`` slices of
    the true slice (0: is the true slice)."""
    n_scans, n_marks = len(probabilities_list), len(names)
    true = np.asarray(true_slices, dtype=np.int64)
    if true.shape != (n_scans, n_marks):
        raise ValueError(f"true_slices must have shape (scans, landmarks) = "
                         f"({n_scans}, {n_marks}), got {true.shape}")
    conf = np.zeros((n_scans, n_marks))
    hit = np.zeros((n_scans, n_marks), dtype=bool)
    for s, p in enumerate(probabilities_list):
        p = np.asarray(p, dtype=np.float64)
        if p.ndim != 2 or p.shape[0] != n_marks:
            raise ValueError(f"scan {s}: probabilities must have shape (landmarks={n_marks}, "
                             f"depth), got {p.shape}")
        if not (0 <= true[s]).all() or not (true[s] < p.shape[1]).all():
            raise ValueError(f"scan {s}: a true slice of {true[s].tolist()} lies outside its "
                             f"{p.shape[1]} slices")
        pred = np.argmax(p, axis=1) if chosen is None else np.asarray(chosen[s], dtype=np.int64)
        conf[s] = landmark_confidence(p, pred, measure)
        hit[s] = np.abs(pred - true[s]) <= within
    return conf, hit
