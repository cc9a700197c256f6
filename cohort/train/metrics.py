"""Evaluation metrics of the method (docs/method.md section 4), as plain numbers for tables.

Landmark localization (prediction = the argmax slice of each landmark's distribution):
MAE in slices and in mm, Top-1 / Top-2 accuracy, Acc(tau=1), quadratic weighted Cohen's
kappa; per landmark and overall (all scan x landmark pairs pooled). Classification:
accuracy, macro-F1, one-vs-rest macro AUC. Quantification: Dice, Pearson r of log volumes.

The cores are scikit-learn's and scipy's (``cohen_kappa_score``, ``f1_score``,
``roc_auc_score``, ``pearsonr``), so numbers are those of published tables; the wrappers
here only check shapes and turn an undefined metric into NaN, never an exception or a
warning in the middle of a report. Top-k (ties broken as ``np.argmax`` breaks them, which
``sklearn.metrics.top_k_accuracy_score`` does not promise, and one distribution per scan of
its own depth) and Dice (1.0 for two empty masks) are our own, for those reasons.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import pearsonr

from cohort.anatomy import LANDMARKS

OVERALL = "overall"


# --- localization ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalizationMetrics:
    """Localization quality of one landmark, or of all pooled (``dataclasses.asdict`` gives
    a table row)."""

    n: int  # scan x landmark pairs
    mae_slices: float
    mae_mm: float  # NaN when no slice spacing was given
    top1: float  # the true slice is the most probable one
    top2: float  # the true slice is among the two most probable
    acc_tau1: float  # |predicted - true| <= 1 slice
    kappa: float  # quadratic weighted Cohen's kappa of predicted vs true slice indices


def top_k_hits(probabilities: np.ndarray, true_slice: int, k: int) -> bool:
    """True when ``true_slice`` is among the ``k`` most probable slices of one distribution.

    Ties are ranked by slice index (lower first), as ``np.argmax`` breaks them, so that
    Top-1 always agrees with the argmax prediction.
    """
    p = np.asarray(probabilities, dtype=float)
    order = np.argsort(-p, kind="stable")
    return bool(true_slice in order[:k])


def quadratic_kappa(a: Sequence[int], b: Sequence[int],
                    labels: Sequence[int] | None = None) -> float:
    """Quadratic weighted Cohen's kappa: ``sklearn.metrics.cohen_kappa_score(a, b,
    weights="quadratic", labels=labels)``, NaN where it is undefined.

    The categories are ``labels`` (in the order given) or else the sorted union of the
    values observed in ``a`` and ``b``, and the weight of a disagreement is the squared
    distance of the two categories' *positions in that list*, not of their values: with
    slice indices from scans of different depths, a slice index that nobody predicted and
    no scan has as truth does not count as a step. Pass ``labels=range(max_depth)`` to
    weight by slice distance instead. Pairs with a value outside ``labels`` are left out.
    NaN where kappa is undefined: no pairs, no pair inside ``labels``, or a single category.
    """
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import cohen_kappa_score  # training and evaluation only

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"kappa needs two 1-D sequences of equal length, got shapes "
                         f"{a.shape} and {b.shape}")
    cats = None if labels is None else np.asarray(labels)
    if len(a) == 0 or (cats is not None and not (np.isin(a, cats) & np.isin(b, cats)).any()):
        return float("nan")  # scikit-learn raises here
    with warnings.catch_warnings():  # undefined (one category): NaN, as documented
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # 0 / 0 before scikit-learn 1.9
        warnings.filterwarnings("ignore", "A single label was found", UserWarning)
        return float(cohen_kappa_score(a, b, weights="quadratic", labels=cats))


def localization_metrics(probabilities: Sequence[np.ndarray], true_slices,
                         spacing_mm: Sequence[float] | None = None,
                         names: Sequence[str] = LANDMARKS) -> dict[str, LocalizationMetrics]:
    """Per-landmark and overall localization metrics of a set of scans.

    Args:
        probabilities: one array per scan, (landmarks, depth of that scan): each landmark's
            distribution over the scan's slices (depths may differ between scans).
        true_slices: (scans, landmarks) true slice indices.
        spacing_mm: slice spacing of each scan (mm), for the MAE in mm; None: NaN.
        names: the landmarks, in the order of the arrays' first axis.

    Returns:
        ``{name: LocalizationMetrics}`` for each landmark, and ``"overall"`` over all
        scan x landmark pairs pooled (MAE and accuracies are then means over pairs, kappa
        is computed on the pooled pairs).

    Raises:
        ValueError: shapes disagree, or a true slice lies outside its scan.
    """
    true = np.asarray(true_slices, dtype=np.int64)
    n_scans, n_marks = len(probabilities), len(names)
    if true.shape != (n_scans, n_marks):
        raise ValueError(f"true_slices must have shape (scans, landmarks) = "
                         f"({n_scans}, {n_marks}), got {true.shape}")
    spacing = (np.full(n_scans, np.nan) if spacing_mm is None
               else np.asarray(spacing_mm, dtype=float).reshape(-1))
    if len(spacing) != n_scans:
        raise ValueError(f"give one slice spacing per scan ({n_scans}), got {len(spacing)}")
    pred = np.zeros_like(true)
    top1 = np.zeros(true.shape, dtype=bool)
    top2 = np.zeros(true.shape, dtype=bool)
    for s, p in enumerate(probabilities):
        p = np.asarray(p, dtype=float)
        if p.ndim != 2 or p.shape[0] != n_marks:
            raise ValueError(f"scan {s}: probabilities must have shape (landmarks={n_marks}, "
                             f"depth), got {p.shape}")
        depth = p.shape[1]
        for m in range(n_marks):
            t = int(true[s, m])
            if not 0 <= t < depth:
                raise ValueError(f"scan {s}: true slice {t} of {names[m]} lies outside its "
                                 f"{depth} slices")
            pred[s, m] = int(np.argmax(p[m]))
            top1[s, m] = top_k_hits(p[m], t, 1)
            top2[s, m] = top_k_hits(p[m], t, 2)
    err = np.abs(pred - true)
    err_mm = err * spacing[:, None]

    def summarise(sel) -> LocalizationMetrics:
        return LocalizationMetrics(
            n=int(err[sel].size), mae_slices=float(err[sel].mean()),
            mae_mm=float(err_mm[sel].mean()), top1=float(top1[sel].mean()),
            top2=float(top2[sel].mean()), acc_tau1=float((err[sel] <= 1).mean()),
            kappa=quadratic_kappa(true[sel].ravel(), pred[sel].ravel()))

    out = {name: summarise((slice(None), m)) for m, name in enumerate(names)}
    out[OVERALL] = summarise((slice(None), slice(None)))
    return out


# --- classification -------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassificationMetrics:
    """Classification quality on a test set (prediction = the most probable class)."""

    n: int
    accuracy: float
    macro_f1: float
    macro_auc: float  # one-vs-rest


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Unweighted mean of the per-class F1 = 2TP / (2TP + FP + FN) over the classes that
    occur in ``y_true`` or ``y_pred``: ``sklearn.metrics.f1_score(average="macro",
    zero_division=0)`` (a class only predicted scores 0); NaN without samples."""
    from sklearn.metrics import f1_score

    t, p = np.asarray(y_true), np.asarray(y_pred)
    if len(t) == 0:
        return float("nan")
    return float(f1_score(t, p, average="macro", zero_division=0))


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``): the probability that a
    random positive scores above a random negative, ties counting one half. NaN without
    both classes."""
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == len(positive):
        return float("nan")  # scikit-learn raises here
    return float(roc_auc_score(positive, np.asarray(score, dtype=float)))


def macro_auc_ovr(y_true: Sequence[int], probabilities: np.ndarray) -> float:
    """One-vs-rest AUC of each class (column of ``probabilities``), unweighted mean over
    the classes that occur in ``y_true`` and not in all of it: with every class present,
    ``sklearn.metrics.roc_auc_score(multi_class="ovr", average="macro")``; scikit-learn
    refuses a test set that lacks a class, here such a class is left out of the mean."""
    t = np.asarray(y_true)
    p = np.asarray(probabilities, dtype=float)
    aucs = [binary_auc(t == c, p[:, c]) for c in range(p.shape[1])]
    defined = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(defined)) if defined else float("nan")


def classification_metrics(y_true: Sequence[int], probabilities) -> ClassificationMetrics:
    """Accuracy, macro-F1 and one-vs-rest macro AUC.

    Args:
        y_true: class index of each sample (n,), 0 .. classes-1.
        probabilities: (n, classes) predicted class probabilities (or any scores).
    """
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 2 or len(p) != len(t):
        raise ValueError(f"probabilities must be (samples={len(t)}, classes), got {p.shape}")
    pred = np.argmax(p, axis=1)
    return ClassificationMetrics(n=len(t), accuracy=float(np.mean(pred == t)) if len(t)
                                 else float("nan"),
                                 macro_f1=macro_f1(t, pred), macro_auc=macro_auc_ovr(t, p))


# --- quantification -------------------------------------------------------------------------

def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap 2|A and B| / (|A| + |B|) of two binary masks; 1.0 when both are empty
    (nothing to find, nothing found)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"Dice needs masks of one shape, got {a.shape} and {b.shape}")
    size = int(a.sum()) + int(b.sum())
    return 1.0 if size == 0 else 2.0 * int(np.count_nonzero(a & b)) / size


def dice_per_label(predicted: np.ndarray, truth: np.ndarray,
                   labels: Mapping[str, int]) -> dict[str, float]:
    """Dice of each label code of two label maps, e.g. ``cohort.anatomy.SEGMENT_LABELS``
    (or {"right": 1, "left": 2} for the left/right split)."""
    p, t = np.asarray(predicted), np.asarray(truth)
    return {name: dice(p == code, t == code) for name, code in labels.items()}


def log_volume_pearson(predicted_mm3, true_mm3) -> float:
    """Pearson r of log(1 + volume in mm^3) between predicted and true volumes
    (``scipy.stats.pearsonr``).

    ``log1p`` keeps the many zero volumes (segments without calcium) in the comparison, where
    a plain log would have to drop them, and equals log(volume) to within 1/volume for
    volumes of a few mm^3 and more, as on the papers' log-log plots. NaN with fewer than two
    pairs or a constant side.
    """
    a = np.asarray(predicted_mm3, dtype=float)
    b = np.asarray(true_mm3, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D sequences of equal length, got {a.shape} and {b.shape}")
    if (a < 0).any() or (b < 0).any():
        raise ValueError("volumes must be >= 0 mm^3")
    x, y = np.log1p(a), np.log1p(b)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")  # scipy raises (n < 2) or warns (constant input)
    return float(pearsonr(x, y).statistic)
