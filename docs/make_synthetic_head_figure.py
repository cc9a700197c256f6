"""Make docs/synthetic_head.png: reformats of one SYNTHETIC head CT with its ground truth.

Generates a one-patient cohort (fixed seed, 512 x 512, 0.625 mm slices, calcium on both
sides) into a temporary folder, reads the primary series back from its DICOM files with
SimpleITK as a user would, reads its segment label map (NIfTI) and ground_truth.parquet,
and draws a coronal and two sagittal slab MIPs with the six landmark planes.

Run:  .venv/bin/python docs/make_synthetic_head_figure.py [--out docs/synthetic_head.png]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile

import numpy as np
import pyarrow.parquet as pq
import SimpleITK as sitk

from cohort.anatomy import LANDMARKS
from cohort.geometry import Grid
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort
from cohort.write.reformat import reformat_figure

logger = logging.getLogger("make_synthetic_head_figure")
HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 9  # a subject with calcium in several segments on both sides


def read_series(folder: str) -> tuple[np.ndarray, Grid]:
    """A DICOM series as HU [k, j, i] (k = 0 the lowest slice, as GDCM sorts) and its grid."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    image = reader.Execute()
    return sitk.GetArrayFromImage(image).astype(np.float32), _grid(image)


def _grid(image: sitk.Image) -> Grid:
    d = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    size = image.GetSize()  # (i, j, k)
    return Grid(tuple(image.GetOrigin()), tuple(d[:, 0]), tuple(d[:, 1]), tuple(d[:, 2]),
                (size[2], size[1], size[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "synthetic_head.png"))
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    cfg = SynthConfig(patients=1, seed=args.seed, matrix=512, thicknesses_mm=(0.625,),
                      tilt_p=0.0, localizer_p=0.0, second_series_p=0.0, followup_p=0.0,
                      neck_cut_p=0.0, calcium_free_p=0.0, workers=1)
    with tempfile.TemporaryDirectory(prefix="synthetic-head-") as tmp:
        generate_cohort(cfg, tmp, overwrite=True)
        truth = pq.read_table(os.path.join(tmp, "ground_truth.parquet")).to_pylist()
        row = next(r for r in truth if r["series_role"] == "primary")
        hu, grid = read_series(os.path.join(tmp, row["dicom_dir"]))
        labels_img = sitk.ReadImage(os.path.join(tmp, row["labels_path"]))
        labels = sitk.GetArrayFromImage(labels_img)

    # The reader sorts by position: slice 0 must be the ground truth's slice 0.
    if abs(grid.origin[2] - row["first_slice_z_mm"]) > 1e-3 or hu.shape[0] != row["n_slices"]:
        raise RuntimeError(f"DICOM slice 0 at z = {grid.origin[2]:.3f} mm, {hu.shape[0]} "
                           f"slices; ground truth says z = {row['first_slice_z_mm']:.3f} mm, "
                           f"{row['n_slices']} slices")
    if labels.shape != hu.shape or not np.allclose(labels_img.GetOrigin(), grid.origin,
                                                   atol=1e-3):
        raise RuntimeError("label map and DICOM series are not on the same grid")
    landmarks = {name: row[f"{name}_slice"] for name in LANDMARKS}
    logger.info("landmark slices %s; calcium %.0f mm^3", landmarks, row["total_calcium_mm3"])

    sx, sy, sz = grid.spacing
    title = (f"SYNTHETIC head CT (phantom, not patient data)  -  {row['patient_id']}, "
             f"{row['manufacturer']} {row['kernel']}, {hu.shape[2]} x {hu.shape[1]} x "
             f"{hu.shape[0]}, {sx:.2f} x {sy:.2f} x {sz:g} mm, calcium "
             f"{row['total_calcium_mm3']:.0f} mm3, read back from DICOM")
    figure = reformat_figure(hu, grid, landmarks, labels, title=title)
    figure.save(args.out, optimize=True)
    logger.info("wrote %s (%d x %d px, %.0f KB)", args.out, figure.width, figure.height,
                os.path.getsize(args.out) / 1024)


if __name__ == "__main__":
    main()
