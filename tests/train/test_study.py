"""A tiny 5-fold localization study end to end through Ray Train (num_workers=1)."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from cohort.errors import ConfigError
from cohort.model.dst import build_config, load_checkpoint
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort
from cohort.testing import faults
from cohort.train.data import build_cache, check_labels, synthetic_sources
from cohort.train.loop import TrainConfig
from cohort.train.metrics import localization_metrics
from cohort.train.splits import SplitConfig
from cohort.train.study import StudyConfig, load_or_make_splits, run_study


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    cfg = SynthConfig(patients=12, seed=4, matrix=48, thicknesses_mm=(5.0,), localizer_p=0,
                      second_series_p=0, followup_p=0.3, workers=1)
    generate_cohort(cfg, str(root / "cohort"))
    sources, labels = synthetic_sources(str(root / "cohort"))
    index = build_cache(sources, labels, str(root / "cache"))
    return root, index


def test_bad_labels_are_refused_before_training(cache):
    _, index = cache
    depths = dict(zip(index["series_uid"], index["volume_depth"], strict=True))
    labels = index[["series_uid", "patient_key"] +
                   [c for c in index.columns if c.endswith("_slice")]].copy()
    bad = labels.copy()
    bad.loc[0, "left_petrolingual_slice"] = 999
    bad.loc[1, "right_anterior_clinoid_slice"] = 0
    bad = pd.concat([bad, pd.DataFrame([{**labels.iloc[2].to_dict(), "series_uid": "1.2.3"}])])
    with pytest.raises(ConfigError) as e:
        check_labels(bad, depths)
    msg = str(e.value)
    assert "match no series: 1.2.3" in msg
    assert f"{labels.iloc[0].series_uid}: left_petrolingual_slice outside" in msg
    assert f"{labels.iloc[1].series_uid}: right landmarks out of anatomical order" in msg


def test_tiny_three_fold_study(cache, ray_local, tmp_path):
    # three folds: every fold-level property of the five-fold study at 3/5 of its Ray Train
    # fits (their start-up is most of this test's time); the splits' own tests use five
    root, index = cache
    out = tmp_path / "study"
    cfg = StudyConfig(train=TrainConfig(model="tiny", epochs=2, max_len=64, patience=5),
                      splits=SplitConfig(folds=3, seed=1), workers=1)
    written = run_study(index, str(root / "cache"), str(out), cfg, synthetic=True)
    preds = pd.read_parquet(written["predictions.parquet"])
    # every scan is tested exactly once, in the fold that holds its patient out
    splits = pd.read_parquet(out / "splits.parquet")
    assert sorted(preds["series_uid"].unique()) == sorted(index["series_uid"])
    test_of = splits[splits.split == "test"].set_index("patient_key")["fold"]
    assert (preds["fold"] == preds["patient_key"].map(test_of)).all()
    # the per-fold table equals metrics recomputed from the saved predictions
    folds = pd.read_parquet(written["fold_metrics.parquet"])
    for fold, part in preds.groupby("fold"):
        pivot = part.pivot(index="series_uid", columns="landmark")
        names = list(pivot["true_slice"].columns)
        true = pivot["true_slice"].to_numpy()
        pred = pivot["pred_slice"].to_numpy()
        got = folds[(folds.fold == fold) & (folds.landmark == "overall")].iloc[0]
        assert got["mae_slices"] == pytest.approx(np.abs(true - pred).mean())
        assert got["acc_tau1"] == pytest.approx((np.abs(true - pred) <= 1).mean())
        one_hot = [np.eye(int(d))[p] for d, p in zip(
            part.groupby("series_uid")["depth"].first().loc[pivot.index], pred, strict=True)]
        direct = localization_metrics(one_hot, true, names=names)
        assert got["top1"] == pytest.approx(direct["overall"].top1)
        assert got["kappa"] == pytest.approx(direct["overall"].kappa, nan_ok=True)
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{written['table2_summary.parquet']}')"
                   ).fetchall()[0][0]
    assert n > 0
    md = (out / "tables" / "table2_summary.md").read_text()
    assert md.startswith("SYNTHETIC")
    model, meta = load_checkpoint(out / "models" / "fold-0.pt",
                                  expect=build_config("tiny", max_len=64))
    assert len(meta["temperatures"]) == 6 and meta["synthetic"] is True
    # resuming reloads the saved splits instead of drawing new ones
    assert sorted(folds["fold"].unique()) == [0, 1, 2]
    again = load_or_make_splits(index, str(out), SplitConfig(folds=3, seed=99))
    pd.testing.assert_frame_equal(again, splits)


def test_a_worker_killed_mid_fold_resumes_from_its_last_checkpoint(cache, ray_local, tmp_path):
    from cohort.train.study import fold_rows, run_fold

    root, index = cache
    out = tmp_path / "crash"
    cfg = StudyConfig(train=TrainConfig(model="tiny", epochs=3, max_len=64, patience=5),
                      splits=SplitConfig(folds=5, seed=1), workers=1)
    splits = load_or_make_splits(index, str(out), cfg.splits)
    # the worker dies once when epoch 1 starts, after epoch 0's checkpoint (the delay lets
    # the controller register that checkpoint first)
    with faults.armed("epoch_start", str(tmp_path / "killed-once"), delay_s=2.0, epoch=1):
        model, meta = run_fold(0, index, splits, str(root / "cache"), str(out), cfg, None)
    assert (tmp_path / "killed-once").exists()
    last = meta["last_metrics"]
    assert last["epoch"] == 2  # all epochs done
    assert last["started_at_epoch"] == 1  # the second attempt resumed after epoch 0
    assert len(fold_rows(index, splits, 0, "test")) > 0
