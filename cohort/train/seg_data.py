"""Training data of the calcium segmenter: every labelled series cut once to its arterial
crop (`cohort.preprocess.arterial_crop`) with its calcium mask, so epochs never decode
DICOM again.

Cache layout under its URL: ``crops/<SeriesInstanceUID>.npy`` (float16, 2 x H x W x D:
CT numbers, then the mask as 0/1) and ``index.parquet`` (one row per series: patient key,
crop depth, slice thickness and spacing, voxel volume, calcium voxels in the crop and in
the whole mask, the crop box). The crop is cut at the true landmarks; the job cuts it at
the DST's, whose errors (about a slice) are small against the crop's margins.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pandas as pd

from cohort.anatomy import LANDMARKS
from cohort.job.prepare import grids_match
from cohort.preprocess.arterial_crop import CropConfig, arterial_box
from cohort.preprocess.hemisphere import HemisphereConfig, split_hemispheres
from cohort.read.nifti import read_nifti
from cohort.storage import StorageOptions, filesystem, join, read_bytes, write_bytes
from cohort.train.data import SeriesSource, read_source

logger = logging.getLogger(__name__)


def cut_crop(source: SeriesSource, landmarks: dict[str, int], mask_url: str | None,
             config: CropConfig, options: StorageOptions | None = None):
    """(array 2 x H x W x D float16, index row) of one series, or None (and a warning) when
    its mask is not on the series' grid."""
    volume = read_source(source, options)
    split = split_hemispheres(volume, HemisphereConfig())
    box = arterial_box(volume.grid, split.plane.point, split.plane.normal, landmarks, config)
    if mask_url:
        mask = read_nifti(mask_url, options, series=source.series_uid)
        if not grids_match(mask.grid, volume.grid):
            logger.warning("series %s: its mask is not on the volume's grid; left out of the "
                           "segmenter's data", source.series_uid)
            return None
        full = mask.array > 0
    else:  # an unlabelled series (pre-training only)
        full = np.zeros(volume.grid.shape, dtype=bool)
    crop_mask = box.take(full)
    array = np.stack([box.take(volume.array), crop_mask]).astype(np.float16)
    grid = volume.grid
    row = {"series_uid": source.series_uid, "patient_key": str(source.patient_key),
           "depth": int(box.shape[0]), "height": int(box.shape[1]), "width": int(box.shape[2]),
           "pixel_spacing_mm": float(grid.spacing[0]),
           "slice_spacing_mm": float(abs(np.asarray(grid.slice_step) @ grid.normal)),
           "voxel_mm3": float(abs(np.linalg.det(grid.matrix))),
           "crop_voxels": int(crop_mask.sum()), "mask_voxels": int(full.sum()),
           "labelled": bool(mask_url), "box": box.to_list()}
    return array, row


def build_seg_cache(sources: list[SeriesSource], labels: pd.DataFrame,
                    masks: dict[str, str] | None, cache_url: str,
                    options: StorageOptions | None = None,
                    config: CropConfig | None = None, thickness: dict[str, float] | None = None
                    ) -> pd.DataFrame:
    """Cut every series of ``labels`` (landmarks as volume slices) to its crop, with its
    mask from ``masks`` (series UID -> NIfTI URL; None: unlabelled, for pre-training);
    write the crops and the index; return the index. A series whose mask does not fit is
    left out with a warning (and counted in the log).

    An existing index is reused when it covers the same series (a resumed study)."""
    config = config or CropConfig()
    index_url = join(cache_url, "index.parquet")
    fs, path = filesystem(index_url, options)
    if fs.exists(path):
        old = pd.read_parquet(io.BytesIO(read_bytes(index_url, options)))
        if set(old["series_uid"]) >= set(labels["series_uid"]) - set(old.attrs.get("left", [])):
            logger.info("reusing the segmenter cache %s (%d crops)", cache_url, len(old))
            return old[old["series_uid"].isin(labels["series_uid"])].reset_index(drop=True)
    by_uid = {s.series_uid: s for s in sources}
    rows, left = [], []
    for rec in labels.to_dict("records"):
        uid = rec["series_uid"]
        landmarks = {n: int(rec[f"{n}_slice"]) for n in LANDMARKS}
        got = cut_crop(by_uid[uid], landmarks, (masks or {}).get(uid) if masks is not None
                       else None, config, options)
        if got is None:
            left.append(uid)
            continue
        array, row = got
        buf = io.BytesIO()
        np.save(buf, array)
        row["path"] = f"crops/{uid}.npy"
        write_bytes(join(cache_url, row["path"]), buf.getvalue(), options)
        if thickness:
            row["slice_thickness_mm"] = float(thickness.get(uid, row["slice_spacing_mm"]))
        rows.append(row)
    if left:
        logger.warning("%d series left out of the segmenter's data (mask off the grid)",
                       len(left))
    index = pd.DataFrame(rows)
    if "slice_thickness_mm" not in index:
        index["slice_thickness_mm"] = index["slice_spacing_mm"]
    buf = io.BytesIO()
    index.to_parquet(buf, index=False)
    write_bytes(index_url, buf.getvalue(), options)
    logger.info("cut %d crops under %s (%d calcium voxels inside them, %d in the whole "
                "masks)", len(index), cache_url, int(index["crop_voxels"].sum()),
                int(index["mask_voxels"].sum()))
    return index


def load_crop(cache_url: str, rel: str, options: StorageOptions | None = None) -> np.ndarray:
    """One cached crop, float16 (2, H, W, D): CT numbers and mask."""
    fs, path = filesystem(join(cache_url, rel), options)
    with fs.open(path, "rb") as f:
        return np.load(io.BytesIO(f.read()))


def synthetic_masks(cohort_url: str, options: StorageOptions | None = None
                    ) -> tuple[dict[str, str], dict[str, float]]:
    """Mask URL and slice thickness of every series of a synthetic cohort."""
    gt = pd.read_parquet(io.BytesIO(read_bytes(join(cohort_url, "ground_truth.parquet"),
                                               options)))
    gt = gt[gt["series_role"] != "localizer"]
    masks = {r.series_instance_uid: join(cohort_url, r.mask_path) for r in gt.itertuples()}
    thick = {r.series_instance_uid: float(r.slice_thickness_mm) for r in gt.itertuples()}
    return masks, thick
