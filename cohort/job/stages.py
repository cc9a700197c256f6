"""The per-series map functions `cohort run` hands to Ray Data around the DST actors
(`cohort.job.landmarks`): the CPU stage that prepares a series (`cohort.job.prepare`, in an
isolated process) and the stage that finishes it (`cohort.job.finish`). A failure of one
series becomes its row's status and code, never an exception out of a stage.
"""

from __future__ import annotations

import logging

from cohort.errors import ErrorCode, SeriesError
from cohort.job.finish import FinishConfig, finish_row
from cohort.job.prepare import PrepareConfig, prepare_isolated
from cohort.job.rows import plain, scrub
from cohort.testing.faults import drill

logger = logging.getLogger(__name__)


#: every key a row carries between stages, so that all blocks share one schema
STAGE_DEFAULTS = {
    "error_code": None, "error_detail": None, "n_slices": None, "rows": None, "columns": None,
    "pixel_spacing_mm": None, "slice_step_mm": None, "tilt_deg": None,
    "tilt_corrected": None, "midline_used": None, "midline_offset_mm": None,
    "midline_angle_deg": None, "midline_point": None, "midline_normal": None,
    "model_decimation": None, "model_input": None, "model_depth": None, "calcium": None,
    "slice_repairs": None, "seconds_prepare": None, "native_slice": None,
    "confidence_threshold": None,
    "variable_spacing": None, "sparse_slices": None, "mask_problem": None,
    "mask_source": None, "seg_slab": None, "calcium_bounds": None, "crop_edge_voxels": None,
    "segmenter_crop": None, "calcium_mask": None, "seconds_segment": None,
    "segmenter_spacing_note": None,
}


def prepare_stage(row: dict, config: PrepareConfig) -> dict:
    """Ray Data map: one series row -> prepared row (status error instead of raising)."""
    row = {**STAGE_DEFAULTS, **row}
    drill("prepare", series=row["series_uid"])  # a test may kill this worker here
    try:
        # a series without a SeriesInstanceUID goes by its key (masks: <key>.nii.gz)
        row.update(prepare_isolated(list(row["files"]), row["series_uid"] or row["series_key"],
                                    config))
    except SeriesError as e:
        row.update(status="error", error_code=e.code.value, error_detail=str(e))
    except Exception as e:  # noqa: BLE001  (one series must never fail the job)
        logger.exception("series %s", row["series_uid"])
        row.update(status="error", error_code=ErrorCode.PROCESSING_FAILED.value,
                   error_detail=f"{type(e).__name__}: {e}")
    return row


def finish_stage(row: dict, config: FinishConfig) -> dict:
    """Ray Data map: quantification, pictures; only table values leave this stage."""
    row = {k: plain(v) for k, v in row.items() if k not in ("model_input", "seg_slab")}
    try:
        row = finish_row(row, config)
    except Exception as e:  # noqa: BLE001
        logger.exception("series %s", row.get("series_uid"))
        row.update(status="error", error_code=ErrorCode.PROCESSING_FAILED.value,
                   error_detail=f"quantification: {type(e).__name__}: {e}")
    row["error_detail"] = scrub(row.get("error_detail"), row.get("scrub") or [])
    for heavy in ("calcium", "files", "midline_point", "midline_normal", "scrub",
                  "slice_repairs", "native_slice", "sparse_slices", "mask_problem",
                  "seg_slab", "calcium_bounds", "segmenter_crop", "segmenter_spacing_note"):
        row.pop(heavy, None)
    return row
