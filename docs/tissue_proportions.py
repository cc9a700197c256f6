"""Print the tissue-proportion table of SYNTHETIC heads against a real head CT.

The measure (`cohort.synth.tissue`): voxels of the head's largest connected component above
-300 HU, from the skull base (the lowest carotid-canal landmark) to the vertex, each slice
counted once; shares of five CT-number bands, per slice thickness and pooled.

Run:  .venv/bin/python docs/tissue_proportions.py [--seed 11] [--heads 3] [--matrix 512]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cohort.synth.series import synthesize_series
from cohort.synth.tissue import BANDS, band_counts, shares, table_lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--matrix", type=int, default=512)
    ap.add_argument("--thicknesses", default="1,2.5,5", help="mm, comma-separated (1,2.5,5)")
    ap.add_argument("--clean", action="store_true", help="also measure the noise-free images")
    args = ap.parse_args()
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
