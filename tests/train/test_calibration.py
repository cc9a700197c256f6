"""Temperature scaling and ECE: hand-worked ECE values, recovery of a known temperature on
seeded synthetic logits, and the edge cases (T = 1, one scan, no scans, bad input)."""

import logging

import numpy as np
import pytest
from scipy.special import softmax

from cohort.anatomy import LANDMARKS
from cohort.model.calibration import (
    apply_temperatures,
    temperatures_from_metadata,
    temperatures_to_metadata,
)
from cohort.train.calibration import (
    REPORT_COLUMNS,
    CalibrationConfig,
    calibration_report,
    ece_from_confidences,
    expected_calibration_error,
    fit_temperatures,
)
from cohort.train.metrics import OVERALL


def calibrated_head(seed: int, n_scans: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Logits of a perfectly calibrated head (each true slice is drawn from the head's own
    softmax) over scans of 25..59 slices, and the true slices."""
    rng = np.random.default_rng(seed)
    logits, true = [], []
    for _ in range(n_scans):
        depth = int(rng.integers(25, 60))
        centre = rng.uniform(3, depth - 3, size=(6, 1))
        z = -0.5 * ((np.arange(depth)[None, :] - centre) / 1.5) ** 2
        z = z + rng.normal(0.0, 0.5, size=z.shape)
        p = softmax(z, axis=1)
        true.append((p.cumsum(axis=1) < rng.random((6, 1))).sum(axis=1))  # inverse CDF draw
        logits.append(z)
    return logits, np.array(true)


# --- ECE ------------------------------------------------------------------------------------


def test_ece_by_hand():
    # 5 right-closed bins (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1]
    # .9, .9 -> bin 5: accuracy 1/2, confidence .9 -> |.5 - .9| = .4, weight 2/4 -> .2
    # .6 (on an edge: the lower bin, (.4,.6]): accuracy 1, confidence .6 -> .4 * 1/4 = .1
    # .3 -> (.2,.4]: accuracy 0, confidence .3 -> .3 * 1/4 = .075;  ECE = .375
    ece = ece_from_confidences([0.9, 0.9, 0.6, 0.3], [True, False, True, False], n_bins=5)
    assert ece == pytest.approx(0.375, abs=1e-15)
    assert ece_from_confidences([0.7, 0.7], [True, True], n_bins=1) == pytest.approx(0.3)
    assert np.isnan(ece_from_confidences([], [], n_bins=15))


def test_ece_per_landmark_and_overall_by_hand():
    # two scans, landmarks a and b; confidence = probability of the argmax
    probabilities = [np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]]),   # a: 0 (.9), b: 2 (.5)
                     np.array([[0.3, 0.6, 0.1], [0.25, 0.5, 0.25]])]  # a: 1 (.6), b: 1 (.5)
    true = [[0, 1], [0, 1]]  # a: right, wrong; b: wrong, right
    ece = expected_calibration_error(probabilities, true, n_bins=10, names=("a", "b"))
    # a: .9 alone in (.8,.9], right -> .1; .6 alone in (.5,.6], wrong -> .6; (.1 + .6) / 2
    assert ece["a"] == pytest.approx(0.35, abs=1e-12)
    # b: both .5 in (.4,.5]: accuracy 1/2, confidence .5 -> 0
    assert ece["b"] == pytest.approx(0.0, abs=1e-12)
    # overall, 4 pairs: .1 * 1/4 + .6 * 1/4 + 0 * 2/4 = .175
    assert ece[OVERALL] == pytest.approx(0.175, abs=1e-12)


def test_ece_rejects_logits_and_mismatched_lengths():
    with pytest.raises(ValueError, match="not logits"):
        ece_from_confidences([2.5, 0.3], [True, False])
    with pytest.raises(ValueError, match="differ in length"):
        ece_from_confidences([0.5, 0.3], [True])
    with pytest.raises(ValueError, match="outside"):
        expected_calibration_error([np.full((2, 3), 1 / 3)], [[0, 3]], names=("a", "b"))


# --- temperatures ---------------------------------------------------------------------------


def test_temperature_one_leaves_probabilities_unchanged():
    z = np.random.default_rng(1).normal(0, 4, size=(6, 33))
    assert np.array_equal(apply_temperatures(z, np.ones(6)), softmax(z, axis=1))
    assert np.array_equal(apply_temperatures(z, 1.0), softmax(z, axis=1))
    # T = 2 is the softmax of z / 2, landmark by landmark
    temps = np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])
    assert np.allclose(apply_temperatures(z, temps), softmax(z / temps[:, None], axis=1),
                       rtol=1e-14, atol=0)


def test_overconfident_head_gives_temperature_three_and_lower_ece():
    logits, true = calibrated_head(seed=0, n_scans=1500)
    overconfident = [3.0 * z for z in logits]
    temps = fit_temperatures(overconfident, true)
    assert temps.shape == (6,)
    assert np.all(np.abs(temps - 3.0) < 0.3), temps  # within 10%
    report = calibration_report(overconfident, true, temps)
    assert list(report.columns) == list(REPORT_COLUMNS)
    assert list(report["landmark"]) == [*LANDMARKS, OVERALL]
    assert (report["ece_after"] < report["ece_before"]).all()
    assert (report["nll_after"] < report["nll_before"]).all()
    overall = report.set_index("landmark").loc[OVERALL]
    assert overall["ece_before"] > 0.2 and overall["ece_after"] < 0.03
    assert overall["n"] == 1500 * 6 and np.isnan(overall["temperature"])
    # the calibrated head itself needs no scaling
    assert np.all(np.abs(fit_temperatures(logits, true) - 1.0) < 0.1)


def test_underconfident_head_is_sharpened():
    logits, true = calibrated_head(seed=2, n_scans=800)
    temps = fit_temperatures([z / 2.0 for z in logits], true)
    assert np.all(np.abs(temps - 0.5) < 0.05), temps


def test_temperatures_are_plain_floats_for_checkpoint_metadata():
    temps = np.array([1.5, 2.0, 2.5, 3.0, 0.5, 1.0])
    meta = temperatures_to_metadata(temps)
    assert list(meta) == list(LANDMARKS)
    assert all(type(v) is float for v in meta.values())
    assert np.array_equal(temperatures_from_metadata(meta), temps)
    with pytest.raises(ValueError, match="lacks temperatures"):
        temperatures_from_metadata({"right_carotid_canal": 1.0})
    with pytest.raises(ValueError, match="> 0"):
        apply_temperatures(np.zeros((6, 4)), [1, 1, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="one temperature per landmark"):
        apply_temperatures(np.zeros((6, 4)), [1.0, 2.0])


# --- degenerate input ------------------------------------------------------------------------


def test_one_scan_is_fitted_and_no_scans_is_an_error(caplog):
    # one scan, the argmax is wrong for every landmark: an interior optimum exists
    z = np.tile(np.array([0.0, 2.0, 1.0, -1.0]), (6, 1))
    temps = fit_temperatures([z], [[2] * 6])
    cfg = CalibrationConfig()
    assert np.all((temps > cfg.t_min) & (temps < cfg.t_max))
    # d/dT of the NLL vanishes where the softmax mass-weighted mean logit equals the true logit
    p = apply_temperatures(z, temps)
    assert np.allclose((p * z).sum(axis=1), z[:, 2], atol=1e-4)
    # one scan the head gets right: the NLL falls all the way to T -> 0; a warning says so
    with caplog.at_level(logging.WARNING, logger="cohort.train.calibration"):
        temps = fit_temperatures([z], [[1] * 6])
    assert np.allclose(temps, cfg.t_min, rtol=1e-2)
    assert "stopped at the bound" in caplog.text
    with pytest.raises(ValueError, match="no scans"):
        fit_temperatures([], np.zeros((0, 6)))


def test_one_slice_scans_keep_temperature_one_and_bad_input_is_refused():
    assert np.array_equal(fit_temperatures([np.zeros((6, 1))] * 3, np.zeros((3, 6))), np.ones(6))
    with pytest.raises(ValueError, match="shape"):
        fit_temperatures([np.zeros((5, 10))], [[0] * 6])
    with pytest.raises(ValueError, match="outside"):
        fit_temperatures([np.zeros((6, 10))], [[0, 0, 0, 0, 0, 10]])
    with pytest.raises(ValueError, match="NaN"):
        fit_temperatures([np.full((6, 10), np.nan)], [[0] * 6])
    masked = np.zeros((6, 10))
    masked[:, 5:] = -np.inf  # padded slices may be masked with -inf, but not the true one
    assert fit_temperatures([masked, np.zeros((6, 4))], [[1] * 6, [2] * 6]).shape == (6,)
    with pytest.raises(ValueError, match="-inf"):
        fit_temperatures([masked], [[7] * 6])
    with pytest.raises(ValueError, match="t_min"):
        CalibrationConfig(t_min=2.0)
