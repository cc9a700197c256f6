"""SEG and SR of one finished series, as bytes: what the job's finish stage writes under
``<run>/dicom/<series>/`` with ``--dicom-seg``."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np

from cohort.export.dicom_seg import build_seg
from cohort.export.dicom_sr import SeriesNumbers, build_sr
from cohort.export.headers import Pseudonyms, read_headers
from cohort.export.provenance import Provenance
from cohort.geometry import Grid
from cohort.storage import StorageOptions, filesystem

logger = logging.getLogger(__name__)

SEG_NAME = "seg.dcm"
SR_NAME = "sr.dcm"


@dataclass(frozen=True)
class ExportConfig:
    keep_ids: bool = False  # the run writes identifiers as they are (--keep-ids)


def provenance(row: dict, synthetic_data: bool) -> Provenance:
    """What made a finished row's results."""
    return Provenance(run_id=str(row["run_id"]), model_name=str(row.get("model_name")),
                      model_sha256=str(row.get("model_sha256") or ""),
                      model_trained_on=str(row.get("model_trained_on") or "unknown"),
                      mask_source=str(row.get("mask_source") or "external"),
                      code_version=str(row.get("code_version") or ""),
                      synthetic_data=synthetic_data)


def _bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def export_series(files: list[str], labels: np.ndarray, grid: Grid, row: dict,
                  config: ExportConfig, storage: StorageOptions | None = None
                  ) -> dict[str, bytes]:
    """``{"seg.dcm": ..., "sr.dcm": ...}`` of one finished row (status ok, with volumes).

    Args:
        files: the series' DICOM files (their headers are read again; pixels are not).
        labels: the segment label map ``[k, j, i]`` on ``grid`` (the read volume's).
        row: the finished row (landmarks native, volumes, keys, model).
        config: how identifiers are written.
    """
    ids = Pseudonyms(patient_key=row.get("patient_key"), study_key=row.get("study_key"),
                     keep_ids=config.keep_ids)
    def opener(url: str):  # local paths and object storage alike
        fs, path = filesystem(url, storage)
        return fs.open(path, "rb")

    headers, synthetic = read_headers([str(f) for f in files], ids, opener)
    numbers = SeriesNumbers.from_row(row)
    prov = provenance(row, synthetic)
    uid = str(row.get("series_uid") or row["series_key"])
    seg = build_seg(headers, labels, grid, prov, uid)
    sr = build_sr(seg, headers, numbers, prov, uid)
    return {SEG_NAME: _bytes(seg), SR_NAME: _bytes(sr)}
