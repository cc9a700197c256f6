"""The CPU stage of the inference job, for one series: fetch, decode, validate, correct
tilt, split the hemispheres, summarise the calcium mask by side, and prepare the model input.

`prepare_series` returns only what later stages need, a few megabytes at most: the model
input (float16, packed), the calcium summary of an external mask (packed) or, for the
calcium segmenter, the in-plane arterial slab of CT numbers (float16, packed), and plain
geometry values. It runs
inside an `IsolatedReader` process (see `prepare_row`), so a decoder that crashes or a series
that hangs costs that series, never the Ray worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from cohort.errors import CohortError, ErrorCode, SeriesError
from cohort.geometry import Grid
from cohort.job.packing import pack
from cohort.preprocess.arterial_crop import CropConfig, slab_box
from cohort.preprocess.hemisphere import HemisphereConfig, split_hemispheres
from cohort.preprocess.model_input import ModelInputConfig, prepare
from cohort.quantify import summarise_calcium
from cohort.read.isolate import IsolatedReader
from cohort.read.nifti import read_nifti
from cohort.read.series import ReadConfig, read_series, volume_to_native
from cohort.read.volume import Volume
from cohort.storage import StorageOptions, filesystem, join, redact

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareConfig:
    """What the CPU stage does to each series."""

    read: ReadConfig = field(default_factory=ReadConfig)
    hemisphere: HemisphereConfig = field(default_factory=HemisphereConfig)
    model_input: ModelInputConfig = field(default_factory=ModelInputConfig)
    masks_url: str | None = None  # folder of <SeriesInstanceUID>.nii.gz calcium masks
    #: without masks: the arterial crop of the calcium segmenter (its in-plane slab over
    #: every slice is handed on; the segmenter stage picks the slices); None: no segmenter
    crop: CropConfig | None = None
    #: a missing or unusable mask: "note" keeps the series' landmarks (volumes not
    #: computed, a mask_* code on the row), "error" makes the series an error row
    mask_problems: str = "note"
    timeout_s: float = 600.0  # one series may take this long before it is cut off
    storage: StorageOptions | None = None


#: what can be wrong with a series' calcium mask (the image may still be fine)
MASK_CODES = frozenset({ErrorCode.MASK_MISSING, ErrorCode.MASK_MISMATCH,
                        ErrorCode.INVALID_NIFTI})


def mask_url(masks_url: str, series_uid: str) -> str:
    return join(masks_url, f"{series_uid}.nii.gz")


def grids_match(a: Grid, b: Grid, tolerance: float = 0.1) -> bool:
    """Same shape, and every corner of the two grids within ``tolerance`` x the smallest
    voxel spacing of each other."""
    if tuple(a.shape) != tuple(b.shape):
        return False
    nk, nj, ni = a.shape
    corners = np.array([(i, j, k) for i in (0, ni - 1) for j in (0, nj - 1)
                        for k in (0, nk - 1)], dtype=float)
    pa, pb = (g.world(corners[:, 0], corners[:, 1], corners[:, 2]) for g in (a, b))
    return float(np.abs(pa - pb).max()) <= tolerance * min(a.spacing)


def _describe(grid: Grid) -> str:
    """Shape, origin, spacing and axis directions: every way two grids can differ."""
    steps = grid.matrix / np.asarray(grid.spacing)[None, :]
    return (f"shape {tuple(int(n) for n in grid.shape)}, origin "
            f"{np.round(grid.origin, 2).tolist()} mm, spacing "
            f"{np.round(grid.spacing, 3).tolist()} mm, directions "
            f"{np.round(steps.T, 3).tolist()}")


def read_mask(config: PrepareConfig, volume: Volume, series_uid: str) -> np.ndarray:
    """The series' calcium mask (bool, [k, j, i] on the volume's grid).

    Raises:
        SeriesError: MASK_MISSING, INVALID_NIFTI, or MASK_MISMATCH when its geometry is not
            the (tilt-corrected) volume's.
    """
    assert config.masks_url is not None
    url = mask_url(config.masks_url, series_uid)
    fs, path = filesystem(url, config.storage)
    if not fs.exists(path):
        raise SeriesError(ErrorCode.MASK_MISSING, f"no calcium mask {redact(url)}; masks are "
                          "NIfTI files named <SeriesInstanceUID>.nii.gz on the volume's grid",
                          series=series_uid)
    mask = read_nifti(url, config.storage, series=series_uid)
    if not grids_match(mask.grid, volume.grid):
        raise SeriesError(ErrorCode.MASK_MISMATCH, f"mask {redact(url)} is not on the "
                          f"volume's grid (after tilt correction): mask {_describe(mask.grid)}; "
                          f"volume {_describe(volume.grid)}"
                          f"{_slice_count_reason(mask.grid, volume)}; write the mask on the "
                          "volume's grid", series=series_uid)
    return mask.array > 0


def _slice_count_reason(mask: Grid, volume: Volume) -> str:
    """When the slice counts differ: both counts, and the likely reason."""
    mk, vk = int(mask.shape[0]), int(volume.grid.shape[0])
    if mk == vk:
        return ""
    sparse = volume.provenance.get("sparse_slices")
    if sparse and mk > vk:
        why = (f"the series is sparse ({sparse.removeprefix('sparse_slices: ')}): slices are "
               "likely missing from the archive while the mask was made on the complete "
               "series")
    elif mk > vk:
        why = ("the mask was likely made on a series with more slices: a thinner "
               "reconstruction, or slices missing from this copy")
    else:
        why = "the mask was likely made on a thicker reconstruction of the same study"
    return f"; the mask has {mk} slices, the series {vk}: {why}"


def slice_repairs(volume: Volume) -> str | None:
    """What reading did to make the stack regular (None when nothing): the series still
    counts, but a person should look at it."""
    p = volume.provenance
    done = [f"{p['duplicates_dropped']} duplicate slice(s) dropped"
            if p.get("duplicates_dropped") else "",
            f"{p['missing_slices_filled']} missing slice(s) interpolated"
            if p.get("missing_slices_filled") else "",
            "uneven spacing resampled to a regular grid" if p.get("uneven_resampled") else ""]
    return "; ".join(d for d in done if d) or None


def prepare_series(files: list[str], series_uid: str, config: PrepareConfig) -> dict:
    """One series -> plain values and packed arrays (see the module docstring).

    Raises:
        SeriesError: with the code of what failed.
    """
    t0 = time.perf_counter()
    try:
        volume = read_series(files, config.storage, config.read, series=series_uid)
        split = split_hemispheres(volume, config.hemisphere)
        model_input = prepare(volume, config.model_input)
        out = {
            "n_slices": int(volume.grid.shape[0]), "rows": int(volume.grid.shape[1]),
            "columns": int(volume.grid.shape[2]),
            "pixel_spacing_mm": float(volume.grid.spacing[0]),
            "slice_step_mm": float(volume.provenance.get("slice_step_mm") or
                                   volume.grid.spacing[2]),
            "tilt_deg": float(volume.provenance.get("tilt_deg") or 0.0),
            "tilt_corrected": bool(volume.provenance.get("tilt_corrected")),
            "midline_used": split.used, "midline_offset_mm": float(split.offset_mm),
            "midline_angle_deg": float(split.angle_deg),
            "midline_point": [float(v) for v in split.plane.point],
            "midline_normal": [float(v) for v in split.plane.normal],
            "model_decimation": int(model_input.decimation),
            "model_input": pack(x=model_input.array.astype(np.float16),
                                slice_index=model_input.slice_index,
                                slice_z_mm=model_input.slice_z_mm),
            "model_depth": model_input.depth,
            "calcium": None,
            "slice_repairs": slice_repairs(volume),
            # landmarks go back to acquired slices: the native slice of every volume slice
            "native_slice": volume_to_native(volume).tolist(),
            "variable_spacing": bool(volume.provenance.get("variable_spacing")),
            "sparse_slices": volume.provenance.get("sparse_slices"),
            "mask_problem": None,
        }
        if config.masks_url:
            try:
                mask = read_mask(config, volume, series_uid)
            except SeriesError as e:
                if e.code not in MASK_CODES or config.mask_problems == "error":
                    raise
                out["mask_problem"] = {"code": e.code.value, "detail": str(e)}
            else:
                summary = summarise_calcium(mask, volume.array, volume.grid,
                                            split.plane.signed_distance)
                out["calcium"] = pack(**{k: v for k, v in summary.__dict__.items()})
                out["mask_source"] = "external"
        elif config.crop is not None:
            from cohort.job.calcium import pack_slab

            try:
                box = slab_box(volume.grid, split.plane.point, split.plane.normal, config.crop)
            except ValueError as e:
                out["mask_problem"] = {"code": ErrorCode.PROCESSING_FAILED.value,
                                       "detail": f"calcium segmenter: {e}"}
            else:
                out["seg_slab"] = pack_slab(volume, box)
    except SeriesError:
        raise
    except (CohortError, MemoryError) as e:
        raise SeriesError(ErrorCode.PROCESSING_FAILED, f"{type(e).__name__}: {e}",
                          series=series_uid) from e
    except Exception as e:  # a bug or an input nobody foresaw: one row, never the run
        logger.exception("series %s failed unexpectedly", series_uid)
        raise SeriesError(ErrorCode.PROCESSING_FAILED, f"{type(e).__name__}: {e}; please "
                          "report it with this series' headers", series=series_uid) from e
    out["seconds_prepare"] = round(time.perf_counter() - t0, 3)
    return out


_READER: IsolatedReader | None = None


def run_isolated(fn, *args, timeout_s: float, series: str | None = None):
    """``fn(*args)`` in this worker's isolated process, cut off after ``timeout_s``.

    Raises:
        SeriesError: TIMEOUT, DECODER_CRASHED, or the error ``fn`` raised.
    """
    global _READER
    if _READER is None or _READER.timeout_s != timeout_s:
        if _READER is not None:
            _READER.close()
        _READER = IsolatedReader(timeout_s, preload=("torch", __name__))
    return _READER.call(fn, *args, series=series)


def prepare_isolated(files: list[str], series_uid: str, config: PrepareConfig) -> dict:
    """`prepare_series` in this worker's isolated process, under the series time limit."""
    return run_isolated(prepare_series, files, series_uid, config, timeout_s=config.timeout_s,
                        series=series_uid)
