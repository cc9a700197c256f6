"""The QC confidence threshold: Youden's J on hand-worked scores, the edge cases, its
metadata, every fold checkpoint of a study carrying it, and the shipped checkpoint."""

import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from cohort.anatomy import LANDMARKS
from cohort.errors import ConfigError
from cohort.job.checkpoint import describe, shipped_checkpoint
from cohort.model.calibration import (
    apply_temperatures,
    temperatures_from_metadata,
    threshold_from_metadata,
)
from cohort.model.dst import build_model, load_checkpoint, save_checkpoint
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort
from cohort.train import study
from cohort.train.calibration import (
    FLAG_FLOOR,
    ConfidenceThreshold,
    fit_confidence_threshold,
    mostly_wrong_threshold,
    youden_threshold,
)
from cohort.train.data import build_cache, synthetic_sources, targets
from cohort.train.loop import TrainConfig
from cohort.train.ship import RECIPE, refit_confidence_threshold
from cohort.train.splits import SplitConfig
from cohort.train.study import StudyConfig, fold_rows, load_or_make_splits, predict, run_study


def test_youden_threshold_on_a_hand_worked_example():
    # right: 0.9 0.8 0.6 0.3; wrong: 0.5 0.2 0.1. J = TPR - FPR at each threshold t (kept:
    # score >= t): 0.9: 1/4 - 0; 0.8: 2/4 - 0; 0.6: 3/4 - 0 = 0.75; 0.5: 3/4 - 1/3;
    # 0.3: 1 - 1/3 = 0.667; 0.2: 1 - 2/3; 0.1: 1 - 1 -> 0.6, flagging the three wrong
    # ones and the right one at 0.3
    conf = [0.9, 0.5, 0.8, 0.2, 0.6, 0.1, 0.3]
    right = [True, False, True, False, True, False, True]
    assert youden_threshold(conf, right) == 0.6


def test_youden_ties_go_to_the_largest_threshold():
    # right: 0.8 0.4; wrong: 0.6 0.2. J: 0.8 -> 1/2 - 0; 0.6 -> 1/2 - 1/2; 0.4 -> 1 - 1/2;
    # 0.2 -> 0: 0.8 and 0.4 tie at 1/2
    assert youden_threshold([0.8, 0.6, 0.4, 0.2], [True, False, True, False]) == 0.8


def test_youden_edge_cases(caplog):
    with caplog.at_level(logging.WARNING, logger="cohort.train.calibration"):
        assert youden_threshold([0.2, 0.9], [True, True]) == 0.0  # nothing wrong: flag none
        assert youden_threshold([0.2, 0.9], [False, False]) == 1.0  # nothing right: flag all
        # the wrong ones are the confident ones: no threshold helps, flag none
        assert youden_threshold([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert len(caplog.records) == 3
    with pytest.raises(ValueError, match="differ in length"):
        youden_threshold([0.5, 0.6], [True])
    with pytest.raises(ValueError, match="finite"):
        youden_threshold([np.nan], [True])


def _peaked(depth: int, peaks: list[int], heights: list[float]) -> np.ndarray:
    """(6, depth) probabilities, landmark m peaking at peaks[m] with heights[m], the rest
    spread evenly."""
    p = np.empty((6, depth))
    for m, (k, h) in enumerate(zip(peaks, heights, strict=True)):
        p[m] = (1 - h) / (depth - 1)
        p[m, k] = h
    return p


def test_fit_counts_one_slice_off_as_right_and_reports_what_it_flags():
    true = np.array([[10] * 6, [10] * 6])
    # scan 0: errors 0, 1, 1, 2, 3, 0; scan 1: errors 0, 0, 0, 0, 5, 0
    probs = [_peaked(20, [10, 11, 9, 12, 13, 10], [0.9, 0.7, 0.6, 0.3, 0.2, 0.8]),
             _peaked(20, [10, 10, 10, 10, 15, 10], [0.5, 0.95, 0.85, 0.75, 0.4, 0.65])]
    t = fit_confidence_threshold(probs, true)
    # right: 0.9 0.7 0.6 0.8 0.5 0.95 0.85 0.75 0.65 (9); wrong: 0.3 0.2 0.4 (3): 0.5 is
    # the lowest right score and above every wrong one, J = 1
    assert t.value == 0.5 and (t.n_right, t.n_wrong) == (9, 3)
    assert t.right_flagged == 0.0 and t.wrong_flagged == 1.0
    exact = fit_confidence_threshold(probs, true, right_within_slices=0)
    assert (exact.n_right, exact.n_wrong) == (7, 5)  # one slice off is wrong now


def test_metadata_is_plain_and_survives_weights_only_loading(tmp_path):
    t = ConfidenceThreshold(value=0.25, right_within_slices=1, n_right=40, n_wrong=8,
                            right_flagged=0.05, wrong_flagged=0.75)
    meta = t.to_metadata()
    assert meta["criterion"] == "youden_j"
    torch.save({"meta": {"confidence_threshold": meta}}, tmp_path / "m.pt")
    back = torch.load(tmp_path / "m.pt", weights_only=True)["meta"]["confidence_threshold"]
    assert back == meta and threshold_from_metadata(back) == 0.25
    assert threshold_from_metadata(None) is None
    with pytest.raises(ValueError, match="0-1"):
        threshold_from_metadata({"value": 1.5})


def test_every_fold_checkpoint_carries_the_threshold_fitted_on_its_validation_split(
        tmp_path, monkeypatch):
    cfg = SynthConfig(patients=10, seed=4, matrix=48, thicknesses_mm=(5.0,), localizer_p=0,
                      second_series_p=0, followup_p=0, workers=1)
    generate_cohort(cfg, str(tmp_path / "cohort"))
    sources, labels = synthetic_sources(str(tmp_path / "cohort"))
    cache = str(tmp_path / "cache")
    index = build_cache(sources, labels, cache)

    def untrained_fold(fold, *args):  # Ray Train is tested in test_study; only the export here
        torch.manual_seed(fold)
        return build_model("tiny", max_len=64).eval(), {"best_val_mae": 1.0}

    monkeypatch.setattr(study, "run_fold", untrained_fold)
    config = StudyConfig(train=TrainConfig(model="tiny", max_len=64),
                         splits=SplitConfig(folds=5, seed=1))
    out = str(tmp_path / "study")
    run_study(index, cache, out, config, synthetic=True)
    splits = load_or_make_splits(index, out, config.splits)
    for fold in range(5):
        model, meta = load_checkpoint(f"{out}/models/fold-{fold}.pt")
        val = fold_rows(index, splits, fold, "validation")
        true = np.stack([targets(r) for r in val.to_dict("records")])
        temps = temperatures_from_metadata(meta["temperatures"])
        again = fit_confidence_threshold(
            [apply_temperatures(lg, temps) for lg in predict(model, val, cache)], true,
            **study.THRESHOLD)
        assert meta["confidence_threshold"] == pytest.approx(
            {**again.to_metadata(), "fitted_on": f"validation split of fold {fold} "
                                                 f"({len(val)} scans)"}, nan_ok=True)
        assert meta["confidence_threshold"]["confidence"] == "within_1_slice"
        # temperatures ship only when cross-fitting on validation says they help
        if not meta["calibration"]["temperature_scaling"]:
            assert (temps == 1.0).all()
        assert again.n_right + again.n_wrong == 6 * len(val)


def test_the_shipped_checkpoint_carries_its_threshold():
    info = describe(None)
    assert info.confidence_threshold is not None and 0 < info.confidence_threshold < 1
    meta = torch.load(shipped_checkpoint(), weights_only=True)["meta"]
    entry = meta["confidence_threshold"]
    # the probability of being right (within one slice), flagged where the validation split
    # showed flags wrong at least half the time, never below the floor
    assert entry["criterion"] == "flagged_mostly_wrong" and entry["right_within_slices"] == 1
    assert entry["confidence"] == "within_1_slice" and entry["value"] >= FLAG_FLOOR
    # fitted with the checkpoint's decoding on its calibration cohort (never trained on):
    # every landmark of it
    decoding = meta["decoding"]
    assert entry["fitted_on"] == decoding["fitted_on"] and "never trained on" in entry["fitted_on"]
    assert entry["n_right"] + entry["n_wrong"] == 6 * decoding["scans"] >= 6 * 100
    # the decoding ships because it beat the paper's out of sample there
    assert decoding["kept"] and decoding["mirror"] and decoding["rule"] == "median"
    assert decoding["held_out_mae"]["candidate"] < decoding["held_out_mae"]["paper"]
    assert threshold_from_metadata(entry) == info.confidence_threshold
    # the weights are float16, as exported
    assert all(v.dtype in (torch.float16, torch.int64)
               for v in torch.load(shipped_checkpoint(), weights_only=True)["state_dict"].values())


def test_refit_writes_the_threshold_and_keeps_the_weights_bit_identical(tmp_path):
    synth = SynthConfig(patients=10, seed=5, matrix=48, thicknesses_mm=(5.0,), localizer_p=0,
                        second_series_p=0, followup_p=0, workers=1)
    recipe = replace(RECIPE, synth=synth)
    torch.manual_seed(0)
    path = tmp_path / "shipped.pt"
    temps = dict.fromkeys(LANDMARKS, 1.0)
    save_checkpoint(path, build_model("tiny", max_len=64).half(), fold=1, best_val_mae=999.0,
                    temperatures=temps, model_input={"size": 32})
    before = path.read_bytes()
    work = str(tmp_path / "work")
    with pytest.raises(ConfigError, match="not the scans it was validated on"):
        refit_confidence_threshold(str(path), work, recipe)
    assert path.read_bytes() == before  # nothing written
    # the MAE the validation split really gives, from the cache the refit left behind
    cache = f"{work}/cache-fold-1-validation"
    index = pd.read_parquet(f"{cache}/index.parquet")
    model, _ = load_checkpoint(path)
    logits = predict(model, index, cache)
    true = np.stack([targets(r) for r in index.to_dict("records")])
    mae = float(np.mean([np.abs(lg.argmax(axis=1) - t) for lg, t in zip(logits, true,
                                                                       strict=True)]))
    raw = torch.load(path, weights_only=True)
    raw["meta"]["best_val_mae"] = mae
    torch.save(raw, path)
    entry = refit_confidence_threshold(str(path), work, recipe)
    expected = fit_confidence_threshold([apply_temperatures(lg, 1.0) for lg in logits], true)
    assert entry["value"] == expected.value and "fold 1" in entry["fitted_on"]
    after = torch.load(path, weights_only=True)
    assert after["meta"]["confidence_threshold"] == pytest.approx(entry, nan_ok=True)
    assert {k: v for k, v in after["meta"].items() if k != "confidence_threshold"} == raw["meta"]
    for k, v in raw["state_dict"].items():
        assert after["state_dict"][k].dtype == v.dtype and torch.equal(after["state_dict"][k], v)


def test_within_one_slice_confidence_and_the_more_likely_wrong_criterion():
    from cohort.model.calibration import landmark_confidence

    p = np.array([[0.1, 0.2, 0.4, 0.2, 0.1], [0.6, 0.3, 0.1, 0.0, 0.0]])
    assert np.allclose(landmark_confidence(p, [2, 0], "within_1_slice"), [0.8, 0.9])
    assert np.allclose(landmark_confidence(p, [2, 0], "top1"), [0.4, 0.6])
    true = np.array([[10] * 6, [10] * 6])
    # scan 0 spreads each landmark over 3 slices around its peak; scan 1 is unsure
    probs = []
    for peak_mass, peaks in ((0.9, [10, 11, 9, 10, 10, 10]), (0.3, [10, 14, 10, 6, 10, 10])):
        q = np.full((6, 20), (1 - peak_mass) / 17)
        for m, k in enumerate(peaks):
            q[m, k - 1:k + 2] = peak_mass * np.array([0.25, 0.5, 0.25])
        probs.append(q / q.sum(axis=1, keepdims=True))
    t = fit_confidence_threshold(probs, true, confidence="within_1_slice",
                                 criterion="more_likely_wrong")
    assert t.value == 0.5 and t.to_metadata()["confidence"] == "within_1_slice"
    assert t.wrong_flagged == 1.0 and t.right_flagged == pytest.approx(4 / 10)
    with pytest.raises(ValueError, match="within_1_slice"):
        fit_confidence_threshold(probs, true, criterion="more_likely_wrong")


def test_temperatures_are_kept_only_when_they_help_on_held_out_validation_scans():
    from cohort.train.calibration import temperatures_help

    rng = np.random.default_rng(0)
    true = rng.integers(5, 25, size=(40, 6))

    def logits(scale):
        z = rng.normal(0, 1, (40, 6, 30))
        for s in range(40):  # a sharp peak, on the true slice 60% of the time
            peak = np.where(rng.random(6) < 0.6, true[s], rng.integers(0, 30, 6))
            z[s, np.arange(6), peak] += 3.0
        return [scale * z[s] for s in range(40)]

    helps, details = temperatures_help(logits(5.0), true)  # far too sure: T > 1 helps
    assert helps and details["held_out_nll_after"] < details["held_out_nll_before"]
    helps, details = temperatures_help(logits(1.0), true)  # about right already
    assert details["scans"] == 40
    assert helps == (details["held_out_nll_after"] < details["held_out_nll_before"])
    assert temperatures_help(logits(1.0)[:3], true[:3])[0] is False  # too few scans


def test_the_mostly_wrong_threshold_keeps_flags_right_more_often_than_not():
    # sorted: 0.1 w, 0.2 r, 0.3 w, 0.4 w, 0.5 r, 0.6 r, 0.9 r: below 0.2: 1/1 wrong;
    # below 0.3: 1/2; below 0.4: 2/3; below 0.5: 3/4; below 0.6: 3/5; below 0.9: 3/6:
    # mostly wrong, but never with 95% evidence (3 of 4: lower bound 0.35) -> flag nothing
    conf = [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    right = [True, False, True, False, False, True, True]
    assert mostly_wrong_threshold(conf, right) == 0.0
    # without the evidence rule (level 0.5: the bound is about the median) 3/6 passes
    assert mostly_wrong_threshold(conf, right, evidence=0.5) >= 0.5
    # twelve wrong among the 15 lowest, then right ones: flagged up to where it stays sure
    rng = np.random.default_rng(0)
    conf = np.sort(rng.random(40))
    right = np.ones(40, dtype=bool)
    right[:15] = False
    right[[2, 7, 11]] = True
    t = mostly_wrong_threshold(conf, right)
    flagged = conf < t
    assert flagged.sum() >= 15 and (~right)[flagged].mean() > 0.5
    assert not (conf[flagged.sum()] < t)  # the next one up is not flagged
    assert mostly_wrong_threshold([0.1, 0.5, 0.6], [True, True, False]) == 0.0  # none
    assert mostly_wrong_threshold([0.2, 0.3, 0.4], [False] * 3) > 0.4  # 3 of 3: flag all
    assert mostly_wrong_threshold([0.2, 0.4], [False, False]) == 0.0  # 2 of 2: not enough
    probs = [_peaked(20, [10] * 6, [0.2, 0.9, 0.9, 0.9, 0.9, 0.9])]
    fit = fit_confidence_threshold(probs, np.array([[10] * 6]), confidence="within_1_slice",
                                   criterion="flagged_mostly_wrong")
    assert fit.value == FLAG_FLOOR  # nothing wrong to learn from: the floor
