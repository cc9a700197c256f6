"""A DICOM series (its files' URIs) -> a validated, regular, axial `Volume`."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from cohort.errors import ErrorCode, SeriesError
from cohort.read.decode import DecodedSlice, decode
from cohort.read.resample import correct_tilt, regularise
from cohort.read.stack import StackRules, check_stack, signed_tilt_deg
from cohort.read.volume import Volume
from cohort.storage import StorageOptions, filesystem, redact

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadConfig:
    """How series are read."""

    rules: StackRules = StackRules()
    io_threads: int = 8  # parallel object reads per series (object stores are latency-bound)
    max_voxels: int = 1024 * 1024 * 1200  # larger series fail as OVERSIZED
    correct_tilt: bool = True  # False: a tilted series fails instead of being resampled


def fetch_and_decode(uris: list[str], options: StorageOptions | None,
                     threads: int) -> list[DecodedSlice]:
    """Every URI read and decoded, in parallel threads (object stores are latency-bound, and
    the compressed-syntax decoders run in C)."""
    fs, _ = filesystem(uris[0], options)

    def one(uri: str) -> DecodedSlice:
        try:
            data = fs.cat_file(filesystem(uri, options)[1])
        except (OSError, ValueError) as e:
            raise SeriesError(ErrorCode.IO_ERROR, f"cannot read: {e}", uri=redact(uri)) from e
        return decode(data, redact(uri))

    if threads <= 1 or len(uris) == 1:
        return [one(u) for u in uris]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, uris))


def read_series(uris: list[str], options: StorageOptions | None = None,
                config: ReadConfig = ReadConfig(), *, series: str | None = None) -> Volume:
    """Read, validate and regularise one series.

    Slices are sorted along the plane normal from their positions; duplicates are dropped,
    gaps and uneven spacing are filled by linear interpolation along depth, and a gantry
    tilt is corrected by resampling onto the regular axial grid (recorded in
    ``provenance``).

    Raises:
        SeriesError: with the code of the first problem found, naming the series and file.
    """
    if not uris:
        raise SeriesError(ErrorCode.TOO_FEW_SLICES, "no files", series=series)
    t0 = time.perf_counter()
    decoded = fetch_and_decode(uris, options, config.io_threads)
    for d, u in zip(decoded, uris, strict=True):
        if d.geometry is None:
            raise SeriesError(ErrorCode.INCONSISTENT_GEOMETRY, "missing or malformed "
                              "ImagePositionPatient / ImageOrientationPatient / PixelSpacing",
                              series=series or d.series_uid, uri=redact(u))
    uids = {d.series_uid for d in decoded}
    series = series or (sorted(uids)[0] if uids else None)
    if len(uids) > 1:
        raise SeriesError(ErrorCode.INCONSISTENT_GEOMETRY,
                          f"files belong to {len(uids)} different SeriesInstanceUIDs",
                          series=series)
    geom = check_stack([d.geometry for d in decoded], config.rules, series=series)
    nk, nj, ni = geom.grid.shape
    if nk * nj * ni > config.max_voxels:
        raise SeriesError(ErrorCode.OVERSIZED, f"{nk} x {nj} x {ni} voxels exceed the limit "
                          f"of {config.max_voxels}; raise ReadConfig.max_voxels",
                          series=series)
    stack = np.empty((len(geom.order), nj, ni), dtype=np.float32)
    for k, i in enumerate(geom.order):
        decoded[i].hu_into(stack[k])
    array = regularise(stack, np.asarray(geom.slice_index), nk)
    grid = geom.grid
    provenance = {
        "n_files": len(uris), "duplicates_dropped": len(geom.duplicates),
        "missing_slices_filled": geom.missing_slices, "uneven_resampled": geom.uneven,
        "tilt_deg": signed_tilt_deg(geom), "tilt_corrected": False,
        "slice_step_mm": geom.step_mm, "notes": list(geom.notes),
        "transfer_syntax": decoded[0].transfer_syntax,
    }
    if geom.tilt_deg > 0:
        if not config.correct_tilt:
            raise SeriesError(ErrorCode.INCONSISTENT_GEOMETRY,
                              f"gantry tilt of {geom.tilt_deg:.1f} deg and tilt correction is "
                              "off; switch it on (ReadConfig.correct_tilt)", series=series)
        array, grid = correct_tilt(array, grid)
        provenance["tilt_corrected"] = True
    provenance["seconds"] = round(time.perf_counter() - t0, 3)
    return Volume(np.ascontiguousarray(array, dtype=np.float32), grid, series, provenance)
