"""Output tables: metrics from the predictions table equal metrics computed directly on the
model's distributions, Table II / IV layout and formatting, Markdown, Parquet and DuckDB."""

import io

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.special import softmax

from cohort.anatomy import LANDMARKS
from cohort.storage import read_bytes
from cohort.train.calibration import calibration_report
from cohort.train.metrics import OVERALL, localization_metrics
from cohort.train.tables import (
    FOLD_METRICS_SCHEMA,
    PREDICTIONS_SCHEMA,
    SUMMARY_SCHEMA,
    SYNTHETIC_BANNER,
    TableConfig,
    ablation_long,
    ablation_table,
    fold_metrics,
    format_mean_std,
    predictions_table,
    summary_long,
    summary_table,
    to_markdown,
)
from cohort.train.tables import write_tables as write_study_tables

FOLDS = 5
TABLE2_COLUMNS = ["Metric", "Left carotid canal", "Left petrolingual ligament",
                  "Left anterior clinoid", "Right carotid canal", "Right petrolingual ligament",
                  "Right anterior clinoid", "Overall"]


def fake_fold(fold: int, rng: np.random.Generator, n_scans: int = 12) -> dict:
    """One fold's seeded fake test predictions: scans of 20..40 slices, peaked, noisy
    distributions (some argmax one or two slices off, some ties), spacings 1.25..5 mm."""
    depths = rng.integers(20, 41, size=n_scans)
    true = np.array([np.sort(rng.integers(3, d - 3, size=6)) for d in depths])
    probabilities = []
    for d, t in zip(depths, true, strict=True):
        shift = rng.choice([0, 0, 0, 1, -1, 2], size=(6, 1))
        z = -((np.arange(d)[None, :] - t[:, None] - shift) ** 2) + rng.normal(0, 0.7, (6, d))
        p = softmax(z, axis=1)
        if rng.random() < 0.3:  # a tie between the two best slices of the first landmark
            best = np.argsort(-p[0], kind="stable")[:2]
            p[0, best] = p[0, best].mean()
        probabilities.append(p)
    return {"fold": fold, "series_uids": [f"1.2.826.{fold}.{s}" for s in range(n_scans)],
            "patient_keys": [f"P{fold}{s // 2:02d}" for s in range(n_scans)],
            "probabilities": probabilities, "true_slices": true,
            "spacing_mm": rng.choice([1.25, 2.5, 5.0], size=n_scans)}


@pytest.fixture(scope="module")
def study():
    rng = np.random.default_rng(7)
    folds = [fake_fold(f, rng) for f in range(FOLDS)]
    predictions = pd.concat([predictions_table(**f, synthetic=True) for f in folds],
                            ignore_index=True)
    return folds, predictions


def test_predictions_table_rows(study):
    folds, predictions = study
    assert list(predictions.columns) == PREDICTIONS_SCHEMA.names
    assert len(predictions) == FOLDS * 12 * 6
    first = predictions.iloc[0]
    p = folds[0]["probabilities"][0][0]
    assert first["series_uid"] == "1.2.826.0.0" and first["landmark"] == LANDMARKS[0]
    assert first["pred_slice"] == int(np.argmax(p)) == first["top2"][0]
    assert first["probability"] == p.max()
    assert first["true_probability"] == p[folds[0]["true_slices"][0, 0]]
    assert first["depth"] == len(p) and bool(first["synthetic"])
    assert (predictions["pred_slice"] == predictions["top2"].str[0]).all()


def test_fold_metrics_equal_metrics_on_the_full_distributions(study):
    folds, predictions = study
    per_fold = fold_metrics(predictions)
    assert list(per_fold.columns) == FOLD_METRICS_SCHEMA.names
    assert len(per_fold) == FOLDS * 7
    fields = ["n", "mae_slices", "mae_mm", "top1", "top2", "acc_tau1", "kappa"]
    for f in folds:
        direct = localization_metrics(f["probabilities"], f["true_slices"],
                                      spacing_mm=f["spacing_mm"])
        rows = per_fold[per_fold["fold"] == f["fold"]].set_index("landmark")
        assert list(rows.index) == [*LANDMARKS, OVERALL]
        for name, m in direct.items():
            assert rows.loc[name, fields].tolist() == pytest.approx(
                [getattr(m, k) for k in fields], rel=1e-12, abs=0)
    # the data exercise every metric: some errors, some Top-1 misses caught by Top-2
    overall = per_fold[per_fold["landmark"] == OVERALL]
    assert (overall["mae_slices"] > 0).all()
    assert (overall["top2"] > overall["top1"]).any()
    assert per_fold["synthetic"].all()


def test_fold_metrics_refuses_incomplete_scans(study):
    _, predictions = study
    with pytest.raises(ValueError, match="one row per landmark"):
        fold_metrics(predictions.iloc[1:])
    broken = predictions.copy()
    broken.at[0, "top2"] = [broken.at[0, "top2"][1], broken.at[0, "top2"][0]]
    with pytest.raises(ValueError, match="predicted slice"):
        fold_metrics(broken)
    with pytest.raises(ValueError, match="lacks the columns"):
        fold_metrics(predictions.drop(columns="top2"))


def test_predictions_table_refuses_logits_and_bad_shapes():
    f = fake_fold(0, np.random.default_rng(0), n_scans=2)
    logits = dict(f, probabilities=[np.log(p + 1e-12) for p in f["probabilities"]])
    with pytest.raises(ValueError, match="softmax"):
        predictions_table(**logits, synthetic=False)
    with pytest.raises(ValueError, match="one series_uid"):
        predictions_table(**dict(f, spacing_mm=[1.0]), synthetic=False)
    with pytest.raises(ValueError, match="outside"):
        predictions_table(**dict(f, true_slices=f["true_slices"] + 100), synthetic=False)


def hand_fold_metrics(maes, synthetic=False) -> pd.DataFrame:
    """Fold metrics with every metric of every landmark of fold f equal to maes[f]."""
    rows = [{"fold": f, "landmark": name, "n": 10, "mae_slices": v, "mae_mm": 2 * v,
             "top1": 1 - v, "top2": 1 - v / 2, "acc_tau1": 1 - v / 4, "kappa": 1 - v / 10,
             "synthetic": synthetic}
            for f, v in enumerate(maes) for name in (*LANDMARKS, OVERALL)]
    return pd.DataFrame(rows, columns=FOLD_METRICS_SCHEMA.names)


def test_summary_table_layout_and_sample_std():
    # MAE .11 .11 .13 .15 .15: mean .13; deviations (-.02, -.02, 0, .02, .02):
    # sum of squares .0016; ddof=1: sqrt(.0016 / 4) = .020 (ddof=0 would give .018)
    per_fold = hand_fold_metrics([0.11, 0.11, 0.13, 0.15, 0.15])
    table = summary_table(per_fold)
    assert list(table.columns) == TABLE2_COLUMNS
    assert list(table["Metric"]) == ["MAE (slices)", "Top-1", "Top-2", "Acc(τ=1)", "κ"]
    assert (table.iloc[0, 1:] == "0.130 ± 0.020").all()
    # Top-1 = 1 - MAE: mean .870, same std;  Top-2 = 1 - MAE/2: .935 ± .010
    assert table.iloc[1, 1] == "0.870 ± 0.020" and table.iloc[2, 7] == "0.935 ± 0.010"
    long = summary_long(per_fold)
    assert list(long.columns) == SUMMARY_SCHEMA.names
    row = long[(long["metric"] == "mae_slices") & (long["landmark"] == OVERALL)].iloc[0]
    assert row["mean"] == pytest.approx(0.13) and row["std"] == pytest.approx(0.02)
    assert row["n_folds"] == 5
    # the brief's right-first grouping, and an extra row
    cfg = TableConfig(sides=("right", "left"), summary_metrics=("mae_slices", "mae_mm"),
                      decimals=2)
    table = summary_table(per_fold, cfg)
    assert list(table.columns)[1:4] == ["Right carotid canal", "Right petrolingual ligament",
                                        "Right anterior clinoid"]
    assert table.iloc[1].tolist() == ["MAE (mm)"] + ["0.26 ± 0.04"] * 7


def test_undefined_values_are_left_out_of_the_mean():
    per_fold = hand_fold_metrics([0.1, 0.2, 0.3])
    per_fold.loc[per_fold["fold"] == 0, "kappa"] = np.nan  # e.g. one category only
    long = summary_long(per_fold).set_index(["metric", "landmark"])
    # kappa = 1 - v/10 over folds 1, 2: .98, .97 -> mean .975, std .00707
    assert long.loc[("kappa", OVERALL), "mean"] == pytest.approx(0.975)
    assert long.loc[("kappa", OVERALL), "n_folds"] == 2
    assert format_mean_std(0.5, np.nan) == "0.500 ± n/a"
    assert format_mean_std(np.nan, np.nan) == "n/a"


def test_ablation_table_in_table_iv_layout():
    variants = {"w/o Attention": hand_fold_metrics([0.26, 0.28, 0.27]),
                "Right-Pad": hand_fold_metrics([0.14, 0.15, 0.145]),
                "Full model": hand_fold_metrics([0.13, 0.14, 0.13])}
    table = ablation_table(variants)
    assert list(table.columns) == ["Variant", "MAE (slices)", "Top-1", "Acc(τ=1)"]
    assert list(table["Variant"]) == list(variants)
    # w/o Attention: MAE .26 .28 .27 -> .270 ± .010; Top-1 .730 ± .010;
    # Acc = 1 - MAE/4: .935 .930 .9325 -> .9325 ± .0025
    assert table.iloc[0].tolist() == ["w/o Attention", "0.270 ± 0.010", "0.730 ± 0.010",
                                      "0.932 ± 0.003"]
    long = ablation_long(variants)
    assert set(long["landmark"]) == {OVERALL} and len(long) == 3 * 6
    with pytest.raises(ValueError, match="at least one variant"):
        ablation_table({})


def test_markdown_rendering():
    table = summary_table(hand_fold_metrics([0.11, 0.11, 0.13, 0.15, 0.15], synthetic=True))
    text = to_markdown(table, "Landmark localization", synthetic=True)
    lines = text.splitlines()
    assert lines[0] == SYNTHETIC_BANNER and lines[0].startswith("SYNTHETIC data (phantoms)")
    assert lines[2] == "### Landmark localization"
    assert lines[4] == "| " + " | ".join(TABLE2_COLUMNS) + " |"
    assert lines[5] == "| " + " | ".join(["---"] * 8) + " |"
    assert lines[6] == "| MAE (slices) | " + " | ".join(["0.130 ± 0.020"] * 7) + " |"
    assert len(lines) == 6 + 5
    # numeric tables: floats rounded, NaN as n/a, pipes escaped, synthetic column dropped
    numeric = pd.DataFrame({"name": ["a|b"], "x": [np.nan], "y": [0.12345], "synthetic": [True]})
    text = to_markdown(numeric, "t", synthetic=True, decimals=2)
    assert text.splitlines()[-1] == "| a\\|b | n/a | 0.12 |"
    with pytest.raises(ValueError, match="synthetic=True"):
        to_markdown(numeric, "t", synthetic=False)
    real = to_markdown(numeric.assign(synthetic=False), "t", synthetic=False)
    assert real.splitlines()[0] == "### t" and "SYNTHETIC" not in real


def test_write_tables_round_trip_through_parquet_and_duckdb(study, tmp_path):
    folds, predictions = study
    variants = {"Full model": fold_metrics(predictions),
                "Right-Pad": fold_metrics(predictions.assign(synthetic=True))}
    calibration = pd.concat(
        [calibration_report([np.log(p + 1e-12) for p in f["probabilities"]],
                            f["true_slices"], 1.5).assign(fold=f["fold"]) for f in folds],
        ignore_index=True)
    written = write_study_tables(str(tmp_path / "tables"), predictions, ablations=variants,
                                 calibration=calibration)
    assert sorted(written) == sorted(
        ["predictions.parquet"] + [f"{n}.{ext}" for n in ("fold_metrics", "table2_summary",
                                   "table4_ablation", "calibration") for ext in ("parquet", "md")])
    for name, url in written.items():
        if name.endswith(".md"):
            assert read_bytes(url).decode().startswith("SYNTHETIC data (phantoms)")
        else:
            assert pq.read_schema(url).metadata[b"cohort.synthetic"] == b"true"
    # Parquet round trip: same rows, plain types, the list column intact
    back = pd.read_parquet(written["predictions.parquet"])
    pd.testing.assert_frame_equal(back.assign(top2=back["top2"].map(list)), predictions,
                                  check_dtype=False)
    assert pq.read_schema(written["predictions.parquet"]) \
        .field("top2").type.value_type.bit_width == 64
    # DuckDB recomputes MAE, Top-1, Top-2 and Acc(tau=1) per fold from the predictions alone
    got = duckdb.sql(f"""
        SELECT fold, avg(abs(pred_slice - true_slice)), avg((top2[1] = true_slice)::DOUBLE),
               avg(list_contains(top2, true_slice)::DOUBLE),
               avg((abs(pred_slice - true_slice) <= 1)::DOUBLE), bool_and(synthetic)
        FROM read_parquet('{written["predictions.parquet"]}') GROUP BY fold ORDER BY fold
    """).fetchall()
    per_fold = pd.read_parquet(written["fold_metrics.parquet"])
    overall = per_fold[per_fold["landmark"] == OVERALL]
    expected = overall[["fold", "mae_slices", "top1", "top2", "acc_tau1"]].to_numpy()
    assert np.allclose(np.array([r[:5] for r in got], dtype=float), expected, rtol=1e-12)
    assert all(r[5] is True for r in got)
    # the summary's long table answers SQL too
    (mean, std), = duckdb.sql(f"""
        SELECT mean, std FROM read_parquet('{written["table2_summary.parquet"]}')
        WHERE metric = 'mae_slices' AND landmark = 'overall'""").fetchall()
    assert mean == pytest.approx(overall["mae_slices"].mean())
    assert std == pytest.approx(overall["mae_slices"].std(ddof=1))
    md = read_bytes(written["table2_summary.md"]).decode()
    assert "| Metric | Left carotid canal |" in md
    cal = pd.read_parquet(written["calibration.parquet"])
    assert len(cal) == FOLDS * 7 and (cal["temperature"].dropna() == 1.5).all()


def test_write_tables_to_s3(study, s3_server):
    _, predictions = study
    bucket = s3_server.make_bucket("study-tables")
    written = write_study_tables(f"{bucket}/run-1", predictions,
                                 options=s3_server.storage_options())
    assert written["predictions.parquet"] == f"{bucket}/run-1/predictions.parquet"
    data = read_bytes(written["table2_summary.parquet"], s3_server.storage_options())
    long = pd.read_parquet(io.BytesIO(data))
    assert long["synthetic"].all() and set(long["landmark"]) == {*LANDMARKS, OVERALL}
