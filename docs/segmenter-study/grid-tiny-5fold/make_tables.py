"""The segmenter's 5-fold ablation grid (tiny networks) from the folds run so far.

    python docs/segmenter-study/grid-tiny-5fold/make_tables.py

Each fold was run on its own (`cohort train segmenter ... --only-folds F`, the command in
README.md here) and its test predictions and calibration kept under ``fold-F/``. This
script pools them with the study's own table writer (`write_seg_tables`: summary over the
test series of every fold run, by slice-thickness band, calibration) and adds the spread
between folds (each fold's figures, then their mean and standard deviation per variant).
SYNTHETIC phantoms only.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cohort.train import seg_metrics as M
from cohort.train.seg_study import write_seg_tables
from cohort.train.tables import to_markdown

HERE = Path(__file__).resolve().parent
FIGURES = ("dice_mean", "dice_pooled", "pearson_r_log1p", "kappa_linear", "interval_coverage")


def main() -> None:
    folds = sorted(HERE.glob("fold-*/seg_predictions.parquet"))
    rows = pd.concat([pd.read_parquet(p) for p in folds], ignore_index=True)
    calib = pd.concat([pd.read_parquet(p.with_name("seg_calibration.parquet")) for p in folds],
                      ignore_index=True)
    rows = rows.drop(columns=["thickness_band", "synthetic"], errors="ignore")
    write_seg_tables(str(HERE / "tables"), rows, calib, synthetic=True, size="tiny")
    per_fold = M.summary_table(rows, ("variant", "fold"))
    order = list(dict.fromkeys(rows["variant"]))
    spread = []
    for v in order:
        g = per_fold[per_fold["variant"] == v]
        spread.append({"variant": v, "folds": len(g),
                       **{f"{k}_mean": g[k].mean() for k in FIGURES},
                       **{f"{k}_sd": g[k].std(ddof=1) if len(g) > 1 else float("nan")
                          for k in FIGURES}})
    md = to_markdown(per_fold[["variant", "fold", "series", "with_calcium", *FIGURES]],
                     "Each fold's test split (networks of size tiny)", True)
    md += "\n" + to_markdown(pd.DataFrame(spread), "Between folds: mean and standard "
                             "deviation of the per-fold figures", True)
    (HERE / "tables" / "seg_folds.md").write_text(md)
    print(f"{len(folds)} folds, {len(rows)} test rows -> {HERE / 'tables'}")


if __name__ == "__main__":
    main()
