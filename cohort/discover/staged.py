"""The steps of `cohort index` that keep the driver's memory bounded, whatever the size of
the archive: rows travel between the steps as Parquet parts in a staging folder, never all
through the driver.

    headers   a task per batch of listed objects: OBJECTS rows    -> headers/part-*.parquet
    group     a task per bucket of series (a hash of the series key): stacks, geometry and
              unselected series rows (with their study's bucket)  -> series/part-<b>.parquet
              the bucket's objects with their series key          -> objects/part-<b>.parquet
              manifest rows of its unusable objects               -> manifest/objects-<b>...
    select    a task per bucket of studies: selection per study   -> manifest/series-<b>...
    merge     a task per table: the sorted parts merged a batch of rows at a time into one
              file (objects.parquet, manifest.parquet)

The number of buckets grows with the archive (`DiscoveryConfig.objects_per_group_task`), so
a task's memory is bounded too; a small archive is one bucket, grouped without a task
(`Runner.map` runs a single item here).
"""

from __future__ import annotations

import heapq
import io
import logging
import operator
import os
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cohort.config import DiscoveryConfig, IndexConfig
from cohort.discover.grouping import group_keys, iter_series, split_stacks, stack_of
from cohort.discover.headers import lost_row, read_headers
from cohort.discover.listing import ObjectInfo, entries_below, uri_of
from cohort.discover.manifest import (
    MANIFEST_FILE,
    OBJECTS_FILE,
    annotate,
    by_kind_counts,
    manifest_order,
    manifest_table,
    object_row,
)
from cohort.discover.selection import select_series
from cohort.discover.series import describe_stack, describe_unusable_series
from cohort.schemas import MANIFEST, OBJECTS
from cohort.storage import (
    StorageOptions,
    atomic_file,
    filesystem,
    join,
    read_bytes,
    redact,
    write_bytes,
)

logger = logging.getLogger(__name__)

#: what a header task hands back: its batch's totals, one row
STATS = pa.schema([("objects", pa.int64()), ("object_bytes", pa.int64()),
                   ("header_bytes_read", pa.int64()), ("range_requests", pa.int64())])
#: series rows before selection: MANIFEST, but a candidate has no status yet
_UNSELECTED = pa.schema([f.with_nullable(True) for f in MANIFEST])
_BUCKET = "_bucket"  # column of the series parts: the bucket of the series' study
_MERGE_BATCH_ROWS = 2048  # rows written to the merged file at a time
_PART_ROW_GROUP = 256  # rows per row group of a part: what a merge decodes per part at once


@dataclass(frozen=True)
class Stage:
    """A staging folder (local or a prefix) for the parts of one index."""

    url: str
    options: StorageOptions | None = None

    def write(self, table: pa.Table, *names: str) -> str:
        """Write ``table`` as the part ``names`` (atomically); returns its URL."""
        url = join(self.url, *names)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd", row_group_size=_PART_ROW_GROUP)
        write_bytes(url, buf.getvalue(), self.options)
        return url

    def read(self, url: str, **kwargs) -> pa.Table:
        return pq.read_table(io.BytesIO(read_bytes(url, self.options)), **kwargs)

    def parts(self, folder: str) -> list[str]:
        """URLs of the parts under ``folder``, sorted."""
        fs, path = filesystem(join(self.url, folder), self.options)
        return sorted(uri_of(self.url, p) for p, _ in entries_below(fs, path)
                      if p.endswith(".parquet") and not os.path.basename(p).startswith("."))

    def remove(self) -> None:
        """Delete the folder and everything in it (a failure is only logged)."""
        fs, path = filesystem(self.url, self.options)
        fs.invalidate_cache()  # a listing cached before the parts were written hides them
        try:
            fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass  # nothing was staged
        except OSError as e:
            logger.warning("could not remove the staging folder %s: %s; delete it by hand",
                           redact(self.url), e)


# --- headers ---------------------------------------------------------------------------

def stage_headers(context: tuple[str, StorageOptions | None, DiscoveryConfig, Stage],
                  batch: list[ObjectInfo]) -> pa.Table:
    """Task: the OBJECTS rows of ``batch`` written as one part; returns their STATS row.
    ``context`` is ``(input url, options, config, stage)``; with several inputs, any of them
    (they share one storage, whose filesystem it names)."""
    url, options, cfg, stage = context
    table = read_headers((url, options, cfg), batch)
    stage.write(table, "headers", f"part-{uuid.uuid4().hex}.parquet")
    return _stats(table)


@dataclass(frozen=True)
class LostRows:
    """``lost_row`` for `Runner.for_each_batch`: the OBJECTS row of an object whose header
    read killed its worker twice, written as a part of its own; returns its STATS row."""

    stage: Stage

    def __call__(self, obj: ObjectInfo, reason: str) -> dict:
        table = pa.Table.from_pylist([lost_row(obj, reason)], schema=OBJECTS)
        self.stage.write(table, "headers", f"lost-{uuid.uuid4().hex}.parquet")
        return _stats(table).to_pylist()[0]


def _stats(table: pa.Table) -> pa.Table:
    def total(column: str) -> int:
        return int(pc.sum(table[column]).as_py() or 0)
    return pa.Table.from_pylist([{
        "objects": table.num_rows, "object_bytes": total("size_bytes"),
        "header_bytes_read": total("bytes_read"), "range_requests": total("range_requests"),
    }], schema=STATS)


def batches_of(pages: Iterable[list], n: int) -> Iterator[list]:
    """The items of ``pages`` in batches of ``n`` (the last one shorter)."""
    batch: list = []
    for page in pages:
        batch.extend(page)
        while len(batch) >= n:
            yield batch[:n]
            batch = batch[n:]
    if batch:
        yield batch


# --- grouping and selection --------------------------------------------------------------

def buckets_for(n_objects: int, cfg: DiscoveryConfig) -> int:
    """How many buckets the series of ``n_objects`` objects are grouped in."""
    return max(1, -(-n_objects // cfg.objects_per_group_task))


def group_bucket(context: tuple[Stage, IndexConfig, int], bucket: int) -> dict:
    """Task: the stacks of every series whose key falls in ``bucket`` (of ``n`` buckets),
    their manifest rows before selection, the objects' series keys and the manifest rows
    of unusable objects, all written as parts; returns the object rows' `by_kind_counts`.
    ``context`` is ``(stage, config, n)``."""
    stage, cfg, n = context
    tables = []
    for url in stage.parts("headers"):
        table = stage.read(url)
        if n > 1:
            keys = pc.coalesce(group_keys(table), table["uri"])
            table = table.filter(pa.array(_bucket_of(keys, n) == bucket))
        tables.append(table)
    headers = _unique_uris(pa.concat_tables(tables) if tables else OBJECTS.empty_table())

    rows, key_of = series_rows(headers, cfg)
    series = pa.Table.from_pylist(annotate(rows), schema=_UNSELECTED)
    studies = pc.fill_null(series["study_uid"], "")
    series = series.append_column(_BUCKET, pa.array(_bucket_of(studies, n), pa.int32()))
    stage.write(series, "series", f"part-{bucket:05d}.parquet")

    headers = headers.set_column(
        OBJECTS.get_field_index("series_key"), OBJECTS.field("series_key"),
        pa.array([key_of.get(u) for u in headers["uri"].to_pylist()], pa.string()))
    stage.write(headers.sort_by("uri"), "objects", f"part-{bucket:05d}.parquet")

    bad = headers.filter(pc.is_valid(headers["error_code"])).to_pylist()
    unusable = manifest_table([object_row(r) for r in bad])
    stage.write(unusable, "manifest", f"objects-{bucket:05d}.parquet")
    return by_kind_counts(unusable)


def select_bucket(context: tuple[Stage, IndexConfig, int], bucket: int) -> dict:
    """Task: selection in every study whose bucket is ``bucket``; its series rows written
    as a sorted part of the manifest; returns their `by_kind_counts`. ``context`` as for
    `group_bucket`."""
    stage, cfg, _ = context
    tables = [stage.read(url, filters=[(_BUCKET, "=", bucket)])
              for url in stage.parts("series")]
    series = pa.concat_tables(tables) if tables else MANIFEST.empty_table()
    rows = series.drop_columns([c for c in series.column_names if c == _BUCKET]).to_pylist()
    select_series(rows, cfg.selection)
    table = pa.Table.from_pylist(sorted(rows, key=manifest_order), schema=MANIFEST)
    stage.write(table, "manifest", f"series-{bucket:05d}.parquet")
    return by_kind_counts(table)


def series_rows(headers: pa.Table, cfg: IndexConfig) -> tuple[list[dict], dict[str, str]]:
    """Manifest rows of every stack (before selection), and the stack key of every usable
    image's URI."""
    rows: list[dict] = []
    key_of: dict[str, str] = {}
    for uid, files in iter_series(headers):
        usable = [f for f in files if f["error_code"] is None]
        if not usable:  # still one series row; its objects are reported one by one too
            rows.append(describe_unusable_series(uid, files))
            continue
        stacks = split_stacks(uid, usable, orientation_tol=cfg.stack.orientation_tol)
        excluded: dict[str, list[dict]] = {s.key: [] for s in stacks}
        for f in files:
            if f["error_code"] is not None:
                excluded[stack_of(stacks, f, orientation_tol=cfg.stack.orientation_tol).key
                         ].append(f)
        for stack in stacks:
            rows.append(describe_stack(stack, cfg.stack, cfg.selection, excluded[stack.key]))
            key_of.update((f["uri"], stack.key) for f in stack.files)
    return rows, key_of


def _bucket_of(keys: pa.Array | pa.ChunkedArray, n: int) -> np.ndarray:
    """A stable bucket in ``0..n-1`` per key (the same in every process)."""
    if n == 1:
        return np.zeros(len(keys), np.int32)
    return np.fromiter((zlib.crc32(k.encode()) % n for k in keys.to_pylist()), np.int32,
                       count=len(keys))


def _unique_uris(headers: pa.Table) -> pa.Table:
    """``headers`` with one row per URI (a batch whose worker died after writing its part
    was read again item by item)."""
    uris = headers["uri"].to_numpy(zero_copy_only=False)
    _, first = np.unique(uris, return_index=True)
    if len(first) == len(uris):
        return headers
    logger.info("dropping %d header rows read twice", len(uris) - len(first))
    return headers.take(pa.array(np.sort(first)))


# --- merging -----------------------------------------------------------------------------

#: the tables an index publishes: the stage folder of their parts -> (file, schema, order)
MERGED = {"objects": (OBJECTS_FILE, OBJECTS, operator.itemgetter("uri")),
          "manifest": (MANIFEST_FILE, MANIFEST, manifest_order)}


def merge_table(context: tuple[Stage, str], folder: str) -> int:
    """Task: the sorted parts under ``folder`` of the stage (a key of `MERGED`) merged into
    their table's file under ``out_url``; ``context`` is ``(stage, out_url)``. Returns the
    rows written. A task even for a small index: the driver's memory stays that of a
    coordinator, not of the largest table (buffers and allocator pages a merge leaves)."""
    stage, out_url = context
    file, schema, key = MERGED[folder]
    return merge_parts(stage.parts(folder), join(out_url, file), schema, key, stage.options)


def merge_parts(parts: list[str], out_url: str, schema: pa.Schema,
                key: Callable[[dict], object], options: StorageOptions | None) -> int:
    """Merge sorted Parquet ``parts`` (by ``key``) into one file at ``out_url``, written
    atomically, holding one batch of rows per part at a time. Returns the rows written."""
    written = 0
    with atomic_file(out_url, options) as f, pq.ParquetWriter(f, schema,
                                                               compression="zstd") as w:
        if len(parts) == 1:  # nothing to merge: copy batch by batch
            for batch in _batches(parts[0], options):
                w.write_table(pa.Table.from_batches([batch]).cast(schema))
                written += batch.num_rows
            return written
        chunk: list[dict] = []
        for row in heapq.merge(*(_rows(p, options) for p in parts), key=key):
            chunk.append(row)
            if len(chunk) >= _MERGE_BATCH_ROWS:
                w.write_table(pa.Table.from_pylist(chunk, schema=schema))
                written += len(chunk)
                chunk = []
        if chunk or not written:
            w.write_table(pa.Table.from_pylist(chunk, schema=schema))
            written += len(chunk)
    return written


def _batches(url: str, options: StorageOptions | None) -> Iterator[pa.RecordBatch]:
    fs, path = filesystem(url, options)
    with fs.open(path, "rb") as f:
        yield from pq.ParquetFile(f).iter_batches(batch_size=_PART_ROW_GROUP)


def _rows(url: str, options: StorageOptions | None) -> Iterator[dict]:
    for batch in _batches(url, options):
        yield from batch.to_pylist()


