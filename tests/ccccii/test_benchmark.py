"""A tiny 3-fold Clean-CC-CCII benchmark end to end through Ray Train (num_workers=1):
every table is written, and its numbers equal those recomputed from the saved predictions.

The end-to-end run trains two networks (6 Ray Train fits: their fixed start-up cost is most
of the time; the benchmark's default is five folds, through the same fold machinery);
Table V's own layout with several DST depths is checked on hand-made fold metrics instead
of training a third network."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from cohort.ccccii.benchmark import BenchmarkConfig
from cohort.ccccii.cache import InputConfig
from cohort.ccccii.command import benchmark_ccccii
from cohort.ccccii.tables import PROBABILITY_COLUMNS, table5, table5_long
from cohort.errors import ConfigError
from cohort.synth.ccccii import ChestConfig, generate_ccccii
from cohort.train.loop import TrainConfig
from cohort.train.splits import SplitConfig
from cohort.train.study import StudyConfig


def _config(**kw) -> BenchmarkConfig:
    base = dict(
        models=("dst-tiny", "resnet_tiny_3d"),
        ablation_blocks=(2,),
        input=InputConfig(size=32, depth=16),  # tiny CNNs end at 2 x 2 x 2
        study=StudyConfig(
            train=TrainConfig(
                task="classification",
                epochs=1,
                batch_size=4,
                lr=1e-2,
                momentum=0.9,
                augment=False,
                max_len=64,
            ),
            splits=SplitConfig(folds=3, seed=1),
            workers=1,
        ),
        measure_repeats=1,
    )
    return BenchmarkConfig(**{**base, **kw})


def test_ablation_variants_and_bad_configurations():
    cfg = BenchmarkConfig(models=("dst", "resnet50_3d"), ablation_blocks=(0, 1, 8))
    assert cfg.ablation() == {"dst+blocks_0": 0, "dst+blocks_1": 1, "dst": 8}
    assert cfg.variants() == ["dst", "resnet50_3d", "dst+blocks_0", "dst+blocks_1"]
    native = BenchmarkConfig(models=("dst-small", "densenet121_3d"), native_depth=True)
    assert native.input_of("dst-small").depth is None
    assert native.input_of("densenet121_3d").depth == 64
    with pytest.raises(ConfigError, match="needs a DST"):
        BenchmarkConfig(models=("resnet50_3d",), ablation_blocks=(0,))
    with pytest.raises(ConfigError, match="reduces a 16x16x8 input to a single voxel"):
        BenchmarkConfig(
            models=("resnet_tiny_3d",), ablation_blocks=(), input=InputConfig(size=16, depth=8)
        )
    with pytest.raises(ConfigError, match="unknown model 'vit'"):
        BenchmarkConfig(models=("vit",))


@pytest.mark.timeout(1500)  # 6 Ray Train fits: minutes on a busy 2-core machine
def test_tiny_three_fold_benchmark_writes_every_table(ray_local, tmp_path):
    data = tmp_path / "data"
    generate_ccccii(
        ChestConfig(patients=12, seed=5, matrix=32, min_slices=6, max_slices=12, extra_scan_p=0.3),
        str(data),
    )
    (data / "COVID").mkdir()  # a bad folder: reported, the run goes on
    out = tmp_path / "out"
    report = benchmark_ccccii(str(data), str(out), _config())
    assert report.startswith("SYNTHETIC data: Clean-CC-CCII benchmark")
    tables = out / "tables"
    preds = pd.read_parquet(tables / "predictions.parquet")
    splits = pd.read_parquet(out / "splits.parquet")
    variants = ["dst-tiny", "resnet_tiny_3d"]
    assert sorted(preds["model"].unique()) == sorted(variants)
    # every scan is tested once per model, in the fold that holds its patient out
    test_of = splits[splits.split == "test"].set_index("patient_key")["fold"]
    assert (preds["fold"] == preds["patient_key"].map(test_of)).all()
    assert (preds.groupby("model")["scan_key"].nunique() == preds["scan_key"].nunique()).all()
    assert preds["synthetic"].all()
    assert pq.read_schema(tables / "predictions.parquet").metadata[b"cohort.synthetic"] == b"true"
    # fold metrics equal scikit-learn's, recomputed from the saved per-scan predictions
    folds = pd.read_parquet(tables / "fold_metrics.parquet")
    assert len(folds) == 3 * len(variants)
    for (model, fold), part in preds.groupby(["model", "fold"]):
        got = folds[(folds.model == model) & (folds.fold == fold)].iloc[0]
        p = part[list(PROBABILITY_COLUMNS)].to_numpy()
        t = part["true_label"].to_numpy()
        assert got["accuracy"] == pytest.approx(accuracy_score(t, p.argmax(1)))
        assert got["macro_f1"] == pytest.approx(f1_score(t, p.argmax(1), average="macro"))
        aucs = [roc_auc_score(t == c, p[:, c]) for c in range(3) if 0 < (t == c).sum() < len(t)]
        assert got["macro_auc"] == pytest.approx(np.mean(aucs) if aucs else np.nan, nan_ok=True)
        if len(np.unique(t)) == 3:
            assert got["macro_auc"] == pytest.approx(roc_auc_score(t, p, multi_class="ovr"))
    # Table III: mean and sample std over folds of the per-fold values, plus compute
    t3 = pd.read_parquet(tables / "table3_benchmark.parquet").set_index("model")
    assert list(t3.index) == ["dst-tiny", "resnet_tiny_3d"]
    for model in t3.index:
        f = folds[folds.model == model]
        for metric in ("accuracy", "macro_f1"):
            assert t3.loc[model, f"{metric}_mean"] == pytest.approx(f[metric].mean())
            assert t3.loc[model, f"{metric}_std"] == pytest.approx(f[metric].std(ddof=1))
        assert t3.loc[model, "gmac"] > 0 and t3.loc[model, "params_m"] > 0
        assert t3.loc[model, "latency_ms"] > 0 and t3.loc[model, "input_shape"] == "32x32x16"
    # Table V: the DST at its own depth (tiny: 2 blocks)
    t5 = pd.read_parquet(tables / "table5_depth.parquet")
    assert t5["n_blocks"].unique().tolist() == [2]
    acc = t5[t5.metric == "accuracy"]["mean"].item()
    assert acc == pytest.approx(folds[folds.model == "dst-tiny"]["accuracy"].mean())
    for name in ("fold_metrics", "table3_benchmark", "table5_depth"):
        md = (tables / f"{name}.md").read_text()
        assert md.startswith("SYNTHETIC") and "### SYNTHETIC data" in md
    assert "| AUC | F1 | Acc |" in (tables / "table3_benchmark.md").read_text()
    assert "| Metric | 2 layers |" in (tables / "table5_depth.md").read_text()
    problems = pd.read_parquet(tables / "problems.parquet")
    assert problems["code"].tolist() == ["unknown_class"]
    assert problems["path"].tolist() == [str(data / "COVID")]
    n = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{tables / 'fold_metrics.parquet'}')"
    ).fetchall()[0][0]
    assert n == 6
    # a rerun reuses the cache and every fold's predictions: nothing is retrained
    again = benchmark_ccccii(str(data), str(out), _config())
    pd.testing.assert_frame_equal(pd.read_parquet(tables / "predictions.parquet"), preds)
    assert "Table III layout" in again


def test_table5_layout_from_fold_metrics():
    rows = []
    for model, acc in (
        ("dst+blocks_0", [0.3, 0.4]),
        ("dst+blocks_1", [0.8, 0.9]),
        ("dst", [0.9, 1.0]),
    ):
        for fold, a in enumerate(acc):
            rows.append(
                {
                    "fold": fold,
                    "model": model,
                    "n": 10,
                    "accuracy": a,
                    "macro_f1": a,
                    "macro_auc": a,
                    "synthetic": True,
                }
            )
    per_fold = pd.DataFrame(rows)
    long = table5_long(per_fold, {"dst+blocks_0": 0, "dst+blocks_1": 1, "dst": 8})
    assert long["n_blocks"].tolist() == [0, 0, 0, 1, 1, 1, 8, 8, 8]
    wide = table5(long)
    assert list(wide.columns) == ["Metric", "0 layers", "1 layer", "8 layers"]
    assert wide["Metric"].tolist() == ["AUC", "F1-score", "Accuracy"]
    assert wide.iloc[2].tolist() == ["Accuracy", "0.350 ± 0.071", "0.850 ± 0.071", "0.950 ± 0.071"]
