"""Print the tissue-proportion table of SYNTHETIC heads against a real head CT.

The measure (`cohort.synth.tissue`): voxels of the head's largest connected component above
-300 HU, from the skull base (the lowest carotid-canal landmark) to the vertex, each slice
counted once; shares of five CT-number bands, per slice thickness and pooled.

Run:  .venv/bin/python docs/tissue_proportions.py [--seed 11] [--heads 3] [--matrix 512]
      .venv/bin/python docs/tissue_proportions.py --cohort ./synthetic/heads-20
(the second measures the primary series of a cohort written by `cohort synth heads`, read
back from its DICOM files, one row per slice thickness found.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cohort.synth.series import synthesize_series
from cohort.synth.tissue import BANDS, band_counts, shares, table_lines


def measure_cohort(root: str) -> list[tuple[str, list[float]]]:
    """Rows of the table for the primary series of a written cohort, by slice thickness."""
    import os

    import pyarrow.parquet as pq
    import SimpleITK as sitk

    truth = pq.read_table(os.path.join(root, "ground_truth.parquet")).to_pandas()
    primary = truth[truth["series_role"] == "primary"]
    by_thickness: dict[float, tuple[np.ndarray, int]] = {}
    for row in primary.itertuples():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(os.path.join(root, row.dicom_dir)))
        hu = sitk.GetArrayFromImage(reader.Execute()).astype(np.float32)  # k = 0 lowest
        first = min(row.left_carotid_canal_slice, row.right_carotid_canal_slice)
        c, m = band_counts(hu, int(first))
        counts, n = by_thickness.get(row.slice_thickness_mm, (np.zeros(len(BANDS), np.int64), 0))
        by_thickness[row.slice_thickness_mm] = (counts + c, n + m)
    rows = []
    pooled, pooled_n = np.zeros(len(BANDS), np.int64), 0
    for t in sorted(by_thickness):
        counts, n = by_thickness[t]
        rows.append((f"{t:g} mm primary series", shares(counts, n)))
        pooled += counts
        pooled_n += n
    rows.append((f"all {len(primary)} primary series", shares(pooled, pooled_n)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--matrix", type=int, default=512)
    ap.add_argument("--thicknesses", default="1,2.5,5", help="mm, comma-separated (1,2.5,5)")
    ap.add_argument("--clean", action="store_true", help="also measure the noise-free images")
    ap.add_argument("--cohort", metavar="PATH",
                    help="measure a cohort written by `cohort synth heads` instead")
    args = ap.parse_args()
    if args.cohort:
        print(f"SYNTHETIC cohort {args.cohort} (phantoms, not patient data), primary series "
              "read back from DICOM; share of head voxels (%), skull base (lowest carotid "
              "canal) to vertex")
        print("\n".join(table_lines(measure_cohort(args.cohort))))
        return
    thicknesses = [float(t) for t in args.thicknesses.split(",")]
    print(f"SYNTHETIC heads (phantoms, not patient data): seed {args.seed}, {args.heads} heads, "
          f"{args.matrix} x {args.matrix}, soft kernel; share of head voxels (%), skull base "
          "(lowest carotid canal) to vertex")
    rows = []
    pooled, pooled_n = np.zeros(len(BANDS), np.int64), 0
    t0 = time.perf_counter()
    for t in thicknesses:
        counts, n = np.zeros(len(BANDS), np.int64), 0
        clean_counts, clean_n = np.zeros(len(BANDS), np.int64), 0
        for i in range(args.heads):
            s = synthesize_series(args.seed, i, matrix=args.matrix, thickness_mm=t)
            first = min(s.truth.landmark_slices[f"{side}_carotid_canal"]
                        for side in ("left", "right"))
            c, m = band_counts(s.image, first)
            counts += c
            n += m
            rows.append((f"  head {i}, {t:g} mm", shares(c, m)))
            if args.clean:
                c, m = band_counts(s.clean, first)
                clean_counts += c
                clean_n += m
        rows.append((f"{t:g} mm slices, {args.heads} heads", shares(counts, n)))
        if args.clean:
            rows.append((f"{t:g} mm, noise-free", shares(clean_counts, clean_n)))
        pooled += counts
        pooled_n += n
    rows.append(("all thicknesses", shares(pooled, pooled_n)))
    print("\n".join(table_lines(rows)))
    print(f"({time.perf_counter() - t0:.0f} s; 'worst off' = points outside the real range)")


if __name__ == "__main__":
    main()
