"""`cohort index`: list an archive, read every header, group into series, select per study,
and publish the manifest.

    result = index_cohort("s3://archive/ct", "s3://work/index", IndexConfig(), options)
    report = summarize(result)  # a few lines for the console

Problems in the data never raise: every object and every series ends as a manifest row.
Only problems with the job itself raise (the input does not exist, the output cannot be
written).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from cohort import __version__
from cohort.config import IndexConfig
from cohort.discover.grouping import iter_series, split_stacks, stack_of
from cohort.discover.headers import lost_row, read_headers
from cohort.discover.listing import check_input, list_objects
from cohort.discover.manifest import counts, manifest_table, object_row, write_index
from cohort.discover.parallel import Runner
from cohort.discover.selection import select_series
from cohort.discover.series import describe_stack, describe_unusable_series
from cohort.schemas import OBJECTS
from cohort.storage import StorageOptions, check_writable, is_local, redact

logger = logging.getLogger(__name__)


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
    """What `index_cohort` produced."""

    input_url: str
    manifest_url: str | None  # None when nothing was written (`build_index`)
    manifest: pa.Table  # MANIFEST schema
    objects: pa.Table  # OBJECTS schema
    stats: ScanStats


def build_index(input_url: str, cfg: IndexConfig | None = None,
                options: StorageOptions | None = None) -> IndexResult:
    """List ``input_url``, read the headers, group, check geometry and select; write nothing.

    Raises:
        StorageError: the input does not exist or cannot be listed.
    """
    cfg = cfg or IndexConfig()
    check_input(input_url, options)  # before starting Ray: a wrong URL fails in a second
    runner = Runner(cfg.discovery)
    try:
        return _build(input_url, cfg, options, runner)
    finally:
        runner.close()


def index_cohort(input_url: str, out_url: str, cfg: IndexConfig | None = None,
                 options: StorageOptions | None = None) -> IndexResult:
    """`build_index`, then publish manifest.parquet and objects.parquet under ``out_url``.

    Raises:
        StorageError: the input does not exist, or ``out_url`` cannot be written.
    """
    check_writable(out_url, options)  # before any work
    result = build_index(input_url, cfg, options)
    t0 = time.perf_counter()
    payload = {"what": "cohort index manifest", "input": redact(input_url),
               "cohort_version": __version__, **counts(result.manifest),
               "n_objects": result.stats.objects, "object_bytes": result.stats.object_bytes,
               "header_bytes_read": result.stats.header_bytes_read}
    url = write_index(out_url, result.manifest, result.objects, payload, options)
    seconds = {**result.stats.seconds, "write": round(time.perf_counter() - t0, 3)}
    stats = ScanStats(result.stats.objects, result.stats.object_bytes,
                      result.stats.header_bytes_read, result.stats.range_requests, seconds)
    return IndexResult(input_url, url, result.manifest, result.objects, stats)


def _build(input_url: str, cfg: IndexConfig, options: StorageOptions | None,
           runner: Runner) -> IndexResult:
    seconds = {}
    t0 = time.perf_counter()
    # a local folder lists faster here than tasks start; object stores list in parallel
    parallel = None if is_local(input_url) else runner.map
    objects = list_objects(input_url, options, parallel_map=parallel, slots=runner.slots)
    seconds["list"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    n = cfg.discovery.files_per_task
    batches = [objects[i:i + n] for i in range(0, len(objects), n)]
    logger.info("reading %d headers in %d tasks", len(objects), len(batches))
    headers = runner.run_batches(read_headers, (input_url, options, cfg.discovery), batches,
                                 lost_row, OBJECTS, what="header batches")
    seconds["headers"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    rows, key_of = _series_rows(headers, cfg)
    select_series(rows, cfg.selection)
    rows += [object_row(r) for r in _unusable(headers)]
    manifest = manifest_table(rows)
    headers = headers.set_column(
        OBJECTS.get_field_index("series_key"), OBJECTS.field("series_key"),
        pa.array([key_of.get(u) for u in headers["uri"].to_pylist()], pa.string()))
    seconds["group"] = round(time.perf_counter() - t0, 3)

    stats = ScanStats(
        objects=len(objects), object_bytes=sum(o.size for o in objects),
        header_bytes_read=int(pc.sum(headers["bytes_read"]).as_py() or 0),
        range_requests=int(pc.sum(headers["range_requests"]).as_py() or 0),
        seconds=seconds)
    logger.info("indexed %d objects into %d manifest rows", len(objects), manifest.num_rows)
    return IndexResult(input_url, None, manifest, headers, stats)


def _series_rows(headers: pa.Table, cfg: IndexConfig) -> tuple[list[dict], dict[str, str]]:
    """Manifest rows of every stack, and the stack key of every usable image's URI."""
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


def _unusable(headers: pa.Table) -> list[dict]:
    bad = headers.filter(pc.is_valid(headers["error_code"]))
    return bad.to_pylist()


def summarize(result: IndexResult) -> str:
    """A short human summary: objects, rows by status and code, where the manifest is."""
    c = counts(result.manifest)
    s = result.stats
    series = result.manifest.filter(pc.equal(result.manifest["kind"], "series"))
    sc = counts(series)
    lines = [
        f"cohort index: {s.objects} objects ({_size(s.object_bytes)}) under "
        f"{redact(result.input_url)}",
        f"  series: {series.num_rows} ("
        + ", ".join(f"{k} {v}" for k, v in sc["by_status"].items()) + ")",
    ]
    for status in ("not_selected", "failed"):
        codes = {k.split(":", 1)[1]: v for k, v in sc["by_status_and_code"].items()
                 if k.startswith(status + ":")}
        if codes:
            lines.append(f"    {status}: " + ", ".join(f"{k} {v}" for k, v in codes.items()))
    other = c["by_kind"].get("object", 0)
    if other:
        obj = result.manifest.filter(pc.equal(result.manifest["kind"], "object"))
        oc = counts(obj)["by_status_and_code"]
        lines.append(f"  other objects: {other} ("
                     + ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in oc.items()) + ")")
    lines.append(f"  headers: {_size(s.header_bytes_read)} read of {_size(s.object_bytes)} "
                 f"({100 * s.read_fraction:.1f}%) in {s.range_requests} range requests, "
                 + ", ".join(f"{k} {v:.1f} s" for k, v in s.seconds.items()))
    where = result.manifest_url or "(not written)"
    lines.append(f"  manifest: {redact(where)} ({result.manifest.num_rows} rows)")
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"

