"""How the segmenter is judged: Dice, intervals, temperature, ECE, cohort agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cohort.train import seg_metrics as M


def test_dice_of_masks():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert M.dice(a, b) == pytest.approx(0.5)
    assert np.isnan(M.dice(np.zeros(3, bool), np.zeros(3, bool)))


def test_interval_thresholds_of_a_level():
    assert M.interval_thresholds(0.9) == pytest.approx((0.95, 0.05))


def test_series_row_counts_calcium_outside_the_crop_as_missed():
    prob = np.array([0.99, 0.7, 0.3, 0.01])
    true = np.array([True, True, False, False])
    row = M.series_row(prob, true, threshold=0.5, voxel_mm3=2.0, true_outside_voxels=1)
    assert row["pred_mm3"] == 4.0 and row["true_mm3"] == 6.0
    assert row["low_mm3"] == 2.0 and row["high_mm3"] == 6.0  # p >= .95 and p >= .05
    assert row["dice"] == 1.0  # inside the crop the masks agree


def test_fit_temperature_recovers_an_overconfident_scale():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 200_000)
    labels = rng.random(200_000) < 1 / (1 + np.exp(-true_logit))
    t = M.fit_temperature(3 * true_logit, labels)  # logits three times too sure
    assert t == pytest.approx(3.0, rel=0.05)


def test_ece_is_zero_when_frequencies_match_and_large_when_not():
    p = np.full(10_000, 0.3)
    y = np.zeros(10_000, bool)
    y[:3000] = True
    assert M.ece(p, y) == pytest.approx(0.0, abs=1e-9)
    assert M.ece(np.full(10_000, 0.9), y) == pytest.approx(0.6, abs=1e-9)


def test_best_threshold_picks_the_best_pooled_dice():
    true = [np.array([True, True, False, False])]
    prob = [np.array([0.9, 0.6, 0.4, 0.1])]
    t = M.best_threshold(prob, true)
    assert 0.4 < t <= 0.6


def test_summary_of_a_perfect_and_a_bad_segmenter():
    vols = np.array([0.0, 5.0, 50.0, 500.0, 0.0, 20.0, 200.0, 1000.0])

    def rows(pred):
        return pd.DataFrame({"true_mm3": vols, "pred_mm3": pred, "dice": 1.0,
                             "true_voxels": (vols > 0).astype(int) * 10,
                             "pred_voxels": (pred > 0).astype(int) * 10,
                             "overlap_voxels": 10 * ((vols > 0) & (pred > 0)),
                             "low_mm3": pred * 0.5, "high_mm3": pred * 2,
                             "slice_thickness_mm": 1.0})

    good = M.summarise(rows(vols))
    assert good["pearson_r_log1p"] == pytest.approx(1.0)
    assert good["kappa_linear"] == pytest.approx(1.0) and good["bias_mm3"] == 0.0
    assert good["interval_coverage"] == 1.0
    bad = M.summarise(rows(vols[::-1].copy()))
    assert bad["kappa_linear"] < 0.5 and bad["pearson_r_log1p"] < 0.5


def test_thickness_bands():
    assert [M.thickness_band(t) for t in (0.625, 1.25, 2.5, 5.0)] == [
        "<= 1.25 mm", "<= 1.25 mm", "1.25-3 mm", "> 3 mm"]


def test_a_voxel_sample_stands_for_all_voxels_in_the_temperature_fit():
    """Calibrated logits: the sample's fit stays near T = 1, while a fit on the voxels in
    play alone (chosen by the model's own probabilities) comes out too hot."""
    rng = np.random.default_rng(1)
    z = np.concatenate([rng.normal(-9, 1.5, 2_000_000), rng.normal(0, 3, 20_000)])
    y = rng.random(len(z)) < 1 / (1 + np.exp(-z))
    zs, ys, w = M.voxel_sample(z, y, np.random.default_rng(2), rate=0.02)
    assert len(zs) < len(z) / 10 and w.max() == pytest.approx(50.0)
    assert M.fit_temperature(zs, ys, w) == pytest.approx(1.0, abs=0.1)
    play = M.in_play(1 / (1 + np.exp(-z)), y)
    assert M.nll(zs, ys, w) == pytest.approx(M.nll(z, y), rel=0.05)
    assert M.fit_temperature(z[play], y[play]) != pytest.approx(1.0, abs=0.1)


def test_the_voxel_sample_leaves_out_voxels_the_gate_ruled_out():
    """A true voxel under 130 HU carries GATED_LOGIT: it is the rule's miss, not the
    network's confidence, and would drag the temperature up if it stayed in the fit."""
    from cohort.model.segmenter import GATED_LOGIT

    rng = np.random.default_rng(3)
    z = np.concatenate([rng.normal(-9, 1.5, 200_000), rng.normal(0, 3, 20_000)])
    y = rng.random(len(z)) < 1 / (1 + np.exp(-z))
    gated = np.zeros(len(z), bool)
    gated[:2000] = True  # gated, half of them true (missed by the rule)
    z[gated] = GATED_LOGIT
    y[:1000] = True
    zs, ys, w = M.voxel_sample(z, y, np.random.default_rng(2), rate=0.02)
    assert (zs > GATED_LOGIT / 2).all()
    assert M.fit_temperature(zs, ys, w) == pytest.approx(1.0, abs=0.1)


def test_interval_thresholds_fitted_on_validation_hold_its_volumes():
    """Probabilities that are too sure (true volumes spread beyond what the level's own
    thresholds give): the fitted thresholds widen the interval until, on these series, each
    bound misses no more than the level allows; the level's own thresholds miss more."""
    rng = np.random.default_rng(5)
    probs, trues = [], []
    for _ in range(30):
        p = np.zeros(4000)
        p[:400] = rng.uniform(0.0, 1.0, 400)  # the uncertain edge of a plaque
        p[400:600] = 0.999  # its sure core
        n = 200 + int(rng.integers(0, 380))  # the true plaque covers some of the edge
        t = np.zeros(4000, bool)
        t[np.argsort(-p)[:n]] = True
        probs.append(p)
        trues.append(t)
    lo, hi = M.fit_interval_thresholds(probs, trues, 0.9)
    assert lo > 0.95 or hi < 0.05
    allowed = int(0.05 * 31)

    def misses(lo_t, hi_t):
        pairs = list(zip(probs, trues, strict=True))
        below = sum(np.count_nonzero(p >= lo_t) > t.sum() for p, t in pairs)
        above = sum(np.count_nonzero(p >= hi_t) < t.sum() for p, t in pairs)
        return below, above

    assert max(misses(lo, hi)) <= allowed
    assert max(misses(*M.interval_thresholds(0.9))) > allowed
    assert M.fit_interval_thresholds([], [], 0.8) == pytest.approx((0.9, 0.1))


def test_a_conformal_bound_takes_the_least_extreme_threshold_with_few_enough_misses():
    grid = (0.5, 0.2, 0.1, 0.05)
    true_n = np.array([10] * 19)
    # 19 series, level 0.9: one miss allowed. At 0.5 five upper volumes fall short, at 0.2
    # two, at 0.1 one, at 0.05 none
    counts = np.tile(np.array([[20, 30, 40, 50]]), (19, 1))
    counts[:5, 0] = 5
    counts[:2, 1] = 9
    counts[:1, 2] = 9
    assert M.conformal_threshold(grid, counts, true_n, 0.9, lower=False) == 0.1
    # as a lower bound the counts above the truth are the misses: every column misses
    assert M.conformal_threshold(grid, counts, true_n, 0.9, lower=True) == 0.05
    assert M.conformal_threshold(grid, counts, true_n * 100, 0.9, lower=True) == 0.5
    assert M.voxels_at([np.array([0.9, 0.3, 0.06])], grid).tolist() == [[1, 2, 2, 3]]
