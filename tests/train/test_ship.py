"""Exporting the shipped checkpoint: the best fold on validation, float16, labelled."""

import copy
import io
from dataclasses import replace

import pandas as pd
import torch

from cohort.model.dst import build_model, load_checkpoint, save_checkpoint
from cohort.train.ship import RECIPE, export_best
from cohort.train.splits import SplitConfig


def _study(tmp_path, val_mae: dict[int, float]):
    """A finished study folder: one tiny fold model per fold with its validation MAE, and
    a Table II summary; returns the folder and the models."""
    study = tmp_path / "study"
    (study / "models").mkdir(parents=True)
    (study / "tables").mkdir()
    models = {}
    for fold, val in val_mae.items():
        torch.manual_seed(fold)
        models[fold] = build_model("tiny")
        buf = io.BytesIO()
        save_checkpoint(buf, models[fold], best_val_mae=val, fold=fold,
                        model_input={"size": 32}, temperatures={"x": 1.0})
        (study / "models" / f"fold-{fold}.pt").write_bytes(buf.getvalue())
    pd.DataFrame([{"landmark": "overall", "metric": "mae", "mean": 0.5, "std": 0.1,
                   "n_folds": len(val_mae), "synthetic": True}]).to_parquet(
        study / "tables" / "table2_summary.parquet")
    return study, models


def test_export_picks_the_best_validation_fold_and_labels_it(tmp_path):
    study, models = _study(tmp_path, {0: 0.9, 1: 0.4, 2: 0.7})
    recipe = replace(RECIPE, study=replace(RECIPE.study, splits=SplitConfig(folds=3),
                                           only_folds=()))
    out = tmp_path / "shipped.pt"
    meta = export_best(str(study), str(out), recipe)
    model, saved = load_checkpoint(out)
    assert saved["fold"] == 1 and saved["trained_on"] == "synthetic phantoms"
    assert saved["model_input"] == {"size": 32} and saved["not_for_clinical_use"]
    assert saved["study_table2_overall"][0]["mean"] == 0.5
    assert meta["recipe"]["study"]["train"]["lr"] == RECIPE.study.train.lr
    raw = torch.load(out, weights_only=True)
    assert all(v.dtype in (torch.float16, torch.int64) for v in raw["state_dict"].values())
    ref = models[1].state_dict()
    for k, v in model.state_dict().items():  # loaded back as float32, equal to float16 precision
        assert v.dtype == ref[k].dtype
        assert torch.allclose(v.float(), ref[k].float(), atol=1e-2, rtol=1e-2)


def test_export_considers_only_the_folds_the_recipe_trains(tmp_path):
    study, _ = _study(tmp_path, {0: 0.9, 1: 0.4})
    recipe = replace(RECIPE, study=replace(RECIPE.study, splits=SplitConfig(folds=3),
                                           only_folds=(0,)))
    meta = export_best(str(study), str(tmp_path / "shipped.pt"), recipe)
    assert meta["fold"] == 0  # fold 1 (better) is not part of this recipe's study


def test_the_shipped_recipe_looks_at_the_skull_base():
    mi = RECIPE.study.model_input
    assert mi.crop == "skull_base" and mi.fov_mm / mi.size <= 2.0  # 2 mm pixels or finer
    assert RECIPE.study.train.target_sigma_mm > 0 and RECIPE.synth.patients >= 150


def test_fine_tuning_starts_from_the_first_stage_weights_of_its_fold(tmp_path):
    from cohort.train.loop import TrainConfig, initial_weights

    torch.manual_seed(3)
    first = build_model("tiny")
    for fold in (0, 1):
        save_checkpoint(tmp_path / f"fold-{fold}.pt",
                        copy.deepcopy(first).half() if fold else first, best_val_mae=0.5)
    cfg = TrainConfig(model="tiny", init_weights=str(tmp_path / "fold-{fold}.pt"))
    weights = initial_weights(cfg.init_weights.format(fold=1), None)
    fresh = build_model("tiny")
    fresh.load_state_dict(weights)  # float16 on disk, float32 to train
    for k, v in fresh.state_dict().items():
        assert v.dtype == first.state_dict()[k].dtype
        assert torch.allclose(v.float(), first.state_dict()[k].float(), atol=1e-2)


def test_the_recipe_keeps_its_second_stage_only_when_validation_says_so(tmp_path):
    from cohort.train.ship import _best_val_mae

    for name, val in (("a", 0.6), ("b", 0.4)):
        (tmp_path / name / "models").mkdir(parents=True)
        save_checkpoint(tmp_path / name / "models" / "fold-0.pt", build_model("tiny"),
                        best_val_mae=val)
    assert _best_val_mae(str(tmp_path / "a"), RECIPE, None) == 0.6
    assert _best_val_mae(str(tmp_path / "b"), RECIPE, None) == 0.4
    assert RECIPE.finetune is None  # the second stage tried did not help (docs/landmarks.md)


def test_calibrating_the_decoding_writes_it_and_keeps_the_weights_bit_identical(tmp_path):
    from cohort.anatomy import LANDMARKS
    from cohort.model.decoding import LandmarkDecoding
    from cohort.synth.config import SynthConfig
    from cohort.train.ship import calibrate_decoding

    calib = SynthConfig(patients=6, seed=3, matrix=48, thicknesses_mm=(2.0, 5.0),
                        localizer_p=0, second_series_p=0, followup_p=0, workers=1)
    recipe = replace(RECIPE, calibration=calib)
    torch.manual_seed(0)
    path = tmp_path / "shipped.pt"
    save_checkpoint(path, build_model("tiny", max_len=128).half(), fold=0,
                    temperatures=dict.fromkeys(LANDMARKS, 1.0), model_input={"size": 32},
                    confidence_threshold={"value": 0.5, "fitted_on": "old"})
    raw = torch.load(path, weights_only=True)
    entry = calibrate_decoding(str(path), str(tmp_path / "work"), recipe)
    after = torch.load(path, weights_only=True)
    for k, v in raw["state_dict"].items():
        assert after["state_dict"][k].dtype == v.dtype and torch.equal(after["state_dict"][k], v)
    meta = after["meta"]
    assert meta["decoding"] == entry and entry["scans"] == 6
    assert "seed 3" in entry["fitted_on"] and "never trained on" in entry["fitted_on"]
    assert set(entry["held_out_mae"]) == {"paper", "candidate"}
    decoding = LandmarkDecoding.from_metadata(entry)
    # kept: the candidate's decoding; else the paper's
    assert decoding.mirror == entry["kept"]
    assert entry["kept"] == (entry["held_out_mae"]["candidate"] < entry["held_out_mae"]["paper"])
    # the threshold now belongs to the decoding's slices, on every calibration landmark
    threshold = meta["confidence_threshold"]
    assert threshold["fitted_on"] == entry["fitted_on"]
    assert threshold["n_right"] + threshold["n_wrong"] == 6 * 6
    assert threshold["confidence"] == "within_1_slice"
    assert {k: v for k, v in meta.items() if k not in ("decoding", "confidence_threshold")} == {
        k: v for k, v in raw["meta"].items() if k != "confidence_threshold"}
