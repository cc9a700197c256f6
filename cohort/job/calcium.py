"""`CalciumSegmenterStage`: the calcium segmenter in a Ray Data actor, after the DST.

The CPU stage packs each series' in-plane arterial slab over all slices (``seg_slab``,
`cohort.preprocess.arterial_crop.slab_box`); here the DST's landmarks choose its slices
(`depth_range`), the segmenter gives calibrated voxel probabilities window by window, and
the row leaves with what the finish stage needs and nothing heavier:

* ``calcium``: the packed `CalciumSummary` of the voxels at or above the checkpoint's
  threshold, on the whole volume's slices (so quantification is the one external masks
  get); with a checkpoint that carries a component filter (`cohort.model.component_filter`),
  of every voxel of the candidate components (probability >= its ``candidate_p``) that the
  filter keeps, and the interval's lower bound counts only kept components;
* ``calcium_bounds``: voxels per side and slice of the interval masks (probability at or
  above the checkpoint's two interval thresholds, fitted on its validation split), from
  which the finish stage makes each segment's volume interval;
* ``crop_edge_voxels``: predicted calcium on an inner face of the crop (calcium may go on
  outside it, unmeasured: the row is flagged), ``mask_source``, ``seconds_segment``, and
  with ``--write-masks`` the mask as NIfTI on the series grid (``calcium_mask``).

A series the segmenter cannot do keeps its landmarks: its row carries a ``mask_problem``
like an unusable external mask, never an exception out of the stage.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from cohort.anatomy import LANDMARKS
from cohort.errors import ErrorCode
from cohort.geometry import Grid
from cohort.job.packing import pack, unpack
from cohort.model.runtime import pick_device, set_threads
from cohort.preprocess.arterial_crop import Box, depth_range, edge_voxels
from cohort.quantify import CalciumSummary, plane_side, summarise_calcium
from cohort.storage import StorageOptions, join, write_bytes

logger = logging.getLogger(__name__)


def pack_slab(volume, box: Box) -> bytes:
    """What the CPU stage hands on: the slab's CT numbers (float16, H x W x all slices), its
    box, the volume's grid and slice heights."""
    g = volume.grid
    z = g.slice_positions() @ np.asarray(g.normal, dtype=float)
    return pack(hu=box.take(volume.array).astype(np.float16), box=np.array(box.to_list()),
                origin=np.asarray(g.origin), col=np.asarray(g.col_step),
                row=np.asarray(g.row_step), step=np.asarray(g.slice_step),
                shape=np.asarray(g.shape), z=z)


def _grid(d: dict) -> Grid:
    return Grid(tuple(float(v) for v in d["origin"]), tuple(float(v) for v in d["col"]),
                tuple(float(v) for v in d["row"]), tuple(float(v) for v in d["step"]),
                tuple(int(v) for v in d["shape"]))


def on_volume(summary: CalciumSummary, k0: int, n_slices: int) -> CalciumSummary:
    """A crop's summary moved onto the whole volume's slices (the crop starts at ``k0``)."""
    nk = summary.n_slices
    voxels = np.zeros((2, n_slices), dtype=np.int64)
    voxels[:, k0:k0 + nk] = summary.slice_voxels
    peak = np.full((2, n_slices), np.nan, dtype=np.float32)
    peak[:, k0:k0 + nk] = summary.slice_peak_hu
    return CalciumSummary(
        n_slices=n_slices, voxel_mm3=summary.voxel_mm3,
        slice_spacing_mm=summary.slice_spacing_mm, slice_voxels=voxels, slice_peak_hu=peak,
        piece_side=summary.piece_side, piece_first_slice=summary.piece_first_slice + k0,
        piece_offsets=summary.piece_offsets, piece_counts=summary.piece_counts,
        piece_peak_hu=summary.piece_peak_hu)


def _kji(a: np.ndarray) -> np.ndarray:
    """(H, W, D) crop -> [k, j, i]."""
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def mask_nifti(mask: np.ndarray, box: Box, grid: Grid) -> bytes:
    """NIfTI (.nii.gz) bytes of a crop's mask (H, W, D) on the whole series grid."""
    import SimpleITK as sitk

    from cohort.read.volume import Volume

    full = np.zeros(grid.shape, dtype=np.float32)
    full[box.k[0]:box.k[1], box.j[0]:box.j[1], box.i[0]:box.i[1]] = _kji(mask)
    image = sitk.Cast(Volume(full, grid).to_sitk(), sitk.sitkUInt8)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mask.nii.gz")
        sitk.WriteImage(image, path, useCompression=True)
        with open(path, "rb") as f:
            return f.read()


#: sliding windows per forward pass by device: on one H200, 32 windows took a crop in
#: 0.11 s against 0.35 s at 4 (505 MB peak; benchmarks/gpu_segmenter_cost.py); on the
#: CPU the stage keeps 4, with which its CPU figures were measured
WINDOWS_PER_BATCH = {"cuda": 32, "cpu": 4}


class CalciumSegmenterStage:
    """Callable class for ``Dataset.map_batches(..., batch_format="pandas")`` (see module)."""

    def __init__(self, model_url: str | None, *, sha256: str | None = None,
                 storage: StorageOptions | None = None, threads: int = 1,
                 prefer_gpu: bool = True, run_url: str | None = None,
                 write_masks: bool = False, windows_per_batch: int | None = None):
        from cohort.job.checkpoint import verified_copy
        from cohort.job.segmenter_checkpoint import describe_segmenter, shipped_segmenter
        from cohort.model.zoo import load_checkpoint

        set_threads(threads)
        self.device = pick_device(prefer_gpu)
        path = verified_copy(model_url or shipped_segmenter(), storage, sha256, "segmenter")
        self.info = describe_segmenter(path)
        net, _ = load_checkpoint(path)
        self.net = net.to(self.device).eval()
        self.filter = None
        if self.info.component_filter is not None:
            from cohort.model.component_filter import TreeEnsemble

            self.filter = TreeEnsemble.from_dict(self.info.component_filter)
        self.storage, self.run_url, self.write_masks = storage, run_url, write_masks
        self.windows_per_batch = windows_per_batch or WINDOWS_PER_BATCH.get(
            self.device.type, WINDOWS_PER_BATCH["cpu"])
        logger.info("calcium segmenter %s on %s", self.info.name, self.device)

    def probabilities(self, crop_hu: np.ndarray) -> np.ndarray:
        from cohort.model.segmenter import crop_logits, probabilities

        with torch.inference_mode():
            logits = crop_logits(self.net, crop_hu, batch=self.windows_per_batch,
                                 device=self.device)
        return probabilities(logits, self.info.temperature)

    def filtered(self, prob: np.ndarray, hu: np.ndarray, grid: Grid, row: dict
                 ) -> tuple[np.ndarray, np.ndarray]:
        """The mask and the interval's lower-bound mask after the component filter; the
        crop's axes are (rows, columns, slices) of ``grid``."""
        from cohort.model.component_filter import filter_mask

        slice_mm = float(abs(np.asarray(grid.slice_step) @ np.asarray(grid.normal)))
        thickness = row.get("slice_thickness_mm")
        thickness = float(thickness) if thickness is not None and thickness == thickness \
            else slice_mm
        mask, low, _ = filter_mask(prob, hu, (float(grid.spacing[1]), float(grid.spacing[0]),
                                              slice_mm), thickness, self.filter,
                                   voxel_mm3=float(abs(np.linalg.det(grid.matrix))))
        return mask, low

    def segment(self, row: dict) -> dict:
        """The calcium of one row (see module)."""
        t0 = time.perf_counter()
        d = unpack(row["seg_slab"])
        grid = _grid(d)
        slab = Box.from_list(d["box"])
        landmarks = {n: int(row[f"{n}_slice"]) for n in LANDMARKS}
        k0, k1 = depth_range(landmarks, d["z"], self.info.crop)
        box = Box((k0, k1), slab.j, slab.i)
        hu = np.asarray(d["hu"][:, :, k0:k1], dtype=np.float32)
        prob = self.probabilities(hu)
        side = plane_side(row["midline_point"], row["midline_normal"])
        sub = box.sub_grid(grid)
        lo_t, hi_t = self.info.bounds
        mask, low = prob >= self.info.threshold, prob >= lo_t
        if self.filter is not None:
            mask, low = self.filtered(prob, hu, sub, row)
        summary = on_volume(summarise_calcium(_kji(mask), _kji(hu), sub, side), k0,
                            grid.shape[0])
        bounds = {}
        for name, m in (("low", low), ("high", prob >= hi_t)):
            s = summarise_calcium(_kji(m), _kji(hu), sub, side)
            bounds[name] = on_volume(s, k0, grid.shape[0]).slice_voxels
        out = {"calcium": pack(**summary.__dict__),
               "calcium_bounds": pack(level=np.array([self.info.level]), **bounds),
               "crop_edge_voxels": edge_voxels(mask, box, grid.shape),
               "segmenter_crop": box.to_list(), "mask_source": self.info.mask_source,
               "segmenter_spacing_note": self.info.spacing_note(
                   max(float(grid.spacing[0]), float(grid.spacing[1])))}
        if self.write_masks and self.run_url:
            from cohort.write.runs import safe_name

            rel = f"masks/{safe_name(row['series_key'])}.nii.gz"
            write_bytes(join(self.run_url, rel), mask_nifti(mask, box, grid), self.storage)
            out["calcium_mask"] = rel
        out["seconds_segment"] = round(time.perf_counter() - t0, 3)
        return out

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        batch = batch.copy()
        new = {k: [None] * len(batch) for k in ("calcium_bounds", "crop_edge_voxels",
                                                "segmenter_crop", "mask_source",
                                                "calcium_mask", "seconds_segment",
                                                "segmenter_spacing_note")}
        calcium = list(batch["calcium"]) if "calcium" in batch else [None] * len(batch)
        problems = list(batch["mask_problem"]) if "mask_problem" in batch else \
            [None] * len(batch)
        for i, row in enumerate(batch.to_dict("records")):
            if row.get("status") != "ok" or row.get("seg_slab") is None:
                continue
            try:
                got = self.segment(row)
            except Exception as e:  # noqa: BLE001  (landmarks stay; the row says why)
                logger.exception("segmenter failed on %s", row.get("series_key"))
                problems[i] = {"code": ErrorCode.PROCESSING_FAILED.value,
                               "detail": f"calcium segmenter: {type(e).__name__}: {e}"}
                continue
            calcium[i] = got.pop("calcium")
            for k, v in got.items():
                new[k][i] = v
        batch["calcium"] = calcium
        batch["mask_problem"] = problems
        for k, v in new.items():
            batch[k] = v
        batch["seg_slab"] = None
        return batch
