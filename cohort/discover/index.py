"""`cohort index`: list an archive, read every header, group into series, select per study,
and publish the manifest.

    result = index_cohort("s3://archive/ct", "s3://work/index", IndexConfig(), options)
    report = summarize(result)  # a few lines for the console

An archive may be spread over several inputs on one storage (folders, prefixes, buckets:
``index_cohort(["s3://a/ct", "s3://b/more"], ...)``): they are listed one after the other
into one index, and a series whose files lie under several of them is one series.

Problems in the data never raise: every object and every series ends as a manifest row.
Only problems with the job itself raise (the input does not exist, the output cannot be
written).

The driver holds neither the listing nor the rows: pages of the listing go to header tasks
as they come, and the rows go through a staging folder (`cohort.discover.staged`), so its
memory is the same for a thousand objects as for millions.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cohort import __version__
from cohort.config import IndexConfig
from cohort.discover.listing import (
    ObjectInfo,
    check_inputs,
    describe_inputs,
    iter_object_pages,
)
from cohort.discover.manifest import (
    MANIFEST_FILE,
    OBJECTS_FILE,
    add_counts,
    publish_index,
    unpublish_index,
)
from cohort.discover.parallel import Runner
from cohort.discover.staged import (
    MERGED,
    STATS,
    LostRows,
    Stage,
    batches_of,
    buckets_for,
    group_bucket,
    merge_table,
    select_bucket,
    stage_headers,
)
from cohort.storage import StorageOptions, check_writable, is_local, join, read_bytes, redact

logger = logging.getLogger(__name__)

#: name of the staging folder `index_cohort` makes (and removes) under its output
STAGING_PREFIX = "_staging-"


@dataclass(frozen=True)
class ScanStats:
    """How much work the header scan did."""

    objects: int  # objects listed
    object_bytes: int  # their total size
    header_bytes_read: int  # bytes fetched to read the headers
    range_requests: int  # ranged reads made
    seconds: dict = field(default_factory=dict)  # per step: list, headers, group, write

    @property
    def read_fraction(self) -> float:
        return self.header_bytes_read / self.object_bytes if self.object_bytes else 0.0


@dataclass(frozen=True)
class IndexResult:
    """What `index_cohort` (or `build_index`) produced.

    The tables are not held: `manifest` and `objects` read them on first use (from
    ``manifest_url`` and ``objects_url``; `build_index` hands them over read). For an
    archive of millions of objects read them in pieces instead (pyarrow, DuckDB).
    """

    inputs: tuple[str, ...]  # the URLs indexed, as given
    manifest_url: str | None  # None when nothing was written (`build_index`)
    objects_url: str | None
    stats: ScanStats
    counts: dict  # `cohort.discover.manifest.by_kind_counts` of the manifest
    options: StorageOptions | None = field(default=None, repr=False)
    _tables: dict = field(default_factory=dict, repr=False, compare=False)  # read so far

    @property
    def input_url(self) -> str:
        """The input, when there is one (of several, the first)."""
        return self.inputs[0]

    @property
    def manifest(self) -> pa.Table:
        """The manifest (MANIFEST schema), read on first use."""
        return self._table("manifest", self.manifest_url)

    @property
    def objects(self) -> pa.Table:
        """Every listed object (OBJECTS schema), sorted by URI, read on first use."""
        return self._table("objects", self.objects_url)

    def _table(self, name: str, url: str | None) -> pa.Table:
        if name not in self._tables:
            assert url is not None, "build_index hands its tables over"
            self._tables[name] = pq.read_table(io.BytesIO(read_bytes(url, self.options)))
        return self._tables[name]


def build_index(inputs: str | Sequence[str], cfg: IndexConfig | None = None,
                options: StorageOptions | None = None) -> IndexResult:
    """List ``inputs`` (one URL or several on one storage), read the headers, group, check
    geometry and select; publish nothing (the parts go through a temporary folder on this
    machine) and return the tables read, for archives that fit in memory.

    Raises:
        ConfigError: inputs on different storages, or one inside another.
        StorageError: an input does not exist or cannot be listed.
    """
    cfg = cfg or IndexConfig()
    inputs = check_inputs(inputs, options)  # before starting Ray: a wrong URL fails fast
    runner = Runner(cfg.discovery)
    try:
        with tempfile.TemporaryDirectory(prefix="cohort-index-") as tmp:
            stats, tally = _build(inputs, Stage(os.path.join(tmp, "stage")), tmp, cfg,
                                  options, runner)
            tables = {"manifest": pq.read_table(os.path.join(tmp, MANIFEST_FILE)),
                      "objects": pq.read_table(os.path.join(tmp, OBJECTS_FILE))}
    finally:
        runner.close()
    return IndexResult(inputs, None, None, stats, tally, options, tables)


def index_cohort(inputs: str | Sequence[str], out_url: str, cfg: IndexConfig | None = None,
                 options: StorageOptions | None = None) -> IndexResult:
    """List, read the headers, group, check geometry and select (as `build_index`), then
    publish manifest.parquet and objects.parquet under ``out_url``. The driver's memory does
    not grow with the archive: rows go through a staging folder under ``out_url``.

    Args:
        inputs: a folder or prefix, or several on one storage (one index covers them all).

    Raises:
        ConfigError: inputs on different storages, or one inside another.
        StorageError: an input does not exist, or ``out_url`` cannot be written.
    """
    cfg = cfg or IndexConfig()
    check_writable(out_url, options)  # before any work
    inputs = check_inputs(inputs, options)
    stage = Stage(join(out_url, f"{STAGING_PREFIX}{uuid.uuid4().hex}"), options)
    runner = Runner(cfg.discovery)
    try:
        stats, tally = _build(inputs, stage, out_url, cfg, options, runner, publish=True)
    finally:
        runner.close()
        stage.remove()
    payload = {"what": "cohort index manifest", "input": describe_inputs(inputs),
               "inputs": [redact(u) for u in inputs],
               "cohort_version": __version__, **tally["all"],
               "n_objects": stats.objects, "object_bytes": stats.object_bytes,
               "header_bytes_read": stats.header_bytes_read}
    url = publish_index(out_url, payload, options)
    return IndexResult(inputs, url, join(out_url, OBJECTS_FILE), stats, tally, options)


def _build(inputs: tuple[str, ...], stage: Stage, out_url: str, cfg: IndexConfig,
           options: StorageOptions | None, runner: Runner, *, publish: bool = False
           ) -> tuple[ScanStats, dict]:
    """The index of ``inputs`` through ``stage``, merged into manifest.parquet and
    objects.parquet under ``out_url``: its stats and `by_kind_counts`."""
    d = cfg.discovery
    # a local staging folder is seen by this machine's workers only
    pin = is_local(stage.url)
    seconds = {"list": 0.0}
    t0 = time.perf_counter()
    pages = _timed(_pages(inputs, stage, options, d.list_page_objects, runner, pin), seconds)
    totals = dict.fromkeys(STATS.names, 0)

    def add(_: int, table: pa.Table) -> None:
        for name in STATS.names:
            totals[name] += int(pc.sum(table[name]).as_py() or 0)

    # the inputs share one storage (`check_inputs`): the first one names its filesystem
    n_batches = runner.for_each_batch(
        stage_headers, (inputs[0], options, d, stage), batches_of(pages, d.files_per_task),
        LostRows(stage), STATS, add, what="header batches", pin=pin)
    seconds["list"] = round(seconds["list"], 3)
    seconds["headers"] = round(time.perf_counter() - t0, 3)
    logger.info("read %d headers in %d tasks", totals["objects"], n_batches)

    t0 = time.perf_counter()
    n = buckets_for(totals["objects"], d)
    context = (stage, cfg, n)
    # in tasks even for one bucket: the driver never holds a bucket's rows
    tally = functools.reduce(add_counts, [
        *runner.map(group_bucket, context, list(range(n)), pin=pin, here_if_one=False),
        *runner.map(select_bucket, context, list(range(n)), pin=pin, here_if_one=False)])
    seconds["group"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    if publish:
        unpublish_index(out_url, options)
    runner.map(merge_table, (stage, out_url), list(MERGED), pin=pin, here_if_one=False)
    seconds["write"] = round(time.perf_counter() - t0, 3)

    stats = ScanStats(objects=totals["objects"], object_bytes=totals["object_bytes"],
                      header_bytes_read=totals["header_bytes_read"],
                      range_requests=totals["range_requests"], seconds=seconds)
    logger.info("indexed %d objects into %d manifest rows in %d bucket(s)", stats.objects,
                tally["all"]["rows"], n)
    return stats, tally


def _pages(inputs: tuple[str, ...], stage: Stage, options: StorageOptions | None,
           page_objects: int, runner: Runner, pin: bool) -> Iterator[list[ObjectInfo]]:
    """The listing of every input in pages, one input after the other (a page at a time)."""
    for i, url in enumerate(inputs):
        # a local folder lists faster here than tasks start; object stores list in parallel
        parallel = None if is_local(url) else functools.partial(runner.map, pin=pin)
        # each input's listing tasks write their parts in a folder of its own
        stage_url = stage.url if len(inputs) == 1 else join(stage.url, f"input-{i:03d}")
        yield from iter_object_pages(url, options, page_objects=page_objects,
                                     parallel_map=parallel, slots=runner.slots,
                                     stage_url=stage_url)


def _timed(pages: Iterator[list], seconds: dict) -> Iterator[list]:
    """``pages``, adding the time spent listing to ``seconds["list"]``."""
    while True:
        t0 = time.perf_counter()
        page = next(pages, None)
        seconds["list"] += time.perf_counter() - t0
        if page is None:
            return
        yield page


def summarize(result: IndexResult) -> str:
    """A short human summary: objects, rows by status and code, where the manifest is."""
    c, sc = result.counts["all"], result.counts["series"]
    s = result.stats
    lines = [
        f"cohort index: {s.objects} objects ({_size(s.object_bytes)}) under "
        f"{describe_inputs(result.inputs)}",
        f"  series: {sc['rows']} ("
        + ", ".join(f"{k} {v}" for k, v in sc["by_status"].items()) + ")",
    ]
    for status in ("not_selected", "failed"):
        codes = {k.split(":", 1)[1]: v for k, v in sc["by_status_and_code"].items()
                 if k.startswith(status + ":")}
        if codes:
            lines.append(f"    {status}: " + ", ".join(f"{k} {v}" for k, v in codes.items()))
    other = c["by_kind"].get("object", 0)
    if other:
        oc = result.counts["object"]["by_status_and_code"]
        lines.append(f"  other objects: {other} ("
                     + ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in oc.items()) + ")")
    lines.append(f"  headers: {_size(s.header_bytes_read)} read of {_size(s.object_bytes)} "
                 f"({100 * s.read_fraction:.1f}%) in {s.range_requests} range requests, "
                 + ", ".join(f"{k} {v:.1f} s" for k, v in s.seconds.items()))
    where = result.manifest_url or "(not written)"
    lines.append(f"  manifest: {redact(where)} ({c['rows']} rows)")
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"

