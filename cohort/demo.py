"""The main job on its embedded default: a local folder, a synthetic cohort.

Today the job is the first stage of the pipeline: it generates a synthetic head-CT cohort
as DICOM with its ground truth, then reads the ground truth back with DuckDB as an
epidemiologist would. The ingestion, inference and quantification stages join here as
they land, so that `./run demo` always runs everything that exists end to end.
"""

from __future__ import annotations

import logging
import os
import time

import duckdb

from cohort.config import SynthConfig
from cohort.storage import StorageOptions
from cohort.synth.heads import generate_cohort
from cohort.synth.summary import describe_cohort

logger = logging.getLogger(__name__)


def run_demo(*, out_dir: str, patients: int, seed: int, matrix: int, workers: int) -> str:
    """Run the demo; return the report to print."""
    cohort_dir = os.path.abspath(os.path.join(out_dir, "synthetic-cohort"))
    cfg = SynthConfig(patients=patients, seed=seed, matrix=matrix, workers=workers,
                      localizer_p=0.3, second_series_p=0.3, tilt_p=0.15, followup_p=0.2)
    t0 = time.perf_counter()
    table = generate_cohort(cfg, cohort_dir, StorageOptions(), overwrite=True)
    report = [describe_cohort(table, cohort_dir, time.perf_counter() - t0), ""]
    gt = os.path.join(cohort_dir, "ground_truth.parquet")
    q = f"""
        SELECT patient_id, series_role AS role, n_slices AS slices,
               slice_thickness_mm AS mm, round(gantry_tilt_deg, 1) AS tilt,
               right_carotid_canal_slice AS r_cc, right_petrolingual_slice AS r_pl,
               right_anterior_clinoid_slice AS r_ac, left_carotid_canal_slice AS l_cc,
               left_petrolingual_slice AS l_pl, left_anterior_clinoid_slice AS l_ac,
               round(total_calcium_mm3, 1) AS calcium_mm3
        FROM read_parquet('{gt}') WHERE series_role != 'localizer'
        ORDER BY patient_id, series_number LIMIT 12"""
    report.append("Ground truth read back with DuckDB (landmark slice indices count from the "
                  "lowest slice; SYNTHETIC data):")
    report.append(str(duckdb.sql(q)))
    report.append(f"Results: {cohort_dir}")
    return "\n".join(report)
