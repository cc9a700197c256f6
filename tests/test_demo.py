"""The demo, as `./run demo` runs it (smaller): the real job with the shipped checkpoint on a
fresh synthetic cohort (a seed the checkpoint never saw), checked against ground truth."""

import argparse

import numpy as np
import pandas as pd
import pytest

from cohort.anatomy import LANDMARKS, SEGMENTS
from cohort.cli.evaluate import handle_landmarks
from cohort.demo import run_demo
from cohort.job.checkpoint import describe
from cohort.query import connect
from cohort.testing.truth import truth_segment_voxels

#: what the shipped checkpoint must at least reach on unseen synthetic scans (its 5-fold
#: test figures are in the README); a regression in any stage shows here
MAX_MEAN_ERROR_SLICES = 1.0
MIN_WITHIN_ONE_SLICE = 0.85


def test_shipped_checkpoint_is_labelled_and_calibrated():
    info = describe(None)
    assert info.trained_on == "synthetic phantoms" and info.has_temperatures
    assert info.model_input["size"] >= 32 and info.name == "small"


@pytest.mark.timeout(1200)
def test_demo_runs_the_job_and_agrees_with_ground_truth(tmp_path, ray_local):
    report = run_demo(out_dir=str(tmp_path / "demo"), patients=4, seed=123, matrix=128,
                      workers=1, masks=True)
    assert "[3/3] cohort run" in report and "SYNTHETIC" in report
    results = tmp_path / "demo" / "results"
    # the demo ends by writing the report of its run (tests/report check its content)
    page = results / "report" / "index.html"
    assert f"Report (SYNTHETIC): {page}" in report
    html = page.read_text(encoding="utf-8")
    assert "the images are synthetic phantoms" in html and "Cohort flow" in html
    series = connect(str(results)).sql("SELECT * FROM series WHERE status = 'ok'"
                                       ).to_arrow_table().to_pandas()
    truth = pd.read_parquet(tmp_path / "demo" / "synthetic-cohort" / "ground_truth.parquet")
    both = series.merge(truth, left_on="series_uid", right_on="series_instance_uid",
                        suffixes=("", "_true"))
    assert len(both) >= 4
    errors = np.abs(np.stack([both[f"{n}_slice"] - both[f"{n}_slice_true"]
                              for n in LANDMARKS]))
    assert errors.mean() <= MAX_MEAN_ERROR_SLICES, errors
    assert (errors <= 1).mean() >= MIN_WITHIN_ONE_SLICE, errors
    # the demo prints the agreement, and `cohort evaluate landmarks` gives the same figure
    assert f"MAE {errors.mean():.2f} slices" in report
    table = handle_landmarks(argparse.Namespace(
        output=str(results), truth=str(tmp_path / "demo" / "synthetic-cohort" /
                                       "ground_truth.parquet"), save=None, s3_endpoint=None))
    overall = next(line for line in table.splitlines() if line.startswith("| all |"))
    assert f"| {errors.mean():.3f} |" in overall and "SYNTHETIC" in table
    # the job's segment volumes are the truth mask split by the landmarks it predicted:
    # every series, every segment, voxel for voxel (the side of each voxel from the
    # ground-truth label map; calcium lies on the carotids, far from the midline)
    cohort_root = tmp_path / "demo" / "synthetic-cohort"
    for _, r in both.iterrows():
        predicted = {n: r[f"{n}_slice"] for n in LANDMARKS}
        voxels = truth_segment_voxels(str(cohort_root / r["mask_path"]),
                                      str(cohort_root / r["labels_path"]), predicted)
        for seg in SEGMENTS:
            assert r[f"{seg}_voxels"] == voxels[seg], (r.series_uid, seg)
    # the same command again (a user's second `./run demo`) runs the job again on the new
    # cohort, instead of finding every series finished
    again = run_demo(out_dir=str(tmp_path / "demo"), patients=2, seed=124, matrix=128,
                     workers=1, masks=True)
    assert "[3/3] cohort run: run " in again and "nothing to do" not in again
    series = connect(str(results)).sql("SELECT series_uid FROM series").fetchall()
    truth = pd.read_parquet(cohort_root / "ground_truth.parquet")
    assert {s for (s,) in series} <= set(truth["series_instance_uid"])
