"""`cohort run` on sequential two-block head protocols (variable slice thickness, with and
without gantry tilt): every series ok, landmarks as native slices and z against the
generator's truth, segment volumes from the truth masks (SYNTHETIC phantoms)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cohort.anatomy import LANDMARKS, SEGMENTS
from cohort.pipeline import RunConfig, run_cohort
from cohort.query import connect
from cohort.testing.truth import truth_segment_voxels
from cohort.write.identity import IdentityConfig

#: the shipped checkpoint on unseen stepped scans, in acquired slices (as tests/test_demo.py
#: on regular ones) and in mm
MAX_MEAN_ERROR_SLICES = 3.0
MIN_WITHIN_ONE_SLICE = 0.6


@pytest.fixture(scope="module")
def stepped_run(stepped_cohort, ray_local, tmp_path_factory):
    root, _ = stepped_cohort
    out = tmp_path_factory.mktemp("stepped-run") / "out"
    config = RunConfig(masks=str(root / "masks"), identity=IdentityConfig(salt="s"),
                       qc="none")
    run_cohort(str(root / "dicom"), str(out), config)
    db = connect(str(out))
    series = db.sql("SELECT * FROM series").to_arrow_table().to_pandas()
    marks = db.sql("SELECT * FROM landmarks").to_arrow_table().to_pandas()
    truth = pd.read_parquet(root / "ground_truth.parquet")
    both = series.merge(truth, left_on="series_uid", right_on="series_instance_uid",
                        suffixes=("", "_true"))
    return both, marks, root


@pytest.mark.timeout(900)
def test_every_stepped_series_is_ok_with_native_landmarks(stepped_run):
    both, marks, _ = stepped_run
    assert len(both) == 6 and (both["status"] == "ok").all(), both[["error_code",
                                                                   "error_detail"]]
    assert both["variable_spacing"].all() and both["volumes_computed"].all()
    assert (both["tilt_corrected"] == (both["gantry_tilt_deg"] != 0)).all()
    # landmarks count acquired slices; the read volume has more (finest block's spacing)
    assert (both["n_slices"] > both["n_slices_true"]).all()
    for name in LANDMARKS:
        assert both[f"{name}_slice"].between(0, both["n_slices_true"] - 1).all()
    assert marks["volume_slice"].notna().all() and (marks["volume_slice"] >= marks["slice"]).all()
    errors = np.abs(np.stack([both[f"{n}_slice"] - both[f"{n}_slice_true"] for n in LANDMARKS]))
    assert errors.mean() <= MAX_MEAN_ERROR_SLICES, errors
    assert (errors <= 1).mean() >= MIN_WITHIN_ONE_SLICE, errors
    mm = np.abs(np.stack([both[f"{n}_z_mm"] - both[f"{n}_z_mm_true"] for n in LANDMARKS]))
    assert mm.mean() <= 3 * both["slice_thickness_mm_true"].mean(), mm


def test_stepped_segment_volumes_match_the_truth(stepped_run):
    both, marks, root = stepped_run
    # every calcium voxel of the truth mask is counted once, in some segment
    truth_voxels = both[[f"{s}_voxels_true" for s in SEGMENTS]].sum(axis=1)
    assert (both["total_calcium_voxels"] == truth_voxels).all()
    assert np.allclose(both["total_calcium_mm3"], both["total_calcium_mm3_true"], rtol=1e-4)
    # the segments are the truth mask split at the landmarks the job found (their slices
    # of the read volume), every series, voxel for voxel
    for _, r in both.iterrows():
        vs = marks[marks["series_uid"] == r.series_uid].set_index("landmark")["volume_slice"]
        voxels = truth_segment_voxels(str(root / r["mask_path"]), str(root / r["labels_path"]),
                                      {n: int(vs[n]) for n in LANDMARKS})
        for seg in SEGMENTS:
            assert r[f"{seg}_voxels"] == voxels[seg], (r.series_uid, seg)
