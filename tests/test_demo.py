"""The demo, as `./run demo` runs it (smaller): the real job with the shipped checkpoint on a
fresh synthetic cohort (a seed the checkpoint never saw), checked against ground truth."""

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from cohort.anatomy import LANDMARKS, SEGMENT_LABELS, SEGMENTS
from cohort.demo import run_demo
from cohort.job.checkpoint import describe
from cohort.quantify import quantify, summarise_calcium
from cohort.query import connect
from cohort.read.volume import Volume

#: what the shipped checkpoint must at least reach on unseen synthetic scans (its 5-fold
#: test figures are in the README); a regression in any stage shows here
MAX_MEAN_ERROR_SLICES = 3.0
MIN_WITHIN_ONE_SLICE = 0.6


def test_shipped_checkpoint_is_labelled_and_calibrated():
    info = describe(None)
    assert info.trained_on == "synthetic phantoms" and info.has_temperatures
    assert info.model_input["size"] >= 32 and info.name == "small"


@pytest.mark.timeout(1200)
def test_demo_runs_the_job_and_agrees_with_ground_truth(tmp_path, ray_local):
    report = run_demo(out_dir=str(tmp_path / "demo"), patients=4, seed=123, matrix=128,
                      workers=1)
    assert "[3/3] cohort run" in report and "SYNTHETIC" in report
    results = tmp_path / "demo" / "results"
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
    # the job's segment volumes are the truth mask split by the landmarks it predicted:
    # every series, every segment, voxel for voxel (the side of each voxel from the
    # ground-truth label map; calcium lies on the carotids, far from the midline)
    cohort_root = tmp_path / "demo" / "synthetic-cohort"
    checked = 0
    for _, r in both.iterrows():
        predicted = {n: r[f"{n}_slice"] for n in LANDMARKS}
        if any(pd.isna(v) for v in predicted.values()):
            continue
        mask = Volume.from_sitk(sitk.ReadImage(str(cohort_root / r["mask_path"])))
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort_root / r["labels_path"])))
        side_of = _side_from_labels(labels, mask.grid)
        hu = np.full(mask.array.shape, 500.0, np.float32)
        result = quantify(summarise_calcium(mask.array, hu, mask.grid, side_of),
                          {n: int(v) for n, v in predicted.items()})
        for seg in SEGMENTS:
            assert r[f"{seg}_voxels"] == result.segments[seg].voxels, (r.series_uid, seg)
        checked += 1
    assert checked == len(both)


def _side_from_labels(labels: np.ndarray, grid):
    """Side (+1 left, -1 right) of calcium points, looked up in the truth label map."""
    def side_of(points: np.ndarray) -> np.ndarray:
        i, j, k = np.rint(grid.index(points)).astype(int).T
        codes = labels[k, j, i]
        assert (codes > 0).all(), "asked for the side of a point without a label"
        return np.where(codes >= SEGMENT_LABELS["left_cervical"], 1.0, -1.0)

    return side_of
