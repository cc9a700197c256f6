"""Fitting the segmenter's component filter (`cohort.model.component_filter`) on a crop
cache (`cohort.train.seg_data`) and the segmenter's logits of those crops.

`component_table` turns every series into one row per candidate component (its features,
whether it touches the true mask, its voxel counts) and one row per series (true volume,
the interval's upper-bound voxels), so the filter's cohort metrics are counted from tables
alone; `fit_component_filter` fits the ensemble on all components and scores it out of fold
(folds grouped by patient), with `seg_metrics.summarise`'s figures for the filtered masks.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cohort.model import segmenter
from cohort.model.component_filter import (
    FEATURES,
    ComponentFilterConfig,
    TreeEnsemble,
    component_features,
    export_hgb,
)
from cohort.storage import StorageOptions, join, read_bytes
from cohort.train import seg_metrics as M
from cohort.train.seg_data import load_crop

logger = logging.getLogger(__name__)

#: logits of one crop: (series UID, CT numbers (H, W, D)) -> logits (H, W, D)
LogitsFn = Callable[[str, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BoostingConfig:
    """The ensemble's hyper-parameters (those of the study that chose the filter)."""

    max_iter: int = 200
    learning_rate: float = 0.05
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 20
    l2_regularization: float = 1.0
    random_state: int = 0
    #: off, so the ensemble always has max_iter trees (sklearn's "auto" turns it on above
    #: 10,000 components and then holds out a random tenth)
    early_stopping: bool = False

    def estimator(self):
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes, min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization, random_state=self.random_state,
            early_stopping=self.early_stopping)


@dataclass(frozen=True)
class ComponentTable:
    """components: one row per candidate (``series_uid``, ``patient_key``, the `FEATURES`,
    ``voxels``, ``overlap`` (true voxels inside), ``lower_voxels`` (p >= lower_p), ``y``);
    series: one row per series (``series_uid``, ``patient_key``, ``voxel_mm3``,
    ``slice_thickness_mm``, ``true_in_crop``, ``true_voxels`` (with those outside the crop),
    ``upper_voxels`` (p >= the interval's upper-bound threshold), ``upper_counts`` (voxels
    at p >= each threshold of `seg_metrics.UPPER_GRID`, to refit that threshold))."""

    components: pd.DataFrame
    series: pd.DataFrame


def logits_from_dir(url: str, options: StorageOptions | None = None) -> LogitsFn:
    """Logits saved as ``<url>/<series UID>.npy`` (H, W, D)."""

    def read(uid: str, hu: np.ndarray) -> np.ndarray:
        return np.load(io.BytesIO(read_bytes(join(url, f"{uid}.npy"), options)))

    return read


def _per_component(labels: np.ndarray, where: np.ndarray, n: int) -> np.ndarray:
    """(n,) voxels of ``where`` in each of the n components of ``labels``."""
    return np.bincount(labels[where], minlength=n + 1)[1:]


def component_table(cache_url: str, logits: LogitsFn, temperature: float, *,
                    config: ComponentFilterConfig | None = None, upper_p: float = 0.2,
                    options: StorageOptions | None = None) -> ComponentTable:
    """The components and series of every crop in the cache (index order).

    Args:
        cache_url: a segmenter crop cache (``index.parquet`` and ``crops/``).
        logits: the segmenter's logits of a crop (`logits_from_dir`, or a network's
            `segmenter.crop_logits`).
        temperature: the segmenter's calibration (probabilities are sigmoid(logits / T)).
        config: the filter's candidates and features.
        upper_p: the volume interval's upper-bound threshold (unchanged by the filter).
    """
    config = config or ComponentFilterConfig()
    index = pd.read_parquet(io.BytesIO(read_bytes(join(cache_url, "index.parquet"), options)))
    comps, series = [], []
    for r in index.to_dict("records"):
        crop = load_crop(cache_url, r["path"], options).astype(np.float32)
        hu, true = crop[0], crop[1] > 0.5  # (H, W, D) each
        prob = segmenter.probabilities(np.asarray(logits(r["series_uid"], hu),
                                                  dtype=np.float32), temperature)
        ps, ss = float(r["pixel_spacing_mm"]), float(r["slice_spacing_mm"])
        labels, x = component_features(prob, hu, (ps, ps, ss), r["slice_thickness_mm"],
                                       config, voxel_mm3=float(r["voxel_mm3"]))
        n = len(x)
        c = pd.DataFrame(x, columns=list(FEATURES))
        c.insert(0, "series_uid", r["series_uid"])
        c.insert(1, "patient_key", str(r["patient_key"]))
        c["voxels"] = _per_component(labels, labels > 0, n)
        c["overlap"] = _per_component(labels, true, n)
        c["lower_voxels"] = _per_component(labels, prob >= config.lower_p, n)
        c["y"] = (c["overlap"] > 0).astype(int)
        comps.append(c)
        outside = max(int(r["mask_voxels"]) - int(r["crop_voxels"]), 0)
        series.append({"series_uid": r["series_uid"], "patient_key": str(r["patient_key"]),
                       "voxel_mm3": float(r["voxel_mm3"]),
                       "slice_thickness_mm": float(r["slice_thickness_mm"]),
                       "true_in_crop": int(true.sum()), "true_voxels": int(true.sum()) + outside,
                       "upper_voxels": int(np.count_nonzero(prob >= upper_p)),
                       "upper_counts": M.voxels_at([prob], M.UPPER_GRID)[0].tolist()})
    comps = pd.concat(comps, ignore_index=True) if comps else \
        pd.DataFrame(columns=["series_uid", "patient_key", *FEATURES])
    logger.info("%d series, %d candidate components (%d touch calcium) from %s",
                len(series), len(comps), int(comps["y"].sum()) if len(comps) else 0, cache_url)
    return ComponentTable(comps, pd.DataFrame(series))


def series_rows(table: ComponentTable, scores: np.ndarray, keep_score: float) -> pd.DataFrame:
    """`seg_metrics.series_row` columns (and ``slice_thickness_mm``) of the filtered masks:
    the components scoring >= ``keep_score``, whole."""
    c = table.components.assign(keep=np.asarray(scores) >= keep_score)
    kept = c[c["keep"]].groupby("series_uid")[["voxels", "overlap", "lower_voxels"]].sum()
    s = table.series.set_index("series_uid").join(kept).fillna(
        {"voxels": 0, "overlap": 0, "lower_voxels": 0})
    pred, ov, v = s["voxels"].astype(int), s["overlap"].astype(int), s["voxel_mm3"]
    both = pred + s["true_in_crop"]
    return pd.DataFrame({
        "series_uid": s.index, "dice": np.where(both > 0, 2 * ov / both.clip(lower=1), np.nan),
        "overlap_voxels": ov.values, "pred_voxels": pred.values,
        "true_voxels": s["true_voxels"].values, "pred_mm3": (pred * v).values,
        "true_mm3": (s["true_voxels"] * v).values,
        "low_mm3": (s["lower_voxels"] * v).values, "high_mm3": (s["upper_voxels"] * v).values,
        "slice_thickness_mm": s["slice_thickness_mm"].values}).reset_index(drop=True)


@dataclass(frozen=True)
class FilterFit:
    """The fitted filter (`TreeEnsemble.to_dict`, for a checkpoint) and how it did out of
    fold."""

    model: dict
    oof_scores: np.ndarray  # (N,) per component of the table
    oof_auc: float
    oof_summary: dict  # `seg_metrics.summarise` of the filtered masks
    oof_rows: pd.DataFrame
    #: the volume interval's upper-bound threshold refitted on the table's series (None:
    #: the table has no ``upper_counts``; the segmenter's own stays)
    upper_p: float | None = None


#: fewer candidate components of either kind (calcium or not) than this: no filter is fitted
MIN_COMPONENTS = 50


def _check_enough(c: pd.DataFrame, folds: int) -> None:
    """Refuse a cohort too small to fit and score a filter on."""
    from cohort.errors import ConfigError

    calcium = int(c["y"].sum()) if len(c) else 0
    patients = c["patient_key"].nunique() if len(c) else 0
    if min(calcium, len(c) - calcium) < MIN_COMPONENTS or patients < folds:
        raise ConfigError(
            f"too few candidates to fit the component filter: {len(c)} components ({calcium} "
            f"touching calcium) from {patients} patients; it needs {MIN_COMPONENTS} of each "
            f"kind and at least {folds} patients: give a larger cohort the segmenter never "
            "trained on (the shipped recipe fits it on 80 patients)")


def fit_component_filter(table: ComponentTable, *,
                         config: ComponentFilterConfig | None = None,
                         boosting: BoostingConfig | None = None, folds: int = 5,
                         level: float = 0.9) -> FilterFit:
    """Fit the ensemble on every component of ``table`` and score it out of fold
    (scikit-learn's ``GroupKFold`` over patients, unshuffled, so a rerun gives the same
    folds).

    Where the table has ``upper_counts``, the ``level`` interval's upper-bound threshold is
    refitted on its series too (`seg_metrics.conformal_threshold`): they are scans the
    segmenter never trained on, and many more than the 15 validation series it was first
    chosen on (which allow no miss at all), so the bound is less optimistic."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    config = config or ComponentFilterConfig()
    boosting = boosting or BoostingConfig()
    c = table.components
    _check_enough(c, folds)
    x, y, groups = c[list(FEATURES)], c["y"].to_numpy(), c["patient_key"].to_numpy()
    oof = np.zeros(len(c))
    for f, (tr, te) in enumerate(GroupKFold(folds).split(x, y, groups)):
        m = boosting.estimator().fit(x.iloc[tr], y[tr])
        oof[te] = m.predict_proba(x.iloc[te])[:, 1]
        logger.info("fold %d: fitted on %d components, scored %d", f, len(tr), len(te))
    model = export_hgb(boosting.estimator().fit(x, y), config)
    upper_p = None
    if "upper_counts" in table.series:
        s = table.series
        counts = np.stack(s["upper_counts"].to_numpy())
        upper_p = M.conformal_threshold(M.UPPER_GRID, counts, s["true_voxels"].to_numpy(),
                                        level, lower=False)
        table = ComponentTable(table.components, s.assign(
            upper_voxels=counts[:, M.UPPER_GRID.index(upper_p)]))
    rows = series_rows(table, oof, config.keep_score)
    summary = M.summarise(rows)
    auc = float(roc_auc_score(y, oof)) if len(set(y)) > 1 else float("nan")
    logger.info("component filter out of fold: AUC %.3f, Dice %.3f, r %.3f, kappa %.3f", auc,
                summary["dice_mean"], summary["pearson_r_log1p"], summary["kappa_linear"])
    return FilterFit(model=model.to_dict(), oof_scores=oof, oof_auc=auc, oof_summary=summary,
                     oof_rows=rows, upper_p=upper_p)


def evaluate_component_filter(table: ComponentTable, model: TreeEnsemble | dict
                              ) -> tuple[np.ndarray, dict, pd.DataFrame]:
    """(scores, `seg_metrics.summarise`, series rows) of a fitted filter on a table."""
    model = model if isinstance(model, TreeEnsemble) else TreeEnsemble.from_dict(model)
    scores = model.score(table.components[list(FEATURES)].to_numpy())
    rows = series_rows(table, scores, model.config.keep_score)
    return scores, M.summarise(rows), rows


def attach_component_filter(segmenter_pt: str, out_pt: str, fit: FilterFit,
                            temperature: float, fitted_on: str) -> None:
    """Write ``segmenter_pt`` again as ``out_pt`` with the filter in its metadata
    (``component_filter``, read by `cohort.job.segmenter_checkpoint`) and a record of the fit
    under ``calibration.component_filter``: the temperature its probabilities used, what it
    was fitted on and its out-of-fold figures. The weights are untouched.

    Raises:
        ConfigError: ``segmenter_pt`` is not a calibrated segmenter checkpoint, or the
            filter was fitted at another temperature than the checkpoint's.
    """
    import math

    import torch

    from cohort.errors import ConfigError

    ckpt = torch.load(segmenter_pt, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != segmenter.FORMAT:
        raise ConfigError(f"{segmenter_pt} is not a cohort segmenter checkpoint")
    cal = dict(ckpt["meta"].get("calibration") or {})
    if "temperature" not in cal:
        raise ConfigError(f"{segmenter_pt} carries no calibration: fit the filter on a "
                          "calibrated segmenter (`cohort train segmenter`)")
    if not math.isclose(float(cal["temperature"]), temperature, rel_tol=1e-6):
        raise ConfigError(f"the filter was fitted on probabilities at temperature "
                          f"{temperature}, the checkpoint's is {cal['temperature']}: refit it")
    cal["component_filter"] = {
        "fitted_on": fitted_on, "temperature": float(temperature),
        "oof_auc": fit.oof_auc,
        "oof": {k: float(v) for k, v in fit.oof_summary.items()
                if isinstance(v, int | float) and not isinstance(v, bool)}}
    if fit.upper_p is not None:
        cal.setdefault("interval_thresholds_validation", list(cal["interval_thresholds"]))
        cal["interval_thresholds"] = [cal["interval_thresholds"][0], fit.upper_p]
        cal["component_filter"]["interval_upper_p"] = fit.upper_p
    ckpt["meta"] = {**ckpt["meta"], "calibration": cal, "component_filter": fit.model}
    torch.save(ckpt, out_pt)
    logger.info("wrote %s: %s with its component filter", out_pt, segmenter_pt)
