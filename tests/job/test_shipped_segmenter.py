"""The shipped calcium segmenter: labelled, calibrated, and measuring calcium on phantoms it
never saw, through the real job (`cohort run` without --masks, shipped DST and segmenter)
and `cohort evaluate calcium`."""

from __future__ import annotations

import argparse

import pandas as pd
import pytest

from cohort.calcium_agreement import agreement, calcium_rows
from cohort.cli import main
from cohort.cli.evaluate import handle_calcium
from cohort.job.segmenter_checkpoint import describe_segmenter
from cohort.query import connect
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort

#: what the shipped segmenter must at least reach on a few unseen 512 x 512 phantoms (its
#: figures on larger unseen cohorts are in docs/segmenter.md); a regression shows here
MIN_POOLED_DICE = 0.45
MAX_MEDIAN_VOLUME_ERROR = 0.6  # relative, on series with calcium


def test_shipped_segmenter_is_labelled_and_calibrated():
    info = describe_segmenter(None)
    assert info.trained_on == "synthetic phantoms" and info.name == "vit-default"
    assert 0.05 < info.threshold < 0.95 and info.temperature > 0
    assert info.level == 0.9 and info.crop.lateral_mm > 0
    assert info.mask_source.startswith("segmenter vit-default sha256:")
    assert info.component_filter is not None  # fitted on phantoms it never trained on


@pytest.mark.slow  # three 512 x 512 phantoms through the whole job: about 4 minutes
@pytest.mark.timeout(1500)
def test_shipped_segmenter_measures_unseen_phantoms(tmp_path, ray_local):
    root = tmp_path / "cohort"
    generate_cohort(SynthConfig(patients=3, seed=606, localizer_p=0.0, second_series_p=0.0,
                                followup_p=0.0, calcium_free_p=0.0, workers=1), str(root))
    out = tmp_path / "out"
    assert main(["run", str(root / "dicom"), "--out", str(out), "--write-masks", "--salt",
                 "s", "--qc", "none"]) == 0
    series = connect(str(out)).sql("SELECT * FROM series").to_arrow_table().to_pandas()
    assert (series["status"] == "ok").all() and series["volumes_computed"].all()
    truth = pd.read_parquet(root / "ground_truth.parquet")
    rows = calcium_rows(series, truth, output_url=str(out), truth_root=str(root))
    assert len(rows) == len(series) and rows["dice"].notna().all()
    table = agreement(rows)
    overall = table[table["group"] == "all"].iloc[0]
    assert overall["dice_pooled"] >= MIN_POOLED_DICE, rows
    has = rows[rows["true_mm3"] > 0]
    rel = ((has["pred_mm3"] - has["true_mm3"]).abs() / has["true_mm3"]).median()
    assert rel <= MAX_MEDIAN_VOLUME_ERROR, rows
    assert (rows["low_mm3"] <= rows["pred_mm3"]).all()
    assert (rows["pred_mm3"] <= rows["high_mm3"]).all()
    text = handle_calcium(argparse.Namespace(output=str(out), truth=str(
        root / "ground_truth.parquet"), save=None, s3_endpoint=None))
    assert "SYNTHETIC" in text and "segmenter vit-default" in text
