"""A run's calcium against known calcium: per series the total volume (and, where the run
wrote its masks and the truth has masks, voxel Dice), then Pearson r of log1p volume,
Bland-Altman bias and limits, risk-group agreement (weighted kappa) and the coverage of the
volume intervals, overall and by slice-thickness band (`cohort.train.seg_metrics`).

The truth is a synthetic cohort's ``ground_truth.parquet`` (volumes; its masks under the
cohort folder), or any Parquet/CSV with ``series_uid`` and ``total_calcium_mm3`` (and
optionally ``mask_path``, relative to the table's folder).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cohort.quantify.config import QuantifyConfig
from cohort.read.nifti import read_nifti
from cohort.storage import StorageOptions, join
from cohort.train import seg_metrics as M


def calcium_rows(series: pd.DataFrame, truth: pd.DataFrame, *, output_url: str | None = None,
                 truth_root: str | None = None, options: StorageOptions | None = None
                 ) -> pd.DataFrame:
    """One row per ok series with volumes and a truth row: predicted and true volume, the
    interval, thickness, and Dice when both masks can be read (the run's, written with
    ``--write-masks`` under ``output_url``, and the truth's under ``truth_root``)."""
    from cohort.write.runs import run_url

    truth = truth.rename(columns={"series_instance_uid": "series_uid"})
    ok = series[(series["status"] == "ok") & series["volumes_computed"].fillna(False)]
    both = ok.merge(truth, on="series_uid", suffixes=("", "_true"))
    rows = []
    for r in both.to_dict("records"):
        row = {"series_uid": r["series_uid"],
               "slice_thickness_mm": r.get("slice_thickness_mm_true",
                                           r.get("slice_thickness_mm")),
               "pred_mm3": float(r["total_calcium_mm3"]),
               "true_mm3": float(r["total_calcium_mm3_true"]),
               "low_mm3": r.get("total_calcium_mm3_low"),
               "high_mm3": r.get("total_calcium_mm3_high"),
               "mask_source": r.get("mask_source"), "dice": np.nan,
               "overlap_voxels": np.nan, "pred_voxels": np.nan, "true_voxels": np.nan}
        if output_url and truth_root and r.get("calcium_mask") and r.get("mask_path"):
            folder = run_url(output_url, r["run_id"])
            pred = read_nifti(join(folder, r["calcium_mask"]), options).array > 0
            true = read_nifti(join(truth_root, r["mask_path"]), options).array > 0
            if pred.shape == true.shape:
                row.update(dice=M.dice(pred, true),
                           overlap_voxels=int(np.count_nonzero(pred & true)),
                           pred_voxels=int(pred.sum()), true_voxels=int(true.sum()))
        rows.append(row)
    return pd.DataFrame(rows)


def agreement(rows: pd.DataFrame, config: QuantifyConfig | None = None) -> pd.DataFrame:
    """`seg_metrics.summarise` overall and per thickness band (rows without masks count in
    the volume figures; Dice needs masks)."""
    rows = rows.copy()
    rows["true_voxels"] = rows["true_voxels"].fillna((rows["true_mm3"] > 0).astype(int))
    for c in ("overlap_voxels", "pred_voxels"):
        rows[c] = rows[c].fillna(0)
    rows["low_mm3"] = rows["low_mm3"].fillna(rows["pred_mm3"])
    rows["high_mm3"] = rows["high_mm3"].fillna(rows["pred_mm3"])
    rows["band"] = [M.thickness_band(t) for t in rows["slice_thickness_mm"]]
    out = [{"group": "all", **M.summarise(rows, config)}]
    for band, _ in M.THICKNESS_BANDS:
        g = rows[rows["band"] == band]
        if len(g):
            out.append({"group": band, **M.summarise(g, config)})
    table = pd.DataFrame(out)
    if rows["dice"].isna().all():  # no masks to compare: no Dice, rather than a false 0
        table[["dice_mean", "dice_pooled"]] = np.nan
    return table
