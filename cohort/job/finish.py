"""The last per-series stage: landmarks + calcium summary -> segment volumes, risk group,
QC flags; the QC picture for flagged series; optional NIfTI segment label maps.

Both pictures and label maps need full-resolution data, which never travels between
stages: the series (for a picture) or its mask (for a label map) is read again here, for
the few series that need it, inside the isolated process with the series time limit. A
picture that cannot be drawn leaves a note in ``error_detail``; it never fails the series.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk

from cohort.anatomy import LANDMARKS, SEGMENTS
from cohort.errors import SeriesError
from cohort.job.packing import unpack
from cohort.job.prepare import MASK_CODES, PrepareConfig, mask_url, read_mask, run_isolated
from cohort.quantify import CalciumSummary, QuantifyConfig, label_map, plane_side, quantify
from cohort.quantify.qc import QCFlag, flag_reordered, with_model_threshold
from cohort.read.nifti import read_nifti
from cohort.read.series import read_series
from cohort.read.volume import Volume
from cohort.storage import join, write_bytes
from cohort.write.runs import safe_name

logger = logging.getLogger(__name__)

QC_CHOICES = ("flagged", "all", "none")


@dataclass(frozen=True)
class FinishConfig:
    quantify: QuantifyConfig = field(default_factory=QuantifyConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    run_url: str = ""  # the run folder: pictures under qc/, label maps under labels/
    qc: str = "flagged"  # which series get a QC picture: flagged | all | none
    qc_series: frozenset[str] = frozenset()  # series keys or UIDs that get one in any case
    label_maps: bool = False  # write NIfTI segment label maps (needs masks)
    dicom_seg: bool = False  # write a DICOM SEG and SR per series under dicom/<series>/
    keep_ids: bool = False  # identifiers as they are (--keep-ids): the exports' study UID


def empty_summary(n_slices: int, spacing_mm: float) -> CalciumSummary:
    """No calcium: what quantification sees when no mask was given (QC on landmarks only)."""
    return CalciumSummary(
        n_slices=n_slices, voxel_mm3=0.0, slice_spacing_mm=spacing_mm,
        slice_voxels=np.zeros((2, n_slices), dtype=np.int64),
        slice_peak_hu=np.full((2, n_slices), np.nan, dtype=np.float32),
        piece_side=np.zeros(0, dtype=np.int8), piece_first_slice=np.zeros(0, dtype=np.int64),
        piece_offsets=np.zeros(1, dtype=np.int64), piece_counts=np.zeros(0, dtype=np.int64),
        piece_peak_hu=np.zeros(0, dtype=np.float32))


def _summary(packed: bytes) -> CalciumSummary:
    d = unpack(packed)
    return CalciumSummary.from_dict({k: v for k, v in d.items()})


def draw_picture(files: list[str], series_uid: str, landmarks: dict[str, int],
                 plane: tuple[list, list], title: str, config: FinishConfig) -> bytes:
    """PNG bytes of the coronal/sagittal reformat with landmark planes and calcium by
    segment (`cohort.write.reformat`)."""
    from cohort.write.reformat import reformat_figure

    volume = read_series(files, config.prepare.storage, config.prepare.read, series=series_uid)
    labels = None
    if config.prepare.masks_url:
        try:
            mask = read_mask(config.prepare, volume, series_uid)
        except SeriesError as e:  # a mask problem: the picture shows the landmarks only
            if e.code not in MASK_CODES:
                raise
        else:
            labels = label_map(mask, volume.grid, landmarks, plane_side(*plane))
    image = reformat_figure(volume.array, volume.grid, landmarks, labels, title=title)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def label_nifti(files: list[str], series_uid: str, landmarks: dict[str, int],
                plane: tuple[list, list], config: FinishConfig) -> bytes:
    """NIfTI (.nii.gz) bytes of the segment label map on the mask's grid."""
    mask = read_nifti(mask_url(config.prepare.masks_url, series_uid), config.prepare.storage,
                      series=series_uid)
    labels = label_map(mask.array > 0, mask.grid, landmarks, plane_side(*plane))
    image = Volume(labels.astype(np.float32), mask.grid).to_sitk()
    image = sitk.Cast(image, sitk.sitkUInt8)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "labels.nii.gz")
        sitk.WriteImage(image, path, useCompression=True)
        with open(path, "rb") as f:
            return f.read()


def dicom_export(files: list[str], series_uid: str, landmarks: dict[str, int],
                 plane: tuple[list, list], row: dict, config: FinishConfig) -> dict[str, bytes]:
    """SEG and SR bytes of a finished row (`cohort.export.series`), from its calcium mask
    (the external one, or the segmenter's written under the run's masks/) labelled by
    segment on the mask's grid, the read volume's."""
    from cohort.export.series import ExportConfig, export_series

    if config.prepare.masks_url:
        url = mask_url(config.prepare.masks_url, series_uid)
    else:
        url = join(config.run_url, row["calcium_mask"])
    mask = read_nifti(url, config.prepare.storage, series=series_uid)
    labels = label_map(mask.array > 0, mask.grid, landmarks, plane_side(*plane))
    return export_series(files, labels.astype(np.uint8), mask.grid, row,
                         ExportConfig(keep_ids=config.keep_ids), config.prepare.storage)


def volume_intervals(packed: bytes, summary: CalciumSummary, landmarks: dict[str, int],
                     config: QuantifyConfig) -> dict:
    """``<segment>_mm3_low/_high`` and ``total_calcium_mm3_low/_high`` of the segmenter's
    interval masks (`cohort.job.calcium`), by the same slice rule as the volumes."""
    d = unpack(packed)
    out: dict = {"calcium_interval_level": float(d["level"][0])}
    for bound in ("low", "high"):
        s = replace(empty_summary(summary.n_slices, summary.slice_spacing_mm),
                    voxel_mm3=summary.voxel_mm3, slice_voxels=d[bound].astype(np.int64))
        got = quantify(s, landmarks, config).as_row()
        for name in SEGMENTS:
            out[f"{name}_mm3_{bound}"] = got[f"{name}_mm3"]
        out[f"total_calcium_mm3_{bound}"] = got["total_calcium_mm3"]
    return out


def finish_row(row: dict, config: FinishConfig) -> dict:
    """Fill segment volumes, risk group, flags and picture links of one ok row."""
    if row.get("status") != "ok":
        return row
    t0 = time.perf_counter()
    landmarks = {n: int(row[f"{n}_slice"]) for n in LANDMARKS}
    probabilities = {n: row[f"{n}_prob"] for n in LANDMARKS}
    calcium = row.get("calcium")
    summary = (_summary(calcium) if calcium is not None
               else empty_summary(int(row["n_slices"]), float(row["slice_step_mm"])))
    # the model's own confidence threshold (fitted on its validation split) unless the
    # configuration fixes one
    qconfig, threshold_source = with_model_threshold(config.quantify,
                                                     row.get("confidence_threshold"))
    result = quantify(summary, landmarks, qconfig, probabilities)
    values = result.as_row()
    values = flag_reordered(values, row.get("reordered_landmarks"))
    row["confidence_threshold"] = qconfig.min_landmark_probability
    row["confidence_threshold_source"] = threshold_source
    problem = row.get("mask_problem")
    if calcium is None:
        values = {k: (v if k in ("qc_flags", "low_confidence_landmarks") else None)
                  for k, v in values.items()}
        if problem:  # the image was fine: landmarks kept, the mask's problem said
            row["error_code"] = problem["code"]
            row["error_detail"] = f"segment volumes not computed: {problem['detail']}"
            values["qc_flags"] = [*values["qc_flags"], QCFlag.MASK_PROBLEM.value]
        else:
            row["error_detail"] = ("no calcium mask (no --masks, segmenter switched off): "
                                   "landmarks only, segment volumes not computed")
    else:
        values["risk_scheme"] = config.quantify.risk_scheme
        if row.get("calcium_bounds") is not None:
            values.update(volume_intervals(row["calcium_bounds"], summary, landmarks, qconfig))
        if row.get("segmenter_spacing_note"):
            values["qc_flags"] = [*values["qc_flags"],
                                  QCFlag.SEGMENTER_UNTRAINED_SPACING.value]
            row["error_detail"] = _note(row.get("error_detail"), row["segmenter_spacing_note"])
        if row.get("crop_edge_voxels"):
            values["qc_flags"] = [*values["qc_flags"], QCFlag.CALCIUM_AT_CROP_EDGE.value]
            row["error_detail"] = _note(row.get("error_detail"), (
                f"{row['crop_edge_voxels']} calcium voxel(s) on the edge of the segmenter's "
                "arterial crop: calcium may continue outside it, unmeasured"))
    if row.get("slice_repairs"):
        values["qc_flags"] = [*values["qc_flags"], QCFlag.SLICES_REPAIRED.value]
        row["error_detail"] = "; ".join(
            t for t in (row.get("error_detail"), f"reading: {row['slice_repairs']}") if t)
    if row.get("sparse_slices"):
        values["qc_flags"] = [*values["qc_flags"], QCFlag.SPARSE_SLICES.value]
        row["error_detail"] = "; ".join(
            t for t in (row.get("error_detail"), row["sparse_slices"]) if t)
    row.update(values)
    row["volumes_computed"] = calcium is not None
    plane = (list(row["midline_point"]), list(row["midline_normal"]))
    name = safe_name(row["series_key"])
    timeout = config.prepare.timeout_s
    uid = row["series_uid"] or row["series_key"]  # no SeriesInstanceUID: its key names it
    asked = row["series_key"] in config.qc_series or uid in config.qc_series
    if asked or config.qc == "all" or (config.qc == "flagged" and values["qc_flags"]):
        title = (f"{row['series_key']}  flags: {', '.join(values['qc_flags']) or 'none'}  "
                 f"(model: {row.get('model_name')}, {row.get('model_trained_on')})")
        try:
            png = run_isolated(draw_picture, list(row["files"]), uid, landmarks,
                               plane, title, config, timeout_s=timeout,
                               series=uid)
            rel = f"qc/{name}.png"
            write_bytes(join(config.run_url, rel), png, config.prepare.storage)
            row["qc_picture"] = rel
        except Exception as e:  # noqa: BLE001  (a picture never fails a measured series:
            # a decoder crash, a time-out or a failed upload leaves a note)
            logger.warning("series %s: no QC picture (%s)", row["series_key"], type(e).__name__)
            row["error_detail"] = _note(row.get("error_detail"), f"no QC picture: {e}")
    if config.label_maps and calcium is not None:
        try:
            data = run_isolated(label_nifti, list(row["files"]), uid, landmarks,
                                plane, config, timeout_s=timeout, series=uid)
            rel = f"labels/{name}.nii.gz"
            write_bytes(join(config.run_url, rel), data, config.prepare.storage)
            row["label_map"] = rel
        except Exception as e:  # noqa: BLE001  (as the picture: a note, not an error row)
            logger.warning("series %s: no label map (%s)", row["series_key"], type(e).__name__)
            row["error_detail"] = _note(row.get("error_detail"), f"no label map: {e}")
    to_native(row)  # the SR reports the landmarks as the tables do (native slices)
    if config.dicom_seg and calcium is not None:
        try:
            got = run_isolated(dicom_export, list(row["files"]), uid, landmarks, plane,
                               {k: v for k, v in row.items() if k != "calcium"}, config,
                               timeout_s=timeout, series=uid)
            for file_name, data in got.items():
                write_bytes(join(config.run_url, f"dicom/{name}/{file_name}"), data,
                            config.prepare.storage)
        except Exception as e:  # noqa: BLE001  (as the picture: a note, not an error row)
            logger.warning("series %s: no DICOM SEG/SR (%s)", row["series_key"],
                           type(e).__name__)
            row["error_detail"] = _note(row.get("error_detail"), f"no DICOM SEG/SR: {e}")
    row["seconds_quantify"] = round(time.perf_counter() - t0, 3)
    return row


def to_native(row: dict) -> None:
    """Landmark slices from the read volume's slices to the acquired (native) ones, in
    place: ``<landmark>_slice`` becomes the native index, ``<landmark>_volume_slice`` keeps
    the volume's (for label maps and pictures). Identical for regular series; they differ
    when reading resampled the stack (variable slice spacing, filled gaps)."""
    native = row.get("native_slice")
    for name in LANDMARKS:
        k = row.get(f"{name}_slice")
        row[f"{name}_volume_slice"] = k
        if k is not None and native is not None and len(native):
            row[f"{name}_slice"] = int(native[min(int(k), len(native) - 1)])


def _note(old: str | None, new: str) -> str:
    return new if not old else f"{old}; {new}"


