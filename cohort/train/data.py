"""Training data: a cohort's series plus a landmark table, prepared once into a cache of
model inputs (so epochs never decode DICOM again).

Cache layout under its URL: ``inputs/<SeriesInstanceUID>.npy`` (float16, rows x columns x
slices) and ``index.parquet`` (one row per series: patient key, depth, the six landmarks as
model slice indices and as volume slice indices, slice spacing, decimation).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cohort.anatomy import LANDMARK_KINDS, LANDMARKS, SIDES
from cohort.errors import ConfigError, SeriesError
from cohort.preprocess.model_input import ModelInputConfig, prepare
from cohort.read.nifti import read_nifti
from cohort.read.series import read_series
from cohort.storage import StorageOptions, filesystem, join, read_bytes, write_bytes

logger = logging.getLogger(__name__)

LABEL_COLUMNS = tuple(f"{name}_slice" for name in LANDMARKS)


@dataclass(frozen=True)
class SeriesSource:
    """Where one series' pixels are: DICOM files, or one NIfTI file."""

    series_uid: str
    patient_key: str
    files: tuple[str, ...] = ()
    nifti: str | None = None


def load_labels(url: str, options: StorageOptions | None = None) -> pd.DataFrame:
    """A landmark table (Parquet or CSV): series_uid, patient_key and the six
    ``<landmark>_slice`` columns (volume slice indices, 0 = most inferior slice).

    ``series_instance_uid`` / ``patient_id`` are accepted as column names too.

    Raises:
        ConfigError: a required column is missing.
    """
    data = read_bytes(url, options)
    df = pd.read_csv(io.BytesIO(data)) if url.endswith(".csv") else pd.read_parquet(
        io.BytesIO(data))
    df = df.rename(columns={"series_instance_uid": "series_uid", "patient_id": "patient_key"})
    missing = [c for c in ("series_uid", "patient_key", *LABEL_COLUMNS) if c not in df.columns]
    if missing:
        raise ConfigError(f"landmark table {url} lacks the column(s) {', '.join(missing)}; it "
                          "needs series_uid, patient_key and one <landmark>_slice column per "
                          f"landmark ({', '.join(LABEL_COLUMNS)})")
    return df[["series_uid", "patient_key", *LABEL_COLUMNS]].copy()


def check_labels(labels: pd.DataFrame, depths: dict[str, int]) -> None:
    """Raise, naming the rows, for labels that cannot train a model: no such series, an
    index outside the volume, landmarks out of anatomical order, duplicate rows."""
    problems = []
    unknown = labels[~labels["series_uid"].isin(depths)]
    if len(unknown):
        problems.append(f"{len(unknown)} label row(s) match no series: "
                        f"{', '.join(unknown['series_uid'].head(5))}")
    dup = labels[labels["series_uid"].duplicated(keep=False)]
    if len(dup):
        problems.append(f"series labelled twice: {', '.join(dup['series_uid'].unique()[:5])}")
    known = labels[labels["series_uid"].isin(depths)]
    for row in known.itertuples(index=False):
        d = depths[row.series_uid]
        values = dict(zip(LABEL_COLUMNS, row[2:], strict=True))
        bad = [c for c, v in values.items() if pd.isna(v) or not 0 <= int(v) < d]
        if bad:
            problems.append(f"{row.series_uid}: {', '.join(bad)} outside 0..{d - 1}")
            continue
        for side in SIDES:
            k = [int(values[f"{side}_{kind}_slice"]) for kind in LANDMARK_KINDS]
            if not k[0] <= k[1] <= k[2]:
                problems.append(f"{row.series_uid}: {side} landmarks out of anatomical order "
                                f"(carotid canal {k[0]}, petrolingual {k[1]}, clinoid {k[2]})")
    if problems:
        raise ConfigError("the landmark table cannot be used: " + "; ".join(problems))


def read_source(source: SeriesSource, options: StorageOptions | None):
    """The volume of one source (DICOM files or a NIfTI file)."""
    if source.nifti:
        return read_nifti(source.nifti, options, series=source.series_uid)
    return read_series(list(source.files), options, series=source.series_uid)


def build_cache(sources: list[SeriesSource], labels: pd.DataFrame, cache_url: str,
                options: StorageOptions | None = None,
                config: ModelInputConfig | None = None) -> pd.DataFrame:
    """Read every labelled series once, write its model input, return the cache index.

    Raises:
        ConfigError: labels that do not fit the series (before anything is written);
        SeriesError: a labelled series cannot be read (training needs every one).
    """
    config = config or ModelInputConfig()
    by_uid = {s.series_uid: s for s in sources}
    unknown = labels[~labels["series_uid"].isin(by_uid)]
    if len(unknown):
        check_labels(labels, {})  # raises, naming the rows
    rows = []
    prepared = {}
    for uid in labels["series_uid"]:
        try:
            volume = read_source(by_uid[uid], options)
        except SeriesError as e:
            raise SeriesError(e.code, f"a labelled series cannot be read, fix or drop its "
                              f"label: {e.detail}", series=uid, uri=e.uri) from e
        prepared[uid] = (volume.grid.shape[0], prepare(volume, config))
    check_labels(labels, {uid: d for uid, (d, _) in prepared.items()})
    for row in labels.itertuples(index=False):
        depth, mi = prepared[row.series_uid]
        buf = io.BytesIO()
        np.save(buf, mi.array.astype(np.float16))
        rel = f"inputs/{row.series_uid}.npy"
        write_bytes(join(cache_url, rel), buf.getvalue(), options)
        vol_idx = np.array(row[2:], dtype=np.int64)
        # the model slice nearest to each labelled volume slice (identity without decimation)
        model_idx = np.rint(vol_idx / mi.decimation).astype(np.int64).clip(0, mi.depth - 1)
        spacing = float(np.median(np.diff(mi.slice_z_mm))) if mi.depth > 1 else 0.0
        rec = {"series_uid": row.series_uid, "patient_key": str(row.patient_key), "path": rel,
               "depth": mi.depth, "volume_depth": depth, "decimation": mi.decimation,
               "slice_spacing_mm": spacing}
        rec.update({f"{n}_target": int(v) for n, v in zip(LANDMARKS, model_idx, strict=True)})
        rec.update({f"{n}_slice": int(v) for n, v in zip(LANDMARKS, vol_idx, strict=True)})
        rows.append(rec)
    index = pd.DataFrame(rows)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(index, preserve_index=False), buf)
    write_bytes(join(cache_url, "index.parquet"), buf.getvalue(), options)
    logger.info("cached %d series under %s", len(index), cache_url)
    return index


def load_input(cache_url: str, rel: str, options: StorageOptions | None = None) -> np.ndarray:
    """One cached model input as float32 (rows, columns, slices)."""
    fs, path = filesystem(join(cache_url, rel), options)
    with fs.open(path, "rb") as f:
        return np.load(io.BytesIO(f.read())).astype(np.float32)


def targets(index_row) -> np.ndarray:
    """The six model slice indices of one cache-index row (dict or namedtuple)."""
    get = index_row.get if isinstance(index_row, dict) else lambda k: getattr(index_row, k)
    return np.array([get(f"{n}_target") for n in LANDMARKS], dtype=np.int64)


def synthetic_sources(cohort_url: str, options: StorageOptions | None = None
                      ) -> tuple[list[SeriesSource], pd.DataFrame]:
    """Sources and the landmark table of a cohort written by `cohort synth heads` (its
    ground_truth.parquet is the landmark table; localizers are left out)."""
    gt = pd.read_parquet(io.BytesIO(read_bytes(join(cohort_url, "ground_truth.parquet"),
                                               options)))
    gt = gt[gt["series_role"] != "localizer"]
    fs, _ = filesystem(cohort_url, options)
    sources = []
    for row in gt.itertuples():
        _, folder = filesystem(join(cohort_url, row.dicom_dir), options)
        files = sorted(fs.find(folder))
        prefix = cohort_url.split("://")[0] + "://" if "://" in cohort_url else ""
        sources.append(SeriesSource(row.series_instance_uid, row.patient_id,
                                    tuple(prefix + f if prefix else f for f in files)))
    labels = gt.rename(columns={"series_instance_uid": "series_uid",
                                "patient_id": "patient_key"}).copy()
    # a stepped series' *_slice counts acquired slices; training targets index the volume
    # the reader makes (the truth grid, first_slice_z_mm + k * slice_step_mm)
    stepped = labels["variable_spacing"].fillna(False).astype(bool) \
        if "variable_spacing" in labels else pd.Series(False, index=labels.index)
    for name in LANDMARKS if stepped.any() else ():
        col = f"{name}_slice"
        on_grid = np.rint((labels[f"{name}_z_mm"] - labels["first_slice_z_mm"])
                          / labels["slice_step_mm"])
        labels.loc[stepped, col] = on_grid[stepped].astype(labels[col].dtype)
    return sources, labels[["series_uid", "patient_key", *LABEL_COLUMNS]].reset_index(drop=True)
