"""Building a series' SEG and SR from the export cohort (shared by the export tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cohort.anatomy import LANDMARKS, SEGMENT_LABELS, SEGMENTS
from cohort.export.series import ExportConfig, export_series
from cohort.read.nifti import read_nifti
from cohort.read.series import read_series

STUDY_KEY = "0f1e2d3c4b5a69788796a5b4"
PATIENT_KEY = "c0ffee00c0ffee00c0ffee00"


def series_of(out: Path, truth: pd.DataFrame, i: int):
    """(files, volume, labels on the volume's grid, truth row) of series ``i``."""
    r = truth.iloc[i]
    files = sorted(str(p) for p in (out / r["dicom_dir"]).glob("*.dcm"))
    volume = read_series(files)
    labels = read_nifti(str(out / r["labels_path"]))
    assert labels.grid.shape == volume.grid.shape
    assert np.allclose(labels.grid.origin, volume.grid.origin, atol=1e-3)
    return files, volume, np.rint(labels.array).astype(np.uint8), r


def finished_row(truth_row, labels: np.ndarray, voxel_mm3: float) -> dict:
    """A series-table row as `cohort run` finishes it, numbers made from the labels."""
    row = {"run_id": "20260101T000000-test", "series_key": truth_row["series_instance_uid"],
           "series_uid": truth_row["series_instance_uid"], "patient_key": PATIENT_KEY,
           "study_key": STUDY_KEY, "model_name": "dst-small", "model_sha256": "ab" * 32,
           "model_trained_on": "synthetic phantoms",
           "mask_source": "segmenter vit-default sha256:0123456789ab",
           "code_version": "0.1.0+gtest", "risk_group": "low"}
    for name in SEGMENTS:
        n = int((labels == SEGMENT_LABELS[name]).sum())
        row[f"{name}_mm3"] = round(n * voxel_mm3, 3)
        row[f"{name}_plaques"] = 1 if n else 0
        row[f"{name}_peak_hu"] = 400.0 + SEGMENT_LABELS[name] if n else None
    row["total_calcium_mm3"] = round(sum(row[f"{n}_mm3"] for n in SEGMENTS), 3)
    for i, name in enumerate(LANDMARKS):
        row[f"{name}_slice"] = int(truth_row[f"{name}_slice"])
        row[f"{name}_z_mm"] = float(truth_row[f"{name}_z_mm"]) + 0.0 * i
    return row


def export(out: Path, truth: pd.DataFrame, i: int, tmp: Path):
    """Write series ``i``'s SEG and SR under ``tmp``; (seg path, sr path, row, volume,
    labels, files)."""
    files, volume, labels, r = series_of(out, truth, i)
    voxel = float(np.prod(volume.grid.spacing))
    row = finished_row(r, labels, voxel)
    got = export_series(files, labels, volume.grid, row, ExportConfig())
    paths = {}
    for name, data in got.items():
        paths[name] = tmp / f"{i}-{name}"
        paths[name].write_bytes(data)
    return paths["seg.dcm"], paths["sr.dcm"], row, volume, labels, files
