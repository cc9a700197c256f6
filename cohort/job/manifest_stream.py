"""The job's view of the index: the manifest read as a stream, so the driver holds counts,
not rows.

A manifest row of a selected series carries its file list (about 30 KB a series: 3 GB at
100,000 series), so the rows the job processes never pass through the driver. They are read
by Ray Data (`series_dataset`: ``read_parquet``, filtered in the read tasks to what still
needs doing, one row per block), while the driver scans the manifest in bounded batches for
what it needs itself (`scan_manifest`: counts, the keys a ``--max-series`` run takes, the
rows of series the index did not select, which need no processing).

Which series still need doing (`cohort.write.runs.Finished`) is a pair of key arrays, a few
MB at 100,000 series: resume never loads the published rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cohort.discover.manifest import MANIFEST_FILE
from cohort.job.rows import input_rows, not_processed_row
from cohort.storage import StorageOptions, filesystem, is_local, join, protocol_of
from cohort.write.identity import IdentityConfig
from cohort.write.runs import Finished

logger = logging.getLogger(__name__)

#: manifest rows per batch the driver holds at a time
SCAN_BATCH_ROWS = 1024
#: what the job reads of a manifest row (`cohort.job.rows`)
ROW_COLUMNS = ("kind", "status", "error_code", "error_detail", "series_key", "series_uid",
               "study_uid", "patient_id", "study_date", "manufacturer", "model", "kernel",
               "n_files", "slice_thickness_mm", "files")


@dataclass(frozen=True)
class ManifestCounts:
    """What the driver knows of the manifest before the job streams it."""

    series: int  # series rows in the manifest
    todo: int  # of them, not finished in published runs
    to_process: int  # of those, selected by the index (after --max-series)
    not_processed: int  # todo rows the index did not select or could not read
    left_for_later: int  # selected rows a --max-series run leaves for the next
    #: the keys a --max-series run processes (None: every selected todo row)
    limit: pa.Array | None = None
    #: SeriesInstanceUIDs (or keys) of the series to process, when asked for (--masks)
    uids: tuple[str, ...] = ()

    @property
    def finished_earlier(self) -> int:
        return self.series - self.todo


def manifest_files(index_url: str, options: StorageOptions | None) -> list[str]:
    """The manifest's Parquet file(s) under a published index: ``manifest.parquet``, or the
    parts inside it when it is a folder."""
    url = join(index_url, MANIFEST_FILE)
    fs, path = filesystem(url, options)
    if fs.isdir(path):
        parts = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
        return [join(url, p[len(path.rstrip("/")) + 1:]) for p in parts]
    return [url]


def _batches(files: list[str], options: StorageOptions | None,
             columns: tuple[str, ...]) -> Iterator[pa.RecordBatch]:
    for url in files:
        fs, path = filesystem(url, options)
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            have = [c for c in columns if c in pf.schema_arrow.names]
            yield from pf.iter_batches(batch_size=SCAN_BATCH_ROWS, columns=have)


def _todo_series(batch: pa.RecordBatch | pa.Table, finished: Finished) -> pa.Array:
    """The mask of ``batch``'s rows that are series not finished in published runs."""
    is_series = pc.equal(batch.column("kind"), "series")
    todo = finished.todo(batch.column("series_key"), batch.column("status"))
    return pc.and_(is_series, todo)


def scan_manifest(index_url: str, options: StorageOptions | None, finished: Finished,
                  max_series: int | None = None, want_uids: bool = False) -> ManifestCounts:
    """Count the manifest's rows in bounded batches: series, still to do, to process."""
    series = todo = selected = not_processed = 0
    limit: list[str] = []
    uids: list[str] = []
    columns = ("kind", "status", "series_key", "series_uid")
    for batch in _batches(manifest_files(index_url, options), options, columns):
        series += pc.sum(pc.equal(batch.column("kind"), "series")).as_py() or 0
        mask = _todo_series(batch, finished)
        rows = batch.filter(mask)
        todo += rows.num_rows
        chosen = rows.filter(pc.equal(rows.column("status"), "selected"))
        not_processed += rows.num_rows - chosen.num_rows
        selected += chosen.num_rows
        room = None if max_series is None else max(0, max_series - len(limit))
        taken = chosen if room is None else chosen.slice(0, room)
        if max_series is not None:
            limit += taken.column("series_key").to_pylist()
        if want_uids:
            uids += [u or k for u, k in zip(taken.column("series_uid").to_pylist(),
                                            taken.column("series_key").to_pylist(),
                                            strict=True)]
    later = 0 if max_series is None else max(0, selected - max_series)
    return ManifestCounts(series=series, todo=todo, to_process=selected - later,
                          not_processed=not_processed, left_for_later=later,
                          limit=None if max_series is None else pa.array(limit, pa.string()),
                          uids=tuple(uids))


def not_processed_rows(index_url: str, options: StorageOptions | None, finished: Finished,
                       common: dict, identity: IdentityConfig) -> Iterator[dict]:
    """The rows of todo series the index did not select (skipped) or could not read
    (error), read in bounded batches: they need no processing."""
    for batch in _batches(manifest_files(index_url, options), options, ROW_COLUMNS):
        mask = pc.and_(_todo_series(batch, finished),
                       pc.not_equal(batch.column("status"), "selected"))
        rows = batch.filter(mask)
        if rows.num_rows:
            for r in rows.to_pandas().itertuples(index=False):
                yield not_processed_row(r, common, identity)


def manifest_patient_ids(index_url: str, options: StorageOptions | None) -> dict[str, str]:
    """series_key -> PatientID of the manifest's series (`check_written_keys`, for outputs
    written before cohort recorded its identity; two short strings a series)."""
    ids: dict[str, str] = {}
    for batch in _batches(manifest_files(index_url, options), options,
                          ("kind", "series_key", "patient_id")):
        b = batch.filter(pc.equal(batch.column("kind"), "series"))
        ids.update(zip(b.column("series_key").to_pylist(), b.column("patient_id").to_pylist(),
                       strict=True))
    return ids


def _arrow_filesystem(url: str, options: StorageOptions | None):
    """The pyarrow filesystem Ray Data reads ``url`` with (None: local). S3 gets pyarrow's
    own client, configured from ``options`` (it pickles to the read tasks without a live
    connection); other protocols go through fsspec."""
    if is_local(url):
        return None
    if protocol_of(url) in ("s3", "s3a"):
        return (options or StorageOptions()).arrow_s3()
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(filesystem(url, options)[0]))


def _select(batch: pa.Table, finished: Finished, limit: pa.Array | None) -> pa.Table:
    mask = pc.and_(_todo_series(batch, finished),
                   pc.equal(batch.column("status"), "selected"))
    if limit is not None:
        mask = pc.and_(mask, pc.is_in(batch.column("series_key"), value_set=limit))
    return batch.filter(mask)


def _job_rows(batch, common: dict, identity: IdentityConfig):
    """A batch of selected manifest rows -> the job's input rows (`cohort.job.rows`)."""
    import pandas as pd

    return pd.DataFrame(input_rows(batch, common, identity))


def series_dataset(index_url: str, options: StorageOptions | None, finished: Finished,
                   counts: ManifestCounts, common: dict, identity: IdentityConfig):
    """The job's input as a Ray dataset read from the manifest, one series per block:
    selected series not finished earlier (and among the ``--max-series`` first)."""
    import ray

    files = manifest_files(index_url, options)
    paths = [filesystem(f, options)[1] for f in files]
    ds = ray.data.read_parquet(paths, filesystem=_arrow_filesystem(files[0], options))
    ds = ds.select_columns(list(ROW_COLUMNS))
    ds = ds.map_batches(_select, batch_format="pyarrow", zero_copy_batch=True,
                        fn_kwargs={"finished": finished, "limit": counts.limit})
    ds = ds.map_batches(_job_rows, batch_format="pandas",
                        fn_kwargs={"common": common, "identity": identity})
    # one series per block: each is a task of its own in the stages that follow
    return ds.repartition(target_num_rows_per_block=1)

