"""The study's output tables: per-scan predictions, per-fold metrics, the paper's Table II
(per-landmark summary over folds) and Table IV (ablations), as Parquet and Markdown.

Tables are pandas DataFrames of plain types (int64, float64, string, bool and one list of
int64) written with fixed Arrow schemas, so DuckDB, pandas or Spark read the Parquet files
as they are. Synthetic data are always labelled: every numeric table carries a ``synthetic``
bool column, every Parquet file the schema metadata ``cohort.synthetic`` ("true"/"false"),
and every Markdown file opens with the line "SYNTHETIC data (phantoms) ...".

All metrics are computed from the predictions table alone, through
``cohort.train.metrics.localization_metrics``. The table stores, per scan x landmark, the
true and predicted (argmax) slice and ``top2``, the indices of the two most probable slices
(ties to the lower index, as ``top_k_hits`` ranks them). That is all Top-1 and Top-2 need:
Top-1 is ``true_slice == top2[0]``, Top-2 is ``true_slice in top2``. To reuse the metric
code unchanged, each scan's distributions are rebuilt as surrogates with mass 2/3 on
``top2[0]`` and 1/3 on ``top2[1]``: they have the same argmax and the same two most
probable slices as the model's, so every metric comes out identical.

Table II cells are 'mean ± std' over the folds' values, with the sample standard deviation
(ddof=1) and NaN folds (an undefined kappa) left out; ``n_folds`` in the long tables says
how many folds each cell averages.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cohort.anatomy import LANDMARK_KINDS, LANDMARKS, SIDES
from cohort.storage import StorageOptions, join, write_bytes
from cohort.train.calibration import REPORT_COLUMNS as CALIBRATION_COLUMNS
from cohort.train.metrics import OVERALL, LocalizationMetrics, localization_metrics

SYNTHETIC_BANNER = "SYNTHETIC data (phantoms): these numbers describe generated phantoms, " \
                   "not patients."

PREDICTIONS_SCHEMA = pa.schema([
    ("fold", pa.int64()),
    ("series_uid", pa.string()),
    ("patient_key", pa.string()),
    ("landmark", pa.string()),  # one of cohort.anatomy.LANDMARKS
    ("true_slice", pa.int64()),  # slice indices count from the most inferior slice (0)
    ("pred_slice", pa.int64()),  # argmax of the distribution, == top2[0]
    ("top2", pa.list_(pa.int64())),  # two most probable slices, most probable first
    ("probability", pa.float64()),  # probability of pred_slice
    ("true_probability", pa.float64()),  # probability of true_slice (for NLL)
    ("slice_spacing_mm", pa.float64()),  # NaN when unknown
    ("depth", pa.int64()),  # slices in the scan
    ("synthetic", pa.bool_()),
])
# what fold_metrics reads from a predictions table
METRIC_INPUT_COLUMNS = ("fold", "series_uid", "landmark", "true_slice", "pred_slice", "top2",
                        "slice_spacing_mm", "depth", "synthetic")
_METRIC_FIELDS = tuple(f.name for f in dataclasses.fields(LocalizationMetrics))
FOLD_METRICS_SCHEMA = pa.schema(
    [("fold", pa.int64()), ("landmark", pa.string()), ("n", pa.int64())]
    + [(f, pa.float64()) for f in _METRIC_FIELDS if f != "n"]
    + [("synthetic", pa.bool_())])
SUMMARY_SCHEMA = pa.schema([
    ("metric", pa.string()), ("landmark", pa.string()), ("mean", pa.float64()),
    ("std", pa.float64()), ("n_folds", pa.int64()), ("synthetic", pa.bool_())])
ABLATION_SCHEMA = pa.schema([("variant", pa.string())] + list(SUMMARY_SCHEMA))
CALIBRATION_SCHEMA = pa.schema(
    [("fold", pa.int64()), ("landmark", pa.string()), ("n", pa.int64())]
    + [(c, pa.float64()) for c in CALIBRATION_COLUMNS[2:]]
    # whether the fold's model ships with these temperatures (they lowered the NLL on
    # validation scans they were not fitted on) or without (T = 1)
    + [("kept", pa.bool_()), ("synthetic", pa.bool_())])

METRIC_LABELS: dict[str, str] = {
    "mae_slices": "MAE (slices)", "mae_mm": "MAE (mm)", "top1": "Top-1", "top2": "Top-2",
    "acc_tau1": "Acc(τ=1)", "kappa": "κ"}
_KIND_LABELS = {"carotid_canal": "carotid canal", "petrolingual": "petrolingual ligament",
                "anterior_clinoid": "anterior clinoid"}


@dataclass(frozen=True)
class TableConfig:
    """Layout of the summary tables."""

    decimals: int = 3  # digits after the point in 'mean ± std' cells
    # Table II rows, in order (keys of METRIC_LABELS)
    summary_metrics: tuple[str, ...] = ("mae_slices", "top1", "top2", "acc_tau1", "kappa")
    # Table II column groups, in order; the paper prints Left before Right
    sides: tuple[str, ...] = ("left", "right")
    # Table IV columns, in order
    ablation_metrics: tuple[str, ...] = ("mae_slices", "top1", "acc_tau1")

    def __post_init__(self) -> None:
        unknown = set(self.summary_metrics + self.ablation_metrics) - set(METRIC_LABELS)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; use {list(METRIC_LABELS)}")
        if sorted(self.sides) != sorted(SIDES):
            raise ValueError(f"sides must order {SIDES}, got {self.sides}")


def landmark_label(name: str) -> str:
    """'right_carotid_canal' -> 'Right carotid canal'; 'overall' -> 'Overall'."""
    if name == OVERALL:
        return "Overall"
    side, kind = name.split("_", 1)
    return f"{side.capitalize()} {_KIND_LABELS[kind]}"


# --- per-scan predictions --------------------------------------------------------------------

def predictions_table(fold: int, series_uids: Sequence[str], patient_keys: Sequence[str],
                      probabilities: Sequence[np.ndarray], true_slices,
                      spacing_mm: Sequence[float], *, synthetic: bool) -> pd.DataFrame:
    """One row per scan x landmark of one fold's test predictions.

    Args:
        fold: the cross-validation fold whose test split was predicted.
        series_uids, patient_keys: one per scan.
        probabilities: one (landmarks, depth) array of probabilities per scan (calibrated
            ones if temperatures were fitted: only ``probability`` columns change).
        true_slices: (scans, landmarks) true slice indices.
        spacing_mm: slice spacing per scan (NaN when unknown).
        synthetic: the scans are generated phantoms.

    Raises:
        ValueError: lengths or shapes disagree, a row is not a distribution, or a true
            slice lies outside its scan.
    """
    n = len(probabilities)
    true = np.asarray(true_slices, dtype=np.int64)
    if not len(series_uids) == len(patient_keys) == len(spacing_mm) == n:
        raise ValueError(f"give one series_uid, patient_key and spacing per scan ({n}), got "
                         f"{len(series_uids)}, {len(patient_keys)}, {len(spacing_mm)}")
    if true.shape != (n, len(LANDMARKS)):
        raise ValueError(f"true_slices must have shape ({n}, {len(LANDMARKS)}), got {true.shape}")
    rows = []
    for s, p in enumerate(probabilities):
        p = np.asarray(p, dtype=np.float64)
        uid = str(series_uids[s])
        if p.ndim != 2 or p.shape[0] != len(LANDMARKS) or p.shape[1] == 0:
            raise ValueError(f"series {uid}: probabilities must have shape "
                             f"({len(LANDMARKS)}, depth), got {p.shape}")
        if not np.isfinite(p).all() or (p < 0).any() or \
                not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
            raise ValueError(f"series {uid}: each landmark's row must be a probability "
                             "distribution over slices (apply the softmax to logits first)")
        for m, name in enumerate(LANDMARKS):
            t = int(true[s, m])
            if not 0 <= t < p.shape[1]:
                raise ValueError(f"series {uid}: true slice {t} of {name} lies outside its "
                                 f"{p.shape[1]} slices")
            top = np.argsort(-p[m], kind="stable")[:2]  # the tie rule of metrics.top_k_hits
            rows.append((int(fold), uid, str(patient_keys[s]), name, t, int(top[0]),
                         [int(i) for i in top], float(p[m, top[0]]), float(p[m, t]),
                         float(spacing_mm[s]), int(p.shape[1]), bool(synthetic)))
    return pd.DataFrame(rows, columns=PREDICTIONS_SCHEMA.names)


def _surrogate_scans(part: pd.DataFrame) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Surrogate distributions, true slices and spacings of one fold's scans (see module)."""
    counts = part.groupby("series_uid")["landmark"].agg(lambda x: sorted(x))
    bad = counts[counts.map(lambda x: x != sorted(LANDMARKS))]
    if len(bad):
        raise ValueError(f"series {bad.index[0]} must have one row per landmark "
                         f"{list(LANDMARKS)}, has {bad.iloc[0]}")
    order = {name: m for m, name in enumerate(LANDMARKS)}
    probabilities, true, spacing = [], [], []
    for uid, scan in part.groupby("series_uid", sort=True):
        scan = scan.sort_values("landmark", key=lambda c: c.map(order))
        depth = scan["depth"].unique()
        if len(depth) != 1 or scan["slice_spacing_mm"].nunique(dropna=False) != 1:
            raise ValueError(f"series {uid}: depth or slice spacing differ between its rows")
        p = np.zeros((len(LANDMARKS), int(depth[0])))
        for m, (pred, top) in enumerate(zip(scan["pred_slice"], scan["top2"], strict=True)):
            top = [int(i) for i in top]
            if not top or top[0] != pred or len(top) != min(2, p.shape[1]) or \
                    len(set(top)) != len(top) or not all(0 <= i < p.shape[1] for i in top):
                raise ValueError(f"series {uid}: top2 {top} of {LANDMARKS[m]} must list the "
                                 f"predicted slice {pred} first, then another slice")
            p[m, top] = (2 / 3, 1 / 3)[:len(top)]
        probabilities.append(p)
        true.append(scan["true_slice"].to_numpy())
        spacing.append(float(scan["slice_spacing_mm"].iloc[0]))
    return probabilities, np.array(true, dtype=np.int64), np.array(spacing)


# --- metrics per fold and summaries over folds -----------------------------------------------

def fold_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """Localization metrics per fold x landmark (and ``"overall"``), from a predictions table.

    Returns:
        Columns ``FOLD_METRICS_SCHEMA.names``: fold, landmark, n, then the fields of
        ``LocalizationMetrics``, then synthetic. Landmarks in ``LANDMARKS`` order.

    Raises:
        ValueError: a column is missing or a scan lacks a landmark row.
    """
    _require_columns(predictions, METRIC_INPUT_COLUMNS, "a predictions table")
    rows = []
    for fold, part in predictions.groupby("fold", sort=True):
        probabilities, true, spacing = _surrogate_scans(part)
        synthetic = bool(part["synthetic"].any())
        for name, m in localization_metrics(probabilities, true, spacing_mm=spacing).items():
            rows.append({"fold": int(fold), "landmark": name, **dataclasses.asdict(m),
                         "synthetic": synthetic})
    return pd.DataFrame(rows, columns=FOLD_METRICS_SCHEMA.names)


def summary_long(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1) over folds of every metric x landmark, for machines.

    Returns:
        Columns ``SUMMARY_SCHEMA.names``: metric, landmark, mean, std, n_folds (folds with a
        defined value), synthetic. Std is NaN with fewer than two such folds.
    """
    _require_columns(per_fold, FOLD_METRICS_SCHEMA.names, "a fold metrics table")
    synthetic = bool(per_fold["synthetic"].any())
    landmarks = [n for n in (*LANDMARKS, OVERALL) if n in set(per_fold["landmark"])]
    rows = []
    for metric in METRIC_LABELS:
        for name in landmarks:
            values = per_fold.loc[per_fold["landmark"] == name, metric].astype(float)
            rows.append((metric, name, float(values.mean()), float(values.std(ddof=1)),
                         int(values.count()), synthetic))
    return pd.DataFrame(rows, columns=SUMMARY_SCHEMA.names)


def summary_table(per_fold: pd.DataFrame, config: TableConfig = TableConfig()) -> pd.DataFrame:
    """The paper's Table II: rows = metrics, columns = the six landmarks grouped by side
    (``config.sides``) then Overall; cells 'mean ± std' over folds (strings).
    """
    long = summary_long(per_fold).set_index(["metric", "landmark"])
    columns = [f"{side}_{kind}" for side in config.sides for kind in LANDMARK_KINDS]
    columns.append(OVERALL)
    rows = []
    for metric in config.summary_metrics:
        cells = [format_mean_std(*long.loc[(metric, name), ["mean", "std"]], config.decimals)
                 for name in columns]
        rows.append([METRIC_LABELS[metric], *cells])
    return pd.DataFrame(rows, columns=["Metric", *map(landmark_label, columns)])


def ablation_long(variants: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """``summary_long`` of the ``"overall"`` rows of each variant's fold metrics, with a
    ``variant`` column (columns ``ABLATION_SCHEMA.names``)."""
    if not variants:
        raise ValueError("give at least one variant's fold metrics")
    parts = []
    for name, table in variants.items():
        long = summary_long(table)
        long = long[long["landmark"] == OVERALL]
        parts.append(long.assign(variant=str(name)))
    return pd.concat(parts, ignore_index=True)[ABLATION_SCHEMA.names]


def ablation_table(variants: Mapping[str, pd.DataFrame],
                   config: TableConfig = TableConfig()) -> pd.DataFrame:
    """The paper's Table IV, transposed: rows = variants (in the order given), columns =
    ``config.ablation_metrics`` of all landmarks pooled ('mean ± std' over folds)."""
    long = ablation_long(variants).set_index(["variant", "metric"])
    rows = [[str(name), *(format_mean_std(*long.loc[(str(name), metric), ["mean", "std"]],
                                          config.decimals)
                          for metric in config.ablation_metrics)]
            for name in variants]
    return pd.DataFrame(rows, columns=["Variant",
                                       *(METRIC_LABELS[m] for m in config.ablation_metrics)])


def format_mean_std(mean: float, std: float, decimals: int = 3) -> str:
    """'0.130 ± 0.020'; 'n/a' for an undefined mean, '0.130 ± n/a' for a single fold."""
    if not np.isfinite(mean):
        return "n/a"
    spread = f"{std:.{decimals}f}" if np.isfinite(std) else "n/a"
    return f"{mean:.{decimals}f} ± {spread}"


# --- rendering and writing -------------------------------------------------------------------

def to_markdown(table: pd.DataFrame, title: str, synthetic: bool, decimals: int = 3) -> str:
    """A pipe table under ``### title``, opened by the synthetic banner when ``synthetic``.

    The ``synthetic`` column, if any, is not rendered (the banner says it); floats get
    ``decimals`` digits, NaN shows as 'n/a', and '|' in cells is escaped.

    Raises:
        ValueError: the table holds synthetic rows but ``synthetic`` is False.
    """
    if "synthetic" in table.columns:
        if bool(table["synthetic"].any()) and not synthetic:
            raise ValueError(f"table {title!r} holds synthetic rows; render it with "
                             "synthetic=True")
        table = table.drop(columns="synthetic")
    lines = [SYNTHETIC_BANNER, ""] if synthetic else []
    lines += [f"### {title}", ""]
    lines.append(_markdown_row(map(str, table.columns)))
    lines.append(_markdown_row("---" for _ in table.columns))
    for row in table.itertuples(index=False):
        lines.append(_markdown_row(_markdown_cell(v, decimals) for v in row))
    return "\n".join(lines) + "\n"


def write_tables(out_url: str, predictions: pd.DataFrame, *,
                 ablations: Mapping[str, pd.DataFrame] | None = None,
                 calibration: pd.DataFrame | None = None,
                 config: TableConfig = TableConfig(),
                 options: StorageOptions | None = None) -> dict[str, str]:
    """Write the study's tables under ``out_url`` (a folder or an s3:// prefix).

    Writes predictions.parquet, fold_metrics.parquet/.md, table2_summary.parquet (long,
    numeric) and table2_summary.md (the paper's layout); with ``ablations`` (variant name ->
    fold metrics), table4_ablation.parquet/.md; with ``calibration`` (per-fold
    ``calibration_report`` rows with a ``fold`` column), calibration.parquet/.md.
    The tables are synthetic when any prediction row is.

    Returns:
        ``{file name: URL}`` of everything written.

    Raises:
        StorageError: a file cannot be written.
    """
    synthetic = bool(predictions["synthetic"].any())
    per_fold = fold_metrics(predictions)
    parquet = {"predictions": (predictions, PREDICTIONS_SCHEMA),
               "fold_metrics": (per_fold, FOLD_METRICS_SCHEMA),
               "table2_summary": (summary_long(per_fold), SUMMARY_SCHEMA)}
    markdown = {"fold_metrics": (per_fold, "Localization metrics per fold and landmark"),
                "table2_summary": (summary_table(per_fold, config),
                                   "Landmark localization, mean ± std (ddof=1) over folds")}
    if ablations:
        parquet["table4_ablation"] = (ablation_long(ablations), ABLATION_SCHEMA)
        markdown["table4_ablation"] = (ablation_table(ablations, config),
                                       "Ablations, all landmarks pooled, mean ± std over folds")
    if calibration is not None:
        calibration = calibration.assign(synthetic=synthetic)
        if "kept" not in calibration:
            calibration = calibration.assign(kept=True)
        parquet["calibration"] = (calibration, CALIBRATION_SCHEMA)
        markdown["calibration"] = (calibration, "Calibration of the localization head "
                                                "(temperature scaling), per fold")
    written = {}
    for name, (table, schema) in parquet.items():
        url = join(out_url, f"{name}.parquet")
        write_bytes(url, parquet_bytes(table, schema, synthetic=synthetic), options)
        written[f"{name}.parquet"] = url
    for name, (table, title) in markdown.items():
        url = join(out_url, f"{name}.md")
        write_bytes(url, to_markdown(table, title, synthetic, config.decimals).encode(), options)
        written[f"{name}.md"] = url
    return written


def parquet_bytes(table: pd.DataFrame, schema: pa.Schema, *, synthetic: bool) -> bytes:
    """A Parquet file of ``table`` with ``schema`` and ``cohort.synthetic`` metadata."""
    _require_columns(table, schema.names, "the table")
    arrow = pa.Table.from_pandas(table[schema.names], schema=schema, preserve_index=False)
    arrow = arrow.replace_schema_metadata(
        {"cohort.synthetic": "true" if synthetic else "false"})
    buffer = io.BytesIO()
    pq.write_table(arrow, buffer)
    return buffer.getvalue()


def _require_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what} lacks the columns {missing}; build it with "
                         "cohort.train.tables")


def _markdown_cell(value, decimals: int) -> str:
    if isinstance(value, float | np.floating):
        return "n/a" if np.isnan(value) else f"{value:.{decimals}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _markdown_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"
