"""`cohort run` without --masks: the calcium segmenter stage after the DST (mechanics with an
untrained tiny segmenter; the shipped one's accuracy is in tests/job/test_shipped_segmenter).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
import torch

from cohort.anatomy import SEGMENTS
from cohort.cli import main
from cohort.cli.evaluate import handle_calcium
from cohort.query import connect
from cohort.read.nifti import read_nifti
from cohort.read.series import read_series
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("segcohort") / "cohort"
    generate_cohort(SynthConfig(patients=2, seed=31, matrix=128, thicknesses_mm=(2.5,),
                                tilt_p=0.0, localizer_p=0.0, second_series_p=0.0,
                                followup_p=0.0, neck_cut_p=0.0, workers=1), str(root))
    return root


@pytest.mark.timeout(900)
def test_without_masks_the_segmenter_measures_and_says_so(small_cohort, tiny_checkpoint,
                                                          tiny_segmenter, ray_local, tmp_path):
    # a segmenter that says it learned from 0.4-0.5 mm pixels; these series have 1.5-2 mm
    segmenter = tmp_path / "segmenter.pt"
    ckpt = torch.load(tiny_segmenter, weights_only=True)
    ckpt["meta"]["trained_pixel_mm"] = [0.4, 0.5]
    torch.save(ckpt, segmenter)
    out = tmp_path / "out"
    assert main(["run", str(small_cohort / "dicom"), "--out", str(out), "--model",
                 str(tiny_checkpoint), "--segmenter", str(segmenter), "--write-masks",
                 "--salt", "s", "--qc", "none"]) == 0
    db = connect(str(out))
    rows = db.sql("SELECT * FROM series").to_arrow_table().to_pandas()
    assert (rows["status"] == "ok").all()
    assert rows["volumes_computed"].all()
    # measured, and flagged: the volumes of a segmenter outside its training may be far off
    assert all("segmenter_untrained_spacing" in list(f) for f in rows["qc_flags"])
    assert rows["error_detail"].str.contains("outside the 0.40-0.50 mm the calcium "
                                             "segmenter was trained on").all()
    assert rows["mask_source"].str.match(r"^segmenter vit-tiny sha256:[0-9a-f]{12}$").all()
    assert (rows["calcium_interval_level"] == 0.9).all()
    for name in [*SEGMENTS, "total_calcium"]:
        lo, mid, hi = rows[f"{name}_mm3_low"], rows[f"{name}_mm3"], rows[f"{name}_mm3_high"]
        assert (lo <= mid + 1e-9).all() and (mid <= hi + 1e-9).all()
    assert rows["seconds_segment"].notna().all()
    segs = db.sql("SELECT * FROM segments").to_arrow_table().to_pandas()
    assert len(segs) == 8 * len(rows) and segs["volume_mm3_high"].notna().all()
    truth = pd.read_parquet(small_cohort / "ground_truth.parquet").set_index(
        "series_instance_uid")
    run = next((out / "runs").iterdir())
    manifest = json.loads((run / "_SUCCESS.json").read_text())
    assert manifest["masks"] == "segmenter"
    assert manifest["segmenter"]["name"] == "vit-tiny"
    for r in rows.itertuples():
        mask = read_nifti(str(run / r.calcium_mask))
        files = sorted(str(p) for p in (small_cohort / truth.loc[r.series_uid, "dicom_dir"])
                       .iterdir())
        volume = read_series(files, None)
        assert mask.array.shape == volume.array.shape  # on the series grid
        assert np.allclose(mask.grid.origin, volume.grid.origin, atol=1e-3)
        assert int((mask.array > 0).sum()) == r.total_calcium_voxels
    # `cohort evaluate calcium` reads the run, its masks and the truth
    text = handle_calcium(argparse.Namespace(output=str(out), truth=str(
        small_cohort / "ground_truth.parquet"), save=str(tmp_path / "rows.parquet"),
        s3_endpoint=None))
    assert "SYNTHETIC" in text and "segmenter vit-tiny" in text and "| all |" in text
    saved = pd.read_parquet(tmp_path / "rows.parquet")
    assert len(saved) == len(rows) and saved["dice"].notna().all()


@pytest.mark.timeout(600)
def test_external_masks_win_and_no_segmenter_means_landmarks_only(
        small_cohort, tiny_checkpoint, ray_local, tmp_path):
    out = tmp_path / "ext"
    assert main(["run", str(small_cohort / "dicom"), "--out", str(out), "--model",
                 str(tiny_checkpoint), "--masks", str(small_cohort / "masks"), "--salt", "s",
                 "--qc", "none"]) == 0
    rows = connect(str(out)).sql("SELECT * FROM series").to_arrow_table().to_pandas()
    assert (rows["mask_source"] == "external").all()
    assert rows["total_calcium_mm3_low"].isna().all()  # intervals are the segmenter's
    off = tmp_path / "off"
    assert main(["run", str(small_cohort / "dicom"), "--out", str(off), "--model",
                 str(tiny_checkpoint), "--no-segmenter", "--salt", "s", "--qc", "none"]) == 0
    rows = connect(str(off)).sql("SELECT * FROM series").to_arrow_table().to_pandas()
    assert not rows["volumes_computed"].any() and rows["mask_source"].isna().all()
    assert main(["run", str(small_cohort / "dicom"), "--out", str(tmp_path / "x"),
                 "--masks", str(small_cohort / "masks"), "--write-masks"]) == 2
