"""`cohort train localization` as a user runs it, ablations included."""

import duckdb
import pytest

from cohort.cli import main
from cohort.model.dst import load_checkpoint
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort


def test_train_localization_command_writes_tables_ii_iv_and_v(tmp_path, ray_local, capsys):
    data = tmp_path / "cohort"
    generate_cohort(SynthConfig(patients=6, seed=8, matrix=48, thicknesses_mm=(5.0,),
                                localizer_p=1.0, second_series_p=0, followup_p=0, workers=1),
                    str(data))
    out = tmp_path / "study"
    code = main(["train", "localization", "--data", str(data), "--out", str(out), "--model",
                 "tiny", "--folds", "2", "--epochs", "1", "--ablations", "blocks_0",
                 "--crop", "skull_base", "--fov-mm", "128", "--optimizer", "adamw",
                 "--lr", "5e-4", "--target-sigma-mm", "1.5"])
    assert code == 0
    # the recipe's options reach the models: input, optimizer, targets, validation curve
    _, meta = load_checkpoint(out / "models" / "fold-0.pt")
    assert meta["model_input"]["crop"] == "skull_base" and meta["model_input"]["fov_mm"] == 128
    assert meta["train_config"]["optimizer"] == "adamw"
    assert meta["train_config"]["target_sigma_mm"] == 1.5
    assert [h["epoch"] for h in meta["history"]] == [0] and "val_mae" in meta["history"][0]
    printed = capsys.readouterr().out
    assert "SYNTHETIC localization study: 6 series, 6 patients, 2 folds" in printed
    tables = out / "tables"
    for name in ("table2_summary.md", "table4_ablation.md", "fold_metrics.parquet",
                 "predictions.parquet", "calibration.parquet", "table4_ablation.parquet"):
        assert (tables / name).is_file(), name
    variants = duckdb.sql(f"SELECT DISTINCT variant FROM read_parquet('{tables}/"
                          "table4_ablation.parquet') ORDER BY variant").fetchall()
    assert [v[0] for v in variants] == ["blocks_0", "full"]
    assert (tables / "table4_ablation.md").read_text().startswith("SYNTHETIC")
    depth = duckdb.sql(f"SELECT DISTINCT variant FROM read_parquet('{tables}/"
                       "table5_depth.parquet') ORDER BY variant").fetchall()
    assert [v[0] for v in depth] == ["0 blocks", "2 blocks (full)"]  # tiny has 2 blocks
    assert "Table V" in (tables / "table5_depth.md").read_text()


def test_bad_data_and_ablation_names_fail_before_training(tmp_path, capsys):
    assert main(["train", "localization", "--data", str(tmp_path), "--out",
                 str(tmp_path / "o")]) == 2
    assert "neither a synthetic cohort" in capsys.readouterr().err
    assert main(["train", "localization", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--ablations", "no_brain"]) == 2
    assert "unknown ablation 'no_brain'" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["huge"])
def test_unknown_model(tmp_path, capsys, model):
    assert main(["train", "localization", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--model", model]) == 2
    assert "unknown DST configuration 'huge'" in capsys.readouterr().err


def test_train_decoding_command_fits_and_reports(tmp_path, capsys):
    import torch

    from cohort.anatomy import LANDMARKS
    from cohort.model.dst import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model("tiny", max_len=512).half(), fold=0,
                    temperatures=dict.fromkeys(LANDMARKS, 1.0), model_input={"size": 32})
    code = main(["train", "decoding", str(path), "--out", str(tmp_path / "work"),
                 "--patients", "3", "--seed", "11"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC calibration cohort, seed 11" in printed and "out of sample: MAE" in printed
    _, meta = load_checkpoint(path)
    assert meta["decoding"]["fitted_on"].startswith("SYNTHETIC calibration cohort, seed 11")
    assert meta["confidence_threshold"]["fitted_on"] == meta["decoding"]["fitted_on"]
    # the cohort the recipe names, with the patients and seed asked for
    assert (tmp_path / "work" / "calibration-cohort" / "_SUCCESS.json").is_file()
