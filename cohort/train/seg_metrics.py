"""How a calcium segmenter is judged, per series and per cohort: voxel Dice, volume
agreement (Pearson r of log1p volume, Bland-Altman bias and limits), risk-group agreement
(weighted kappa), calibration (expected calibration error) and the coverage of the volume
intervals; all by slice-thickness band too.

A series' predicted volume is the voxels at or above the chosen threshold times the voxel
volume; its interval is [volume of the voxels with p >= a high threshold, volume of those
with p >= a low one]: nested masks, the sure calcium and everything that may be calcium.
Voxel probabilities, even calibrated ones, are not independent, so the thresholds of a
``level`` interval are fitted on the validation split (`fit_interval_thresholds`: each
bound misses the true volume of at most (1 - level) / 2 of the validation series) rather
than read off the level (`interval_thresholds`, the fallback). `summarise` measures how
many test series the interval holds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.stats import pearsonr
from sklearn.metrics import cohen_kappa_score

from cohort.model.segmenter import is_gated
from cohort.quantify.config import QuantifyConfig
from cohort.quantify.risk import risk_group

#: slice-thickness bands of the tables (mm, upper edges inclusive): thin, medium, thick
THICKNESS_BANDS = (("<= 1.25 mm", 1.25), ("1.25-3 mm", 3.0), ("> 3 mm", float("inf")))
#: probabilities below this (and not calcium) are left out of calibration fits and ECE:
#: the millions of sure-background voxels would make any model look calibrated
IN_PLAY_P = 0.01


def thickness_band(mm: float) -> str:
    for name, upper in THICKNESS_BANDS:
        if mm <= upper + 1e-6:
            return name
    return THICKNESS_BANDS[-1][0]


def interval_thresholds(level: float = 0.9) -> tuple[float, float]:
    """(lower-bound threshold, upper-bound threshold) of a ``level`` volume interval, read
    off the level: right if the voxels were independent, too narrow in practice."""
    a = (1 - level) / 2
    return 1 - a, a


#: thresholds `fit_interval_thresholds` tries for the lower bound (the upper bound's are
#: 1 minus these)
INTERVAL_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999)


def fit_interval_thresholds(probs: list[np.ndarray], trues: list[np.ndarray],
                            level: float = 0.9) -> tuple[float, float]:
    """(lower-bound threshold, upper-bound threshold) fitted on validation series: the
    least extreme thresholds whose lower (upper) volume lies above (below) the true volume
    in at most (1 - level) / 2 of the series, a split-conformal choice made per bound. With
    few series that allows no miss at all; with none the level's own thresholds stand."""
    if not probs:
        return interval_thresholds(level)
    true_n = np.array([np.count_nonzero(t) for t in trues])
    lower_n = voxels_at(probs, INTERVAL_GRID)
    upper_n = voxels_at(probs, UPPER_GRID)
    return (conformal_threshold(INTERVAL_GRID, lower_n, true_n, level, lower=True),
            conformal_threshold(UPPER_GRID, upper_n, true_n, level, lower=False))


#: the upper bound's thresholds, least extreme first
UPPER_GRID = tuple(round(1 - t, 6) for t in INTERVAL_GRID)


def voxels_at(probs: list[np.ndarray], grid: tuple[float, ...]) -> np.ndarray:
    """(series, thresholds) voxel counts at p >= each threshold of ``grid``."""
    return np.array([[np.count_nonzero(p >= t) for t in grid] for p in probs],
                    dtype=np.int64).reshape(len(probs), len(grid))


def conformal_threshold(grid: tuple[float, ...], predicted_n: np.ndarray, true_n: np.ndarray,
                        level: float, *, lower: bool) -> float:
    """The least extreme threshold of ``grid`` (ordered least extreme first) whose volume
    misses the true one (a lower bound above it, an upper bound below it) in at most
    (1 - level) / 2 of the series: a split-conformal choice for one bound. ``predicted_n``:
    (series, thresholds) voxel counts; ``true_n``: the true voxels per series."""
    predicted_n, true_n = np.asarray(predicted_n), np.asarray(true_n)[:, None]
    # (the epsilon: (1 - 0.9) / 2 is 0.04999... in floating point)
    allowed = int(np.floor((1 - level) / 2 * (len(predicted_n) + 1) + 1e-9))
    misses = np.sum(predicted_n > true_n if lower else predicted_n < true_n, axis=0)
    ok = np.flatnonzero(misses <= allowed)
    return round(float(grid[ok[0]] if len(ok) else grid[-1]), 6)


def dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice of two masks; NaN when both are empty."""
    p, t = np.count_nonzero(pred), np.count_nonzero(true)
    if p + t == 0:
        return float("nan")
    return 2 * np.count_nonzero(pred & true) / (p + t)


def series_row(prob: np.ndarray, true: np.ndarray, threshold: float, voxel_mm3: float,
               true_outside_voxels: int = 0,
               bounds: tuple[float, float] = interval_thresholds()) -> dict:
    """Per-series figures of one predicted probability map against its true mask (both on
    the crop); ``true_outside_voxels``: true calcium outside the crop (counts against the
    prediction's volume); ``bounds``: the thresholds of the volume interval."""
    pred = prob >= threshold
    lo_t, hi_t = bounds
    n_true = int(np.count_nonzero(true)) + int(true_outside_voxels)
    return {"dice": dice(pred, true), "overlap_voxels": int(np.count_nonzero(pred & true)),
            "pred_voxels": int(np.count_nonzero(pred)), "true_voxels": n_true,
            "pred_mm3": float(np.count_nonzero(pred) * voxel_mm3),
            "true_mm3": float(n_true * voxel_mm3),
            "low_mm3": float(np.count_nonzero(prob >= lo_t) * voxel_mm3),
            "high_mm3": float(np.count_nonzero(prob >= hi_t) * voxel_mm3)}


def nll(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None,
        temperature: float = 1.0) -> float:
    """Weighted mean negative log-likelihood of sigmoid(logits / T)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones_like(z) if weights is None else np.asarray(weights, dtype=np.float64)
    return float(np.sum(w * (np.logaddexp(0, z) - y * z)) / max(np.sum(w), 1e-12))


def fit_temperature(logits: np.ndarray, labels: np.ndarray,
                    weights: np.ndarray | None = None) -> float:
    """The temperature T minimising the (weighted) NLL of sigmoid(logits / T).

    Fit it on all voxels, or on a sample that stands for all of them (`voxel_sample`):
    fitted on the voxels in play alone (a choice made by the model's own probabilities) it
    leaves out the sure background that argues for confidence, and comes out far too
    hot."""
    res = minimize_scalar(lambda log_t: nll(logits, labels, weights, float(np.exp(log_t))),
                          bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def voxel_sample(logits: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                 rate: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, labels, weights) standing for all voxels of a crop the network decides
    (not those its candidate gate ruled out, `segmenter.is_gated`): every voxel in play
    (weight 1) and a random ``rate`` of the others (weight 1 / rate)."""
    z = np.asarray(logits).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    free = ~is_gated(z)
    play = in_play(1 / (1 + np.exp(-np.clip(z, -60, 60))), y) & free
    rest = np.flatnonzero(~play & free)
    take = rest[rng.random(len(rest)) < rate]
    idx = np.concatenate([np.flatnonzero(play), take])
    w = np.concatenate([np.ones(int(play.sum())), np.full(len(take), 1 / rate)])
    return z[idx], y[idx], w


def in_play(prob: np.ndarray, true: np.ndarray) -> np.ndarray:
    return (prob >= IN_PLAY_P) | true


def ece(prob: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error (equal-width bins) of voxel probabilities."""
    p = np.asarray(prob, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if not len(p):
        return float("nan")
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() * abs(p[sel].mean() - y[sel].mean())
    return float(total / len(p))


#: thresholds `best_threshold` tries
THRESHOLD_GRID = tuple(float(t) for t in np.round(np.arange(0.1, 0.91, 0.05), 2))


def best_threshold(probs: list[np.ndarray], trues: list[np.ndarray],
                   grid: tuple[float, ...] = THRESHOLD_GRID) -> float:
    """The probability threshold with the highest pooled Dice on the given series."""
    best, best_d = 0.5, -1.0
    for t in grid:
        inter = sum(int(np.count_nonzero((p >= t) & y)) for p, y in zip(probs, trues,
                                                                         strict=True))
        total = sum(int(np.count_nonzero(p >= t)) + int(np.count_nonzero(y))
                    for p, y in zip(probs, trues, strict=True))
        d = 2 * inter / total if total else 0.0
        if d > best_d + 1e-9:
            best, best_d = float(t), d
    return best


def risk_groups(volumes_mm3, config: QuantifyConfig | None = None) -> list[str]:
    config = config or QuantifyConfig()
    return [risk_group(v, config.risk_thresholds_mm3, config.risk_groups) for v in volumes_mm3]


def summarise(rows: pd.DataFrame, config: QuantifyConfig | None = None) -> dict:
    """Cohort figures of per-series rows (`series_row` columns plus ``slice_thickness_mm``)."""
    config = config or QuantifyConfig()
    order = {g: i for i, g in enumerate(config.risk_groups)}
    has = rows[rows["true_voxels"] > 0]
    pooled = (2 * rows["overlap_voxels"].sum()
              / max(rows["pred_voxels"].sum() + rows["true_voxels"].sum(), 1))
    lt, lp = np.log1p(rows["true_mm3"]), np.log1p(rows["pred_mm3"])
    r = float(pearsonr(lt, lp)[0]) if len(rows) > 2 and lt.std() > 0 and lp.std() > 0 \
        else float("nan")
    diff = rows["pred_mm3"] - rows["true_mm3"]
    gt = [order[g] for g in risk_groups(rows["true_mm3"], config)]
    gp = [order[g] for g in risk_groups(rows["pred_mm3"], config)]
    labels = list(range(len(config.risk_groups)))
    kappa_l = float(cohen_kappa_score(gt, gp, weights="linear", labels=labels)) \
        if len(set(gt) | set(gp)) > 1 else float("nan")
    kappa_q = float(cohen_kappa_score(gt, gp, weights="quadratic", labels=labels)) \
        if len(set(gt) | set(gp)) > 1 else float("nan")
    covered = (rows["low_mm3"] <= rows["true_mm3"] + 1e-9) & \
        (rows["true_mm3"] <= rows["high_mm3"] + 1e-9)
    return {"series": len(rows), "with_calcium": len(has),
            "dice_mean": float(has["dice"].mean()) if len(has) else float("nan"),
            "dice_pooled": float(pooled), "pearson_r_log1p": r,
            "bias_mm3": float(diff.mean()), "loa_low_mm3": float(diff.mean() - 1.96 * diff.std()),
            "loa_high_mm3": float(diff.mean() + 1.96 * diff.std()),
            "kappa_linear": kappa_l, "kappa_quadratic": kappa_q,
            "risk_agreement": float(np.mean(np.array(gt) == np.array(gp))),
            "interval_coverage": float(covered.mean())}


def summary_table(rows: pd.DataFrame, by: tuple[str, ...] = ("variant",),
                  config: QuantifyConfig | None = None) -> pd.DataFrame:
    """`summarise` per group of ``by`` (e.g. variant, and thickness band)."""
    out = []
    for key, g in rows.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(by, key, strict=True)), **summarise(g, config)})
    return pd.DataFrame(out)
