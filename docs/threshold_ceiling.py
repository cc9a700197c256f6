"""How far a per-voxel CT-number rule can get: the 130 HU rule applied only within two
voxels of the true calcium (an oracle that knows where the plaques are), against the true
masks, over a segmenter crop cache (`cohort train segmenter` writes one under OUT/cache).

    python docs/threshold_ceiling.py STUDY/cache

The truth marks a voxel as calcium when the plaque would make it read >= 130 HU on the
noise-free image; the scans add noise and the kernel's blur, so the oracle's Dice says how
much of the segmenter's task is seeing through them. SYNTHETIC phantoms.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from scipy import ndimage

from cohort.train.seg_data import load_crop
from cohort.train.seg_metrics import thickness_band


def main(cache: str) -> None:
    index = pd.read_parquet(f"{cache}/index.parquet")
    rows = []
    for r in index.to_dict("records"):
        crop = load_crop(cache, r["path"]).astype(np.float32)
        true = crop[1] > 0.5
        if not true.any():
            continue
        near = ndimage.binary_dilation(true, iterations=2)
        pred = (crop[0] >= 130.0) & near
        rows.append({"band": thickness_band(r["slice_thickness_mm"]),
                     "overlap": int((pred & true).sum()), "pred": int(pred.sum()),
                     "true": int(true.sum()),
                     "dice": 2 * (pred & true).sum() / (pred.sum() + true.sum())})
    df = pd.DataFrame(rows)
    print(f"SYNTHETIC: oracle 130 HU rule within 2 voxels of the truth, {len(df)} series "
          "with calcium")
    for name, g in [("all", df), *df.groupby("band")]:
        pooled = 2 * g["overlap"].sum() / (g["pred"].sum() + g["true"].sum())
        print(f"  {name:>10}: pooled Dice {pooled:.3f}, mean Dice {g['dice'].mean():.3f} "
              f"({len(g)} series)")


if __name__ == "__main__":
    main(sys.argv[1])
