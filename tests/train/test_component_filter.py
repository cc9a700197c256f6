"""Fitting the component filter: the table of a tiny crop cache, the series rows of a
filtered table on a hand-worked example, and the out-of-fold fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cohort.model.component_filter import FEATURES, TreeEnsemble
from cohort.train.component_filter import (
    BoostingConfig,
    ComponentTable,
    component_table,
    evaluate_component_filter,
    fit_component_filter,
    logits_from_dir,
    series_rows,
)


@pytest.fixture
def cache(tmp_path):
    """One 20 x 20 x 4 crop (0.5 mm pixels, 2 mm slices, voxel 0.5 mm3): a calcium blob of
    8 voxels with logits 20 (p ~1) and a 2-voxel false positive with logit 2; 3 more true
    voxels outside the crop."""
    hu = np.full((20, 20, 4), 40.0)
    true = np.zeros_like(hu)
    true[5:7, 5:7, 1:3] = 1
    logits = np.full(hu.shape, -40.0, dtype=np.float32)
    logits[5:7, 5:7, 1:3] = 20.0
    logits[15, 15:17, 2] = 2.0
    (tmp_path / "crops").mkdir()
    np.save(tmp_path / "crops" / "s1.npy", np.stack([hu, true]).astype(np.float16))
    (tmp_path / "logits").mkdir()
    np.save(tmp_path / "logits" / "s1.npy", logits)
    pd.DataFrame([{"series_uid": "s1", "patient_key": "p1", "path": "crops/s1.npy",
                   "pixel_spacing_mm": 0.5, "slice_spacing_mm": 2.0, "voxel_mm3": 0.5,
                   "slice_thickness_mm": 2.0, "crop_voxels": 8, "mask_voxels": 11}]
                 ).to_parquet(tmp_path / "index.parquet")
    return tmp_path


def test_component_table_of_a_tiny_cache(cache):
    table = component_table(str(cache), logits_from_dir(str(cache / "logits")), 1.0)
    c = table.components.sort_values("voxels")
    assert c["voxels"].tolist() == [2, 8] and c["overlap"].tolist() == [0, 8]
    assert c["y"].tolist() == [0, 1] and c["lower_voxels"].tolist() == [0, 8]
    s = table.series.iloc[0]
    assert (s["true_in_crop"], s["true_voxels"], s["upper_voxels"]) == (8, 11, 10)
    # voxels at each upper-bound threshold: the blob (p ~1) always, the false pair (p 0.88)
    # down from 0.5
    from cohort.train.seg_metrics import UPPER_GRID

    assert s["upper_counts"] == [10] * len(UPPER_GRID)


def hand_table() -> ComponentTable:
    """Two series: s1 with a true component (10 voxels, 8 true, 4 sure) and a false one
    (5 voxels); s2 without calcium and one false component (3 voxels)."""
    comps = pd.DataFrame({"series_uid": ["s1", "s1", "s2"], "patient_key": ["a", "a", "b"],
                          "voxels": [10, 5, 3], "overlap": [8, 0, 0],
                          "lower_voxels": [4, 0, 0], "y": [1, 0, 0]})
    for f in FEATURES:
        comps[f] = 0.0
    series = pd.DataFrame({"series_uid": ["s1", "s2"], "patient_key": ["a", "b"],
                           "voxel_mm3": [0.5, 1.0], "slice_thickness_mm": [1.0, 3.0],
                           "true_in_crop": [9, 0], "true_voxels": [12, 0],
                           "upper_voxels": [20, 6]})
    return ComponentTable(comps, series)


def test_series_rows_count_the_kept_components_whole():
    rows = series_rows(hand_table(), np.array([0.9, 0.1, 0.5]), keep_score=0.3)
    s1, s2 = rows.iloc[0], rows.iloc[1]
    assert s1["dice"] == pytest.approx(2 * 8 / (10 + 9))
    assert (s1["pred_voxels"], s1["overlap_voxels"], s1["true_voxels"]) == (10, 8, 12)
    assert (s1["pred_mm3"], s1["true_mm3"], s1["low_mm3"], s1["high_mm3"]) == \
        pytest.approx((5.0, 6.0, 2.0, 10.0))
    assert np.isclose(s2["dice"], 0.0) and s2["pred_mm3"] == 3.0 and s2["high_mm3"] == 6.0


def test_series_rows_of_a_series_with_nothing_kept():
    rows = series_rows(hand_table(), np.zeros(3), keep_score=0.3)
    assert rows["pred_voxels"].tolist() == [0, 0] and np.isnan(rows["dice"].iloc[1])


def random_table(n: int, n_series: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(components, series) of ``n`` random components over ``n_series`` series of
    ``n_series / 2`` patients; a component is calcium (5 true voxels) when its ``lg_pmax``
    is positive."""
    rng = np.random.default_rng(seed)
    comps = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=list(FEATURES))
    comps["y"] = (comps["lg_pmax"] > 0).astype(int)
    comps["series_uid"] = [f"s{i % n_series}" for i in range(n)]
    comps["patient_key"] = [f"p{i % (n_series // 2)}" for i in range(n)]
    comps["voxels"], comps["lower_voxels"] = 5, 1
    comps["overlap"] = comps["y"] * 5
    series = pd.DataFrame({"series_uid": [f"s{i}" for i in range(n_series)],
                           "patient_key": [f"p{i % (n_series // 2)}" for i in range(n_series)],
                           "voxel_mm3": 1.0, "slice_thickness_mm": 1.0})
    true = comps.groupby("series_uid")["overlap"].sum().reindex(series["series_uid"]).values
    series["true_in_crop"] = series["true_voxels"] = true
    return comps, series


def test_fit_scores_every_component_out_of_fold():
    n = 400
    comps, series = random_table(n, 20, seed=0)
    series["upper_voxels"] = series["true_voxels"] + 100
    table = ComponentTable(comps, series)
    fit = fit_component_filter(table, boosting=BoostingConfig(max_iter=20), folds=5)
    assert fit.oof_scores.shape == (n,) and fit.oof_auc > 0.95
    assert len(fit.oof_rows) == 20 and fit.oof_summary["series"] == 20
    model = TreeEnsemble.from_dict(fit.model)
    assert len(model.roots) == 20
    scores, summary, _ = evaluate_component_filter(table, fit.model)
    assert np.array_equal(scores, model.score(comps[list(FEATURES)].to_numpy()))
    assert summary["dice_pooled"] > 0.9
    assert fit.upper_p is None  # the table has no upper_counts: the segmenter's bound stays


def test_the_fit_refits_the_upper_bound_on_its_series():
    """40 series whose voxel counts at the upper-bound thresholds grow as p falls: the fit
    takes the least extreme threshold at which at most 5% of the series' upper volumes fall
    below the truth, and its series rows use it."""
    from cohort.train.seg_metrics import UPPER_GRID

    comps, series = random_table(400, 40, seed=1)
    true = series["true_voxels"].to_numpy()
    # the upper volume at the k-th threshold: the truth minus 10 plus 3 voxels a step, so
    # it reaches the truth at k = 4 for most series; 2 of 40 series (5%) never do
    k = np.arange(len(UPPER_GRID))
    counts = true[:, None] - 10 + 3 * k[None, :]
    counts[:2] = 0
    series["upper_counts"] = list(counts)
    series["upper_voxels"] = 0
    fit = fit_component_filter(ComponentTable(comps, series),
                               boosting=BoostingConfig(max_iter=20), folds=5)
    assert fit.upper_p == UPPER_GRID[4]
    assert fit.oof_summary["interval_coverage"] >= 0.95 - 1e-9
