"""The whole method path on synthetic series, with the model replaced by the true landmarks:
DICOM -> Volume -> hemisphere split -> calcium summary (true mask) -> segment volumes.
Given the true landmarks and mask, the volumes must equal the generator's ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import SimpleITK as sitk

from cohort.anatomy import LANDMARKS, SEGMENT_LABELS, SEGMENTS
from cohort.preprocess.hemisphere import split_hemispheres
from cohort.quantify import label_map, quantify, summarise_calcium
from cohort.read.series import read_series


def test_true_landmarks_and_mask_give_the_true_segment_volumes(varied_cohort):
    out, _ = varied_cohort
    gt = pq.read_table(out / "ground_truth.parquet").to_pandas()
    rows = gt[(gt["series_role"] != "localizer") & (gt["total_calcium_mm3"] > 0)]
    assert len(rows) >= 3
    for row in rows.itertuples():
        files = sorted(str(p) for p in (Path(out) / row.dicom_dir).iterdir())
        volume = read_series(files)
        split = split_hemispheres(volume)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / row.mask_path)))
        summary = summarise_calcium(mask, volume.array, volume.grid, split.plane.signed_distance)
        landmarks = {name: int(getattr(row, f"{name}_slice")) for name in LANDMARKS}
        result = quantify(summary, landmarks)
        for name in SEGMENTS:
            assert result.segments[name].voxels == getattr(row, f"{name}_voxels"), name
            # voxel sizes come from the DICOM header here (positions carry 4 decimals)
            np.testing.assert_allclose(result.segments[name].volume_mm3,
                                       getattr(row, f"{name}_mm3"), rtol=1e-6)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / row.labels_path)))
        ours = label_map(mask, volume.grid, landmarks, split.plane.signed_distance)
        np.testing.assert_array_equal(ours, labels)
        assert set(np.unique(ours)) <= {0, *SEGMENT_LABELS.values()}
