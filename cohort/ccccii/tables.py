"""The benchmark's tables: per-scan test predictions, metrics per fold x model, the paper's
Table III (mean ± std over folds beside measured compute) and Table V (DST depth ablation),
as Parquet and Markdown.

Every metric is computed from the predictions table alone, through
``cohort.train.metrics.classification_metrics`` (accuracy, macro-F1, one-vs-rest macro
AUC): the table keeps each scan's three class probabilities, so anyone can recompute them.
Cells 'mean ± std' use the sample standard deviation over folds (ddof=1), as the
localization tables do. Synthetic data are labelled as there: a ``synthetic`` column, the
``cohort.synthetic`` Parquet metadata, and Markdown titles and banners that say SYNTHETIC.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from cohort.ccccii.layout import CLASSES
from cohort.model.compute import Compute
from cohort.train.metrics import classification_metrics
from cohort.train.tables import format_mean_std

PROBABILITY_COLUMNS = tuple(f"p_{c}" for c in CLASSES)
PREDICTIONS_SCHEMA = pa.schema(
    [
        ("fold", pa.int64()),
        ("model", pa.string()),
        ("scan_key", pa.string()),
        ("patient_key", pa.string()),
        ("true_label", pa.int64()),
        ("true_class", pa.string()),
        ("pred_label", pa.int64()),
        ("pred_class", pa.string()),
    ]
    + [(c, pa.float64()) for c in PROBABILITY_COLUMNS]
    + [("depth", pa.int64()), ("synthetic", pa.bool_())]
)
METRICS = ("macro_auc", "macro_f1", "accuracy")  # the paper's column order: AUC, F1, Acc
METRIC_LABELS = {"macro_auc": "AUC", "macro_f1": "F1", "accuracy": "Acc"}
FOLD_METRICS_SCHEMA = pa.schema(
    [("fold", pa.int64()), ("model", pa.string()), ("n", pa.int64())]
    + [(m, pa.float64()) for m in ("accuracy", "macro_f1", "macro_auc")]
    + [("synthetic", pa.bool_())]
)
SUMMARY_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("metric", pa.string()),
        ("mean", pa.float64()),
        ("std", pa.float64()),
        ("n_folds", pa.int64()),
        ("synthetic", pa.bool_()),
    ]
)
TABLE3_SCHEMA = pa.schema(
    [("model", pa.string())]
    + [
        (f.name, pa.string() if f.type in (str, "str") else pa.float64())
        for f in dataclasses.fields(Compute)
    ]
    + [(f"{m}_{s}", pa.float64()) for m in METRICS for s in ("mean", "std")]
    + [("n_folds", pa.int64()), ("synthetic", pa.bool_())]
)
TABLE5_SCHEMA = pa.schema(
    [("model", pa.string()), ("n_blocks", pa.int64())] + list(SUMMARY_SCHEMA)[1:]
)


def predictions_table(
    fold: int, model: str, rows: pd.DataFrame, probabilities: np.ndarray, *, synthetic: bool
) -> pd.DataFrame:
    """One row per test scan of one fold and model.

    Args:
        rows: the cache-index rows of the fold's test split (scan_key, patient_key, label,
            depth).
        probabilities: (scans, 3) class probabilities, in CLASSES order.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape != (len(rows), len(CLASSES)):
        raise ValueError(f"probabilities must be ({len(rows)}, {len(CLASSES)}), got {p.shape}")
    pred = p.argmax(axis=1)
    true = rows["label"].to_numpy(dtype=np.int64)
    df = pd.DataFrame(
        {
            "fold": int(fold),
            "model": str(model),
            "scan_key": rows["scan_key"].astype(str).values,
            "patient_key": rows["patient_key"].astype(str).values,
            "true_label": true,
            "true_class": [CLASSES[i] for i in true],
            "pred_label": pred.astype(np.int64),
            "pred_class": [CLASSES[i] for i in pred],
            **{c: p[:, i] for i, c in enumerate(PROBABILITY_COLUMNS)},
            "depth": rows["depth"].to_numpy(dtype=np.int64),
            "synthetic": bool(synthetic),
        }
    )
    return df[PREDICTIONS_SCHEMA.names]


def fold_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """Accuracy, macro-F1 and one-vs-rest macro AUC per model x fold (FOLD_METRICS_SCHEMA),
    from a predictions table."""
    rows = []
    for (model, fold), part in predictions.groupby(["model", "fold"], sort=False):
        m = classification_metrics(
            part["true_label"].to_numpy(), part[list(PROBABILITY_COLUMNS)].to_numpy()
        )
        rows.append(
            {
                "fold": int(fold),
                "model": model,
                **dataclasses.asdict(m),
                "synthetic": bool(part["synthetic"].any()),
            }
        )
    return (
        pd.DataFrame(rows, columns=FOLD_METRICS_SCHEMA.names)
        .sort_values(["model", "fold"], kind="stable")
        .reset_index(drop=True)
    )


def summary_long(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over folds per model x metric (SUMMARY_SCHEMA); NaN folds (an AUC
    undefined on a test split with one class) are left out and ``n_folds`` says so."""
    rows = []
    for model, part in per_fold.groupby("model", sort=False):
        for metric in METRICS:
            v = part[metric].astype(float)
            rows.append(
                (
                    model,
                    metric,
                    float(v.mean()),
                    float(v.std(ddof=1)),
                    int(v.count()),
                    bool(part["synthetic"].any()),
                )
            )
    return pd.DataFrame(rows, columns=SUMMARY_SCHEMA.names)


def table3_long(
    per_fold: pd.DataFrame, compute: Mapping[str, Compute], models: Sequence[str]
) -> pd.DataFrame:
    """Table III for machines: per model, its measured compute and mean/std of each metric."""
    long = summary_long(per_fold).set_index(["model", "metric"])
    rows = []
    for model in models:
        row = {"model": model, **dataclasses.asdict(compute[model])}
        for metric in METRICS:
            row[f"{metric}_mean"] = long.loc[(model, metric), "mean"]
            row[f"{metric}_std"] = long.loc[(model, metric), "std"]
        row["n_folds"] = int(long.loc[(model, "accuracy"), "n_folds"])
        row["synthetic"] = bool(long.loc[(model, "accuracy"), "synthetic"])
        rows.append(row)
    return pd.DataFrame(rows, columns=TABLE3_SCHEMA.names)


def table3(long: pd.DataFrame, decimals: int = 2) -> pd.DataFrame:
    """The paper's Table III layout: Model, G MAC, then our measured parameters, peak
    memory and latency, then AUC, F1, Acc as 'mean ± std'."""
    out = pd.DataFrame(
        {
            "Model": long["model"],
            "G MAC": long["gmac"].map(_figure),
            "Params (M)": long["params_m"].map(_figure),
            "Peak memory (MB)": long["peak_memory_mb"].map(lambda v: f"{v:.0f}"),
            "Latency (ms/volume)": long["latency_ms"].map(lambda v: f"{v:.1f}"),
        }
    )
    for metric in METRICS:
        out[METRIC_LABELS[metric]] = [
            format_mean_std(m, s, decimals)
            for m, s in zip(long[f"{metric}_mean"], long[f"{metric}_std"], strict=True)
        ]
    return out


def _figure(v: float) -> str:
    """Two decimals as the paper prints them; three significant digits below 1 (tiny
    test networks would show 0.00)."""
    return f"{v:.2f}" if v >= 1 else f"{v:.3g}"


def table5_long(per_fold: pd.DataFrame, variants: Mapping[str, int]) -> pd.DataFrame:
    """Table V for machines: the summary of each DST variant with its number of blocks."""
    long = summary_long(per_fold[per_fold["model"].isin(list(variants))])
    long.insert(1, "n_blocks", long["model"].map(dict(variants)).astype("int64"))
    return long.sort_values(["n_blocks", "metric"], kind="stable")[TABLE5_SCHEMA.names]


def table5(long: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """The paper's Table V layout: rows AUC, F1-score, Accuracy; one column per number of
    DST blocks ('0 layers', '1 layer', ...), cells 'mean ± std'."""
    blocks = sorted(long["n_blocks"].unique())
    by = long.set_index(["n_blocks", "metric"])
    rows = []
    for metric, label in (("macro_auc", "AUC"), ("macro_f1", "F1-score"), ("accuracy", "Accuracy")):
        rows.append(
            [
                label,
                *(format_mean_std(*by.loc[(b, metric), ["mean", "std"]], decimals) for b in blocks),
            ]
        )
    return pd.DataFrame(
        rows, columns=["Metric", *(f"{b} layer{'s' if b != 1 else ''}" for b in blocks)]
    )
