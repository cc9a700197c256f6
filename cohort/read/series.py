"""A DICOM series (its files' URIs) -> a validated, regular, axial `Volume`."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from cohort.errors import ErrorCode, SeriesError
from cohort.geometry import Grid, native_slice_of
from cohort.read.decode import DecodedSlice, decode
from cohort.read.resample import correct_tilt, regularise
from cohort.read.stack import (
    SliceGeometry,
    StackGeometry,
    StackRules,
    check_stack,
    signed_tilt_deg,
)
from cohort.read.volume import Volume
from cohort.storage import StorageOptions, cat_whole, filesystem, redact

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
    the compressed-syntax decoders run in C).

    The slices of a series of several files are small objects, each read in one request
    (`cohort.storage.cat_whole`); a series of one file (multi-frame) may be hundreds of
    megabytes and keeps the filesystem's own split reads.
    """
    fs, _ = filesystem(uris[0], options)
    several = len(uris) > 1

    def one(uri: str) -> DecodedSlice:
        try:
            path = filesystem(uri, options)[1]
            data = cat_whole(fs, path) if several else fs.cat_file(path)
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
    series = series or next(iter(sorted(u for u in uids if u)), None)
    if len(uids) > 1:
        raise SeriesError(ErrorCode.INCONSISTENT_GEOMETRY,
                          f"files belong to {len(uids)} different SeriesInstanceUIDs"
                          + (" (some have none)" if None in uids else ""), series=series)
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
        "slice_step_mm": geom.step_mm,
        "notes": list(geom.notes) + sorted({n for d in decoded for n in d.notes}),
        "transfer_syntax": decoded[0].transfer_syntax,
        "variable_spacing": geom.variable_spacing,
        "sparse_slices": geom.sparse,
        "spacing_blocks": [b.as_dict() for b in geom.blocks],
    }
    if geom.tilt_deg > 0:
        if not config.correct_tilt:
            raise SeriesError(ErrorCode.INCONSISTENT_GEOMETRY,
                              f"gantry tilt of {geom.tilt_deg:.1f} deg and tilt correction is "
                              "off; switch it on (ReadConfig.correct_tilt)", series=series)
        array, grid = correct_tilt(array, grid)
        provenance["tilt_corrected"] = True
    provenance.update(native_slices(geom, grid, [decoded[i].geometry for i in geom.order]))
    provenance["seconds"] = round(time.perf_counter() - t0, 3)
    return Volume(np.ascontiguousarray(array, dtype=np.float32), grid, series, provenance)


def native_slices(geom: StackGeometry, grid: Grid, slices: list[SliceGeometry]) -> dict:
    """Where the acquired (native) slices lie on the read volume's grid: their fractional
    volume slice index, world z at the image centre, and height along z (SliceThickness
    through the tilt, else the step). Landmarks go back to native slices with these."""
    idx = np.asarray(geom.slice_index, dtype=float)
    z_volume = grid.world((grid.shape[2] - 1) / 2, (grid.shape[1] - 1) / 2,
                          np.arange(grid.shape[0]))[:, 2]
    if len(z_volume) > 1:
        z = np.interp(idx, np.arange(len(z_volume)), z_volume,
                      left=np.nan, right=np.nan)
        dz = float(z_volume[1] - z_volume[0])
        z = np.where(np.isnan(z), z_volume[0] + idx * dz, z)  # the top slice past the grid
    else:
        z = np.full(len(idx), z_volume[0])
    cos_t = float(np.cos(np.radians(geom.tilt_deg)))
    height = [s.thickness / cos_t if s.thickness else geom.step_mm / cos_t for s in slices]
    return {"native_slice_index": idx.tolist(), "native_slice_z_mm": z.tolist(),
            "native_slice_height_mm": [float(h) for h in height]}


def volume_to_native(volume: Volume) -> np.ndarray:
    """For every slice of a read volume, the acquired (native) slice that holds it
    (`cohort.geometry.native_slice_of`), as int64; the identity for a volume without
    native-slice provenance (e.g. NIfTI)."""
    p = volume.provenance
    nk, nj, ni = volume.grid.shape
    if not p.get("native_slice_z_mm"):
        return np.arange(nk)
    z = volume.grid.world((ni - 1) / 2, (nj - 1) / 2, np.arange(nk))[:, 2]
    return native_slice_of(z, p["native_slice_z_mm"], p["native_slice_height_mm"]).astype(
        np.int64)
