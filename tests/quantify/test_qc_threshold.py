"""The low-confidence flag with the model's own threshold: where the threshold comes from,
the flag summary of a run, and the shipped checkpoint on a synthetic cohort it never saw."""

import math

import numpy as np
import pandas as pd
import pytest

from cohort.anatomy import LANDMARKS
from cohort.job.landmarks import LandmarkPredictor
from cohort.job.packing import pack
from cohort.model.dst import build_model, save_checkpoint
from cohort.preprocess.model_input import ModelInputConfig, prepare
from cohort.quantify.config import FALLBACK_MIN_LANDMARK_PROBABILITY, QuantifyConfig
from cohort.quantify.qc import low_confidence, summarise_flags, with_model_threshold
from cohort.read.series import read_series
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort


def test_the_config_wins_then_the_model_then_the_fallback():
    probs = {"left_petrolingual": 0.3, "right_carotid_canal": 0.15}
    cfg, source = with_model_threshold(QuantifyConfig(min_landmark_probability=0.1), 0.2)
    assert (cfg.min_landmark_probability, source) == (0.1, "config")
    assert low_confidence(probs, cfg) == ()
    cfg, source = with_model_threshold(QuantifyConfig(), 0.2)
    assert (cfg.min_landmark_probability, source) == (0.2, "model")
    assert low_confidence(probs, cfg) == ("right_carotid_canal",)
    for missing in (None, math.nan, np.float64("nan")):  # NaN: a null read back by pandas
        cfg, source = with_model_threshold(QuantifyConfig(), missing)
        assert (cfg.min_landmark_probability, source) == (0.5, "fallback")
    assert FALLBACK_MIN_LANDMARK_PROBABILITY == 0.5
    assert low_confidence(probs, QuantifyConfig()) == ("right_carotid_canal", "left_petrolingual")


def test_summarise_flags_counts_series_per_flag():
    rows = [
        {"status": "ok", "qc_flags": ["low_landmark_confidence", "landmarks_out_of_order"],
         "low_confidence_landmarks": ["left_petrolingual", "right_carotid_canal"],
         "confidence_threshold_source": "model"},
        {"status": "ok", "qc_flags": np.array(["low_landmark_confidence"]),
         "low_confidence_landmarks": np.array(["left_petrolingual"]),
         "confidence_threshold_source": "model"},
        {"status": "ok", "qc_flags": [], "low_confidence_landmarks": [],
         "confidence_threshold_source": "fallback"},
        {"status": "ok", "qc_flags": None, "low_confidence_landmarks": float("nan")},
        {"status": "error", "qc_flags": ["slices_repaired"]},  # not quantified: not counted
        {"status": "ok", "qc_flags": ["a_future_flag"]},
    ]
    s = summarise_flags(rows)
    assert (s.series, s.flagged) == (5, 3)
    assert list(s.by_flag)[:7] == ["low_landmark_confidence", "landmarks_out_of_order",
                                   "landmark_outside_scan", "left_right_landmarks_apart",
                                   "calcium_above_clinoid", "calcium_below_canal",
                                   "slices_repaired"]
    assert s.by_flag["low_landmark_confidence"] == 2 and s.by_flag["landmarks_out_of_order"] == 1
    assert s.by_flag["slices_repaired"] == 0 and s.by_flag["a_future_flag"] == 1
    assert s.low_confidence_by_landmark["left_petrolingual"] == 2
    assert s.low_confidence_by_landmark["right_carotid_canal"] == 1
    assert s.threshold_sources == {"model": 2, "fallback": 1}
    assert s.lines() == [
        "QC: 3 of 5 quantified series flagged",
        "  low_landmark_confidence: 2 (right_carotid_canal 1, left_petrolingual 2)",
        "  landmarks_out_of_order: 1",
        "  a_future_flag: 1",
        "  confidence threshold from: model 2, fallback 1"]
    assert summarise_flags([]).lines() == ["QC: 0 of 0 quantified series flagged"]


def test_rows_carry_the_model_threshold_or_null(tmp_path, caplog):
    rng = np.random.default_rng(0)
    rows = [{"status": "ok", "model_input": pack(
        x=rng.random((32, 32, 12)).astype(np.float16), slice_index=np.arange(12),
        slice_z_mm=np.arange(12) * 5.0)}, {"status": "error", "model_input": None}]
    with_it, without = tmp_path / "a.pt", tmp_path / "b.pt"
    save_checkpoint(with_it, build_model("tiny"), confidence_threshold={"value": 0.125})
    save_checkpoint(without, build_model("tiny"))
    out = LandmarkPredictor(str(with_it))(pd.DataFrame(rows))
    assert out.loc[0, "confidence_threshold"] == 0.125
    assert pd.isna(out.loc[1, "confidence_threshold"])  # the error row gets none
    out = LandmarkPredictor(str(without))(pd.DataFrame(rows))
    assert out["confidence_threshold"].isna().all()
    assert "carries no confidence threshold" in caplog.text  # the fallback is said, once


def shipped_on_fresh_cohort(root, seed: int, patients: int = 4, matrix: int = 128
                            ) -> pd.DataFrame:
    """The shipped checkpoint on a synthetic cohort of ``seed``: per series x landmark, the
    calibrated probability, whether it is flagged with the row's threshold, and whether the
    landmark is right (within one slice of the truth)."""
    cohort = root / "cohort"
    generate_cohort(SynthConfig(patients=patients, seed=seed, matrix=matrix, workers=1),
                    str(cohort))
    truth = pd.read_parquet(cohort / "ground_truth.parquet")
    truth = truth[truth["series_role"] != "localizer"].reset_index(drop=True)
    predictor = LandmarkPredictor(None, threads=2, prefer_gpu=False)
    rows = []
    for t in truth.itertuples():
        files = sorted(str(p) for p in (cohort / t.dicom_dir).rglob("*") if p.is_file())
        mi = prepare(read_series(files), ModelInputConfig(**_shipped_input()))
        rows.append({"status": "ok", "model_input": pack(
            x=mi.array.astype(np.float16), slice_index=mi.slice_index,
            slice_z_mm=mi.slice_z_mm)})
    out = predictor(pd.DataFrame(rows))
    marks = []
    for (i, row), t in zip(out.iterrows(), truth.to_dict("records"), strict=True):
        cfg, source = with_model_threshold(QuantifyConfig(), row["confidence_threshold"])
        low = low_confidence({n: row[f"{n}_prob"] for n in LANDMARKS}, cfg)
        for n in LANDMARKS:
            marks.append({"series": i, "landmark": n, "source": source,
                          "threshold": cfg.min_landmark_probability,
                          "probability": row[f"{n}_prob"], "flagged": n in low,
                          "right": abs(int(row[f"{n}_slice"]) - int(t[f"{n}_slice"])) <= 1})
    return pd.DataFrame(marks)


def _shipped_input() -> dict:
    from cohort.job.checkpoint import describe

    return describe(None).model_input


@pytest.mark.timeout(600)
def test_the_shipped_threshold_flags_wrong_landmarks_not_every_series(tmp_path):
    # seed 2024, never used to train the shipped checkpoint (seed 7): the flag fires on few
    # series, a flagged landmark is wrong more often than an unflagged one, and unflagged
    # landmarks are right (within one slice) most of the time (measured: 21 of 24, the
    # three misses on thin slices; 92% on the 28 series of docs/landmarks.md)
    marks = shipped_on_fresh_cohort(tmp_path, seed=2024)
    assert (marks["source"] == "model").all()
    flagged_series = marks.groupby("series")["flagged"].any()
    assert flagged_series.sum() < len(flagged_series)
    assert marks.loc[~marks["flagged"], "right"].mean() >= 0.8
    if marks["flagged"].any():
        wrong_flagged = 1 - marks.loc[marks["flagged"], "right"].mean()
        wrong_unflagged = 1 - marks.loc[~marks["flagged"], "right"].mean()
        assert wrong_flagged > wrong_unflagged
