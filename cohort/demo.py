"""The main job on its embedded default: a local folder, a local Ray, a synthetic cohort.

What runs today, end to end, stage by stage:

1. `cohort synth heads`: a synthetic head-CT cohort as DICOM, with masks and ground truth;
2. `cohort index`: discovery, validation and selection -> manifest.parquet;
3. per selected series: read (gantry tilt corrected), hemisphere separation, calcium summary
   from the external mask, segment volumes, risk group, QC flags -> series.parquet.

Step 3 uses the generator's true landmark slices ("oracle" landmarks), because no trained
DST checkpoint ships yet; the inference job (`cohort run`) replaces them with the model's.
"""

from __future__ import annotations

import logging
import os
import time

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import SimpleITK as sitk

from cohort.anatomy import LANDMARKS
from cohort.config import SynthConfig
from cohort.discover.index import index_cohort, summarize
from cohort.errors import SeriesError
from cohort.preprocess.hemisphere import split_hemispheres
from cohort.quantify import quantify, summarise_calcium
from cohort.read.series import read_series
from cohort.storage import StorageOptions
from cohort.synth.heads import generate_cohort
from cohort.synth.summary import describe_cohort

logger = logging.getLogger(__name__)


def _quantify_selected(manifest: pd.DataFrame, truth: pd.DataFrame,
                       cohort_dir: str) -> pd.DataFrame:
    """Step 3: one row per selected series (errors become rows, never exceptions)."""
    truth = truth.set_index("series_instance_uid")
    rows = []
    for m in manifest.itertuples():
        row = {"series_uid": m.series_uid, "patient_id": m.patient_id, "status": "ok",
               "error_code": None, "tilt_deg": None, "tilt_corrected": None,
               "midline_plane": None, "midline_angle_deg": None, "synthetic": True}
        try:
            volume = read_series(list(m.files))
            split = split_hemispheres(volume)
            gt = truth.loc[m.series_uid]
            mask = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(cohort_dir, gt.mask_path)))
            summary = summarise_calcium(mask, volume.array, volume.grid,
                                        split.plane.signed_distance)
            landmarks = {n: int(gt[f"{n}_slice"]) for n in LANDMARKS}
            result = quantify(summary, landmarks)
            row.update(tilt_deg=volume.provenance["tilt_deg"],
                       tilt_corrected=volume.provenance["tilt_corrected"],
                       midline_plane=split.used, midline_angle_deg=split.angle_deg,
                       **{k: v for k, v in result.as_row().items()
                          if not isinstance(v, (list, tuple))},
                       qc_flags=",".join(result.qc_flags))
        except SeriesError as e:
            row.update(status="error", error_code=e.code.value)
        rows.append(row)
    return pd.DataFrame(rows)


def run_demo(*, out_dir: str, patients: int, seed: int, matrix: int, workers: int) -> str:
    """Run the demo; return the report to print."""
    out_dir = os.path.abspath(out_dir)
    cohort_dir = os.path.join(out_dir, "synthetic-cohort")
    index_dir = os.path.join(out_dir, "index")
    results_dir = os.path.join(out_dir, "results")
    cfg = SynthConfig(patients=patients, seed=seed, matrix=matrix, workers=workers,
                      localizer_p=0.3, second_series_p=0.3, tilt_p=0.15, followup_p=0.2)
    t0 = time.perf_counter()
    table = generate_cohort(cfg, cohort_dir, StorageOptions(), overwrite=True)
    report = ["[1/3] " + describe_cohort(table, cohort_dir, time.perf_counter() - t0), ""]
    t1 = time.perf_counter()
    index = index_cohort(os.path.join(cohort_dir, "dicom"), index_dir)
    report += ["[2/3] " + summarize(index), f"      ({time.perf_counter() - t1:.1f} s)", ""]
    manifest = index.manifest.to_pandas()
    selected = manifest[(manifest["kind"] == "series") & (manifest["status"] == "selected")]
    t2 = time.perf_counter()
    series = _quantify_selected(selected, table.to_pandas(), cohort_dir)
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, "series.parquet")
    pq.write_table(pa.Table.from_pandas(series, preserve_index=False), path)
    report.append(f"[3/3] {len(series)} selected series read, split into hemispheres and "
                  f"quantified in {time.perf_counter() - t2:.1f} s -> {path}")
    report.append("      landmarks: the generator's true slices (oracle), as no trained "
                  "checkpoint ships yet; data: SYNTHETIC")
    q = f"""
        SELECT risk_group, count(*) AS series,
               round(avg(total_calcium_mm3), 1) AS mean_total_mm3,
               round(avg(right_cavernous_mm3 + left_cavernous_mm3), 1) AS cavernous,
               round(avg(right_supraclinoid_mm3 + left_supraclinoid_mm3), 1) AS supraclinoid,
               round(avg(right_petrous_mm3 + left_petrous_mm3), 1) AS petrous,
               round(avg(right_cervical_mm3 + left_cervical_mm3), 1) AS cervical,
               sum(CASE WHEN tilt_corrected THEN 1 ELSE 0 END) AS tilt_corrected
        FROM read_parquet('{path}') WHERE status = 'ok'
        GROUP BY risk_group ORDER BY mean_total_mm3"""
    report.append("\nSegment volumes by risk group (mean mm^3, SYNTHETIC), read back with DuckDB:")
    report.append(str(duckdb.sql(q)))
    failed = series[series["status"] != "ok"]
    if len(failed):
        report.append(f"failed series: {failed['error_code'].value_counts().to_dict()}")
    report.append(f"Results: {out_dir} (cohort, index/manifest.parquet, results/series.parquet)")
    return "\n".join(report)
