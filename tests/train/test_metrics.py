"""Evaluation metrics: hand-worked examples (arithmetic in the comments) and agreement with
scikit-learn / scipy on seeded random data."""

import dataclasses

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
    top_k_accuracy_score,
)

from cohort.train.metrics import (
    OVERALL,
    binary_auc,
    classification_metrics,
    dice,
    dice_per_label,
    localization_metrics,
    log_volume_pearson,
    macro_f1,
    quadratic_kappa,
    top_k_hits,
)

# --- quadratic weighted kappa ---------------------------------------------------------------


def test_kappa_by_hand():
    # categories 0, 1, 2; confusion O (rows a, columns b): O[0,0] = O[1,2] = O[2,2] = O[2,1] = 1
    # row sums (1, 1, 2), column sums (1, 1, 2), N = 4: E = outer / 4
    #   E = [[.25 .25 .5] [.25 .25 .5] [.5 .5 1]];  W = (i - j)^2 = [[0 1 4] [1 0 1] [4 1 0]]
    # sum W*O = 1 + 1 = 2;  sum W*E = .25 + 2 + .25 + .5 + 2 + .5 = 5.5
    # kappa = 1 - 2 / 5.5 = 7/11
    assert quadratic_kappa([0, 1, 2, 2], [0, 2, 2, 1]) == pytest.approx(7 / 11, rel=1e-12)
    assert quadratic_kappa([4, 5, 6], [4, 5, 6]) == 1.0


def test_kappa_weights_positions_in_the_observed_label_set_as_sklearn_does():
    # slices 3, 7, 9 observed: positions 0, 1, 2, so 7 -> 9 is one step, not two
    # O[0,0] = O[1,2] = 1; rows (1, 1, 0), columns (1, 0, 1), N = 2
    # E = [[.5 0 .5] [.5 0 .5] [0 0 0]]; sum W*O = 1; sum W*E = .5*4 + .5*1 + .5*1 = 3
    # kappa = 1 - 1/3 = 2/3
    a, b = [3, 7], [3, 9]
    assert quadratic_kappa(a, b) == pytest.approx(2 / 3, rel=1e-12)
    assert cohen_kappa_score(a, b, weights="quadratic") == pytest.approx(2 / 3, rel=1e-12)
    # every slice 0..9 a category: W*O = (7-9)^2 = 4;
    # W*E = .5 * ((3-9)^2 + (7-3)^2 + (7-9)^2) = .5 * (36 + 16 + 4) = 28; kappa = 1 - 4/28
    assert quadratic_kappa(a, b, labels=range(10)) == pytest.approx(6 / 7, rel=1e-12)
    assert cohen_kappa_score(a, b, weights="quadratic", labels=list(range(10))) == \
        pytest.approx(6 / 7, rel=1e-12)


def test_kappa_undefined_is_nan_like_sklearn():
    assert np.isnan(quadratic_kappa([3, 3, 3], [3, 3, 3]))
    assert np.isnan(quadratic_kappa([], []))
    assert quadratic_kappa([3, 3, 3], [3, 4, 3]) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_kappa_matches_sklearn_on_random_slices(seed):
    rng = np.random.default_rng(seed)
    truth = rng.choice([2, 3, 5, 8, 9, 14, 15, 21, 30], size=60)
    pred = np.clip(truth + rng.integers(-2, 3, size=60) * (rng.random(60) < 0.4), 0, 35)
    assert quadratic_kappa(truth, pred) == pytest.approx(
        cohen_kappa_score(truth, pred, weights="quadratic"), rel=1e-12)
    labels = np.arange(40)
    assert quadratic_kappa(truth, pred, labels=labels) == pytest.approx(
        cohen_kappa_score(truth, pred, weights="quadratic", labels=labels), rel=1e-12)
    some = [30, 2, 9, 5, 3]  # a subset, not sorted: pairs outside it are left out
    assert quadratic_kappa(truth, pred, labels=some) == pytest.approx(
        cohen_kappa_score(truth, pred, weights="quadratic", labels=some), rel=1e-12)


# --- localization ---------------------------------------------------------------------------


def test_top_k_breaks_ties_by_slice_index_like_argmax():
    p = np.array([0.2, 0.4, 0.4, 0.0])
    assert top_k_hits(p, 1, 1) and not top_k_hits(p, 2, 1) and top_k_hits(p, 2, 2)
    assert not top_k_hits(p, 0, 2)


def test_localization_by_hand():
    # two scans of 4 and 5 slices (2.5 and 5 mm), two landmarks a and b
    probabilities = [
        np.array([[0.1, 0.6, 0.3, 0.0],  # a: true 2, predicted 1 (error 1), 2nd best
                  [0.0, 0.1, 0.2, 0.7]]),  # b: true 3, predicted 3
        np.array([[0.5, 0.2, 0.1, 0.1, 0.1],  # a: true 4, predicted 0 (error 4), not top 2
                  [0.2, 0.2, 0.2, 0.2, 0.2]]),  # b: true 1, a tie -> predicted 0, 2nd best
    ]
    m = localization_metrics(probabilities, [[2, 3], [4, 1]], spacing_mm=[2.5, 5.0],
                             names=("a", "b"))
    a, b, overall = m["a"], m["b"], m[OVERALL]
    # a: errors 1, 4 -> MAE 2.5 slices, (1*2.5 + 4*5) / 2 = 11.25 mm; within 1 slice: 1 of 2
    # kappa of true (2, 4) vs predicted (1, 0): categories 0, 1, 2, 4 at positions 0..3;
    # O[2,1] = O[3,0] = 1; rows (0,0,1,1), columns (1,1,0,0), N = 2: E = .5 at [2|3, 0|1]
    # W*O = 1 + 9 = 10; W*E = .5 * (4 + 1 + 9 + 4) = 9; kappa = 1 - 10/9 = -1/9
    assert (a.n, a.mae_slices, a.mae_mm, a.top1, a.top2, a.acc_tau1) == \
        (2, 2.5, 11.25, 0.0, 0.5, 0.5)
    assert a.kappa == pytest.approx(-1 / 9, rel=1e-12)
    # b: errors 0, 1 -> MAE 0.5 slices, (0 + 1*5) / 2 = 2.5 mm; Top-1 1/2, Top-2 2/2
    # kappa of (3, 1) vs (3, 0): categories 0, 1, 3 at 0, 1, 2: O[2,2] = O[1,0] = 1;
    # rows (0,1,1), columns (1,0,1): E = .5 at [1,0], [1,2], [2,0], [2,2]
    # W*O = 1; W*E = .5 * (1 + 1 + 4 + 0) = 3; kappa = 1 - 1/3 = 2/3
    assert (b.mae_slices, b.mae_mm, b.top1, b.top2, b.acc_tau1) == (0.5, 2.5, 0.5, 1.0, 1.0)
    assert b.kappa == pytest.approx(2 / 3, rel=1e-12)
    # overall, 4 pairs: errors (1, 0, 4, 1) -> 1.5 slices; mm (2.5, 0, 20, 5) -> 6.875
    # kappa of true (2, 3, 4, 1) vs predicted (1, 3, 0, 0), categories 0..4 = positions:
    # W*O = 1 + 0 + 16 + 1 = 18; rows r1..r4 = 1, columns c0 = 2, c1 = c3 = 1, N = 4:
    # W*E = sum_i (2 i^2 + (i-1)^2 + (i-3)^2) / 4 over i = 1..4 = (6 + 10 + 22 + 42) / 4 = 20
    # kappa = 1 - 18/20 = 0.1
    assert (overall.n, overall.mae_slices, overall.mae_mm, overall.top1, overall.top2,
            overall.acc_tau1) == (4, 1.5, 6.875, 0.25, 0.75, 0.75)
    assert overall.kappa == pytest.approx(0.1, rel=1e-12)
    assert cohen_kappa_score([2, 3, 4, 1], [1, 3, 0, 0], weights="quadratic") == \
        pytest.approx(0.1, rel=1e-12)
    # rows for a table
    assert dataclasses.asdict(b)["top2"] == 1.0


def test_localization_without_spacing_and_with_the_six_landmarks():
    rng = np.random.default_rng(3)
    depths = [30, 41, 36]
    truth = np.array([rng.integers(0, d, size=6) for d in depths])
    probs = []
    for d, t in zip(depths, truth, strict=True):
        p = np.full((6, d), 0.01)
        p[np.arange(6), t] = 1.0
        probs.append(p / p.sum(axis=1, keepdims=True))
    m = localization_metrics(probs, truth)
    assert set(m) == {"right_carotid_canal", "right_petrolingual", "right_anterior_clinoid",
                      "left_carotid_canal", "left_petrolingual", "left_anterior_clinoid",
                      OVERALL}
    assert m[OVERALL].mae_slices == 0.0 and m[OVERALL].top1 == 1.0
    assert np.isnan(m[OVERALL].mae_mm) and m[OVERALL].kappa == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_localization_matches_sklearn_on_random_scans(seed):
    rng = np.random.default_rng(seed)
    n_scans, n_marks = 25, 6
    depths = rng.integers(20, 60, size=n_scans)
    spacing = rng.choice([1.25, 2.5, 5.0], size=n_scans)
    truth = np.array([rng.integers(2, d - 2, size=n_marks) for d in depths])
    probs = []
    for d, t in zip(depths, truth, strict=True):
        logits = -0.5 * ((np.arange(d)[None, :] - t[:, None]
                          - rng.normal(0, 0.8, size=(n_marks, 1))) ** 2)
        logits += rng.normal(0, 0.5, size=logits.shape)
        p = np.exp(logits)
        probs.append(p / p.sum(axis=1, keepdims=True))
    pred = np.array([p.argmax(axis=1) for p in probs])
    m = localization_metrics(probs, truth, spacing_mm=spacing)
    for j, name in enumerate(("right_carotid_canal", "right_petrolingual",
                              "right_anterior_clinoid", "left_carotid_canal",
                              "left_petrolingual", "left_anterior_clinoid")):
        err = np.abs(pred[:, j] - truth[:, j])
        assert m[name].mae_slices == pytest.approx(err.mean(), rel=1e-12)
        assert m[name].mae_mm == pytest.approx((err * spacing).mean(), rel=1e-12)
        assert m[name].acc_tau1 == pytest.approx((err <= 1).mean(), rel=1e-12)
        assert m[name].kappa == pytest.approx(
            cohen_kappa_score(truth[:, j], pred[:, j], weights="quadratic"), rel=1e-12)
        assert m[name].top1 == pytest.approx(accuracy_score(truth[:, j], pred[:, j]), rel=1e-12)
        # sklearn's top-k needs one depth: pad every distribution with zeros to the longest
        padded = np.zeros((n_scans, depths.max()))
        for s in range(n_scans):
            padded[s, :depths[s]] = probs[s][j]
        assert m[name].top2 == pytest.approx(top_k_accuracy_score(
            truth[:, j], padded, k=2, labels=np.arange(depths.max())), rel=1e-12)
    assert m[OVERALL].kappa == pytest.approx(
        cohen_kappa_score(truth.ravel(), pred.ravel(), weights="quadratic"), rel=1e-12)


def test_localization_checks_its_inputs():
    with pytest.raises(ValueError, match="shape"):
        localization_metrics([np.ones((6, 10))], [[1, 2, 3]])
    with pytest.raises(ValueError, match="outside"):
        localization_metrics([np.ones((2, 10))], [[1, 10]], names=("a", "b"))
    with pytest.raises(ValueError, match="one slice spacing per scan"):
        localization_metrics([np.ones((2, 10))], [[1, 2]], spacing_mm=[1, 2], names=("a", "b"))


# --- classification -------------------------------------------------------------------------

HAND_TRUE = [0, 0, 1, 1, 2, 2]
HAND_PROBS = [[0.7, 0.2, 0.1],  # predicted 0 (right)
              [0.3, 0.4, 0.3],  # predicted 1 (true 0)
              [0.2, 0.6, 0.2],  # predicted 1 (right)
              [0.1, 0.3, 0.6],  # predicted 2 (true 1)
              [0.1, 0.1, 0.8],  # predicted 2 (right)
              [0.5, 0.2, 0.3]]  # predicted 0 (true 2)


def test_classification_by_hand():
    m = classification_metrics(HAND_TRUE, HAND_PROBS)
    # 3 of 6 right
    assert m.n == 6 and m.accuracy == 0.5
    # every class: TP 1, FP 1, FN 1 -> F1 = 2 / (2 + 1 + 1) = 0.5
    assert m.macro_f1 == 0.5
    # one-vs-rest AUC = share of (positive, negative) pairs ordered right, ties 1/2:
    # class 0: positives .7, .3 vs negatives .2 .1 .1 .5 -> (4 + 3) / 8
    # class 1: positives .6, .3 vs negatives .2 .4 .1 .2 -> (4 + 3) / 8
    # class 2: positives .8, .3 vs negatives .1 .3 .2 .6 -> (4 + 1 + .5 + 1) / 8 = 6.5 / 8
    assert m.macro_auc == pytest.approx((7 / 8 + 7 / 8 + 6.5 / 8) / 3, rel=1e-12)
    assert m.macro_auc == pytest.approx(
        roc_auc_score(HAND_TRUE, HAND_PROBS, multi_class="ovr", average="macro"), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_classification_matches_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n, c = 120, 3
    y = rng.integers(0, c, size=n)
    # a few distinct probability rows, so that scores tie often (rows sum to 1 exactly)
    palette = rng.dirichlet(np.ones(c), size=8)
    p = palette[rng.integers(0, 8, size=n)]
    p[y == 1] = 0.5 * p[y == 1] + 0.5 * np.eye(c)[1]  # some skill for class 1
    m = classification_metrics(y, p)
    pred = p.argmax(axis=1)
    assert m.accuracy == pytest.approx(accuracy_score(y, pred), rel=1e-12)
    assert m.macro_f1 == pytest.approx(f1_score(y, pred, average="macro"), rel=1e-12)
    assert m.macro_auc == pytest.approx(
        roc_auc_score(y, p, multi_class="ovr", average="macro"), rel=1e-12)


def test_macro_f1_over_classes_seen_in_truth_or_prediction_like_sklearn():
    y, pred = [0, 0, 1, 1], [0, 3, 1, 1]  # class 3 predicted, never true; class 2 nowhere
    # F1: class 0: 2*1/(2+0+1) = 2/3; class 1: 1; class 3: 0 -> mean over 3 classes
    assert macro_f1(y, pred) == pytest.approx((2 / 3 + 1 + 0) / 3, rel=1e-12)
    assert macro_f1(y, pred) == pytest.approx(
        f1_score(y, pred, average="macro", zero_division=0), rel=1e-12)


def test_auc_of_a_class_missing_from_the_test_set_is_left_out():
    assert np.isnan(binary_auc(np.array([True, True]), np.array([0.1, 0.2])))
    y = [0, 0, 1, 1]  # class 2 absent: its AUC is undefined and not averaged
    p = [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]]
    # class 0: positives .8 .6 vs .2 .5 -> 4/4; class 1: positives .7 .4 vs .1 .3 -> 4/4
    assert classification_metrics(y, p).macro_auc == 1.0


# --- quantification -------------------------------------------------------------------------


def test_dice_by_hand():
    # |A| = 2, |B| = 2, |A and B| = 1 -> 2 * 1 / 4
    assert dice([1, 1, 0, 0], [1, 0, 1, 0]) == 0.5
    assert dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert dice([1, 0], [0, 1]) == 0.0
    pred = np.array([0, 1, 1, 2, 2, 2])
    truth = np.array([0, 1, 2, 2, 2, 0])
    # right (1): A = {1, 2}, B = {1} -> 2/3; left (2): A = {3, 4, 5}, B = {2, 3, 4} -> 4/6
    assert dice_per_label(pred, truth, {"right": 1, "left": 2}) == \
        pytest.approx({"right": 2 / 3, "left": 2 / 3}, rel=1e-12)
    with pytest.raises(ValueError, match="one shape"):
        dice([1, 0], [1, 0, 0])


def test_log_volume_pearson_by_hand():
    e = np.e
    # log1p: (0, 1, 2) vs (0, 2, 4): exactly linear -> r = 1
    assert log_volume_pearson([0, e - 1, e**2 - 1], [0, e**2 - 1, e**4 - 1]) == \
        pytest.approx(1.0, rel=1e-12)
    # log1p: (0, 1, 2) vs (0, 2, 1): deviations (-1, 0, 1) and (-1, 1, 0):
    # r = (1 + 0 + 0) / sqrt(2 * 2) = 0.5; zero volumes stay in
    assert log_volume_pearson([0, e - 1, e**2 - 1], [0, e**2 - 1, e - 1]) == \
        pytest.approx(0.5, rel=1e-12)
    assert np.isnan(log_volume_pearson([1.0], [2.0]))
    assert np.isnan(log_volume_pearson([3.0, 3.0, 3.0], [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=">= 0"):
        log_volume_pearson([-1.0, 2.0], [1.0, 2.0])


@pytest.mark.parametrize("seed", range(3))
def test_log_volume_pearson_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    truth = rng.lognormal(3.0, 1.5, size=80) * (rng.random(80) < 0.7)  # 30% zeros
    pred = truth * rng.lognormal(0.0, 0.3, size=80)
    expected = pearsonr(np.log1p(pred), np.log1p(truth)).statistic
    assert log_volume_pearson(pred, truth) == pytest.approx(expected, rel=1e-12)
