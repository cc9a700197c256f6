"""The published results of `cohort run`: run folders, their tables, and what is finished.

Layout under the output URL::

    index/                          the manifest, when the job had to index the input
    runs/<run_id>/series/part-*.parquet
    runs/<run_id>/landmarks/part-*.parquet
    runs/<run_id>/segments/part-*.parquet
    runs/<run_id>/qc/<series>.png   QC pictures; labels/<series>.nii.gz label maps
    runs/<run_id>/_run.json         what the run is (inputs, model, configuration), written
                                    before its first part
    runs/<run_id>/_SUCCESS.json     the run manifest, written last: the run is published

A part is committed by its ``series`` file, written after the part's ``landmarks`` and
``segments`` files. A run folder without ``_SUCCESS.json`` (a run killed midway) is ignored
by every reader; the next run on the output publishes the parts it committed as an
interrupted run and processes only the rest (`cohort.write.recovery`). A series appears in
at most one published run unless a later run was asked to retry it (``--retry-failed``);
`latest_series` keeps the newest row per series, which is what `cohort query` calls
``series``.
"""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from cohort.anatomy import LANDMARK_KINDS, LANDMARKS, SEGMENT_KINDS, SEGMENTS, SIDES
from cohort.schemas import LANDMARK_ROWS, SEGMENT_ROWS, SERIES
from cohort.storage import StorageOptions, filesystem, join, read_bytes, write_bytes

logger = logging.getLogger(__name__)

RUNS = "runs"
MARKER = "_SUCCESS.json"
#: what a run is, written before its first part (a killed run's record for its recovery)
RUN_RECORD = "_run.json"
TABLES = {"series": SERIES, "landmarks": LANDMARK_ROWS, "segments": SEGMENT_ROWS}
#: codes of an ok row whose calcium mask was missing or unusable (cohort.job.prepare)
MASK_PROBLEM_CODES = frozenset({"mask_missing", "mask_mismatch", "invalid_nifti"})


def new_run_id() -> str:
    """Sortable by time, unique across concurrent runs: 20261122T101900Z-3fa9c2."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def run_url(out_url: str, run_id: str) -> str:
    return join(out_url, RUNS, run_id)


def published_runs(out_url: str, options: StorageOptions | None = None) -> list[str]:
    """Run ids with a marker, oldest first."""
    fs, root = filesystem(join(out_url, RUNS), options)
    if not fs.exists(root):
        return []
    ids = []
    for entry in fs.ls(root, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if fs.exists(f"{entry.rstrip('/')}/{MARKER}"):
            ids.append(name)
    return sorted(ids)


def unfinished_runs(out_url: str, options: StorageOptions | None = None) -> list[str]:
    fs, root = filesystem(join(out_url, RUNS), options)
    if not fs.exists(root):
        return []
    done = set(published_runs(out_url, options))
    names = [e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(root, detail=False)]
    return sorted(n for n in names if n not in done)


def run_manifest(out_url: str, run_id: str, options: StorageOptions | None = None) -> dict:
    return json.loads(read_bytes(join(run_url(out_url, run_id), MARKER), options))


def read_table(out_url: str, table: str, options: StorageOptions | None = None,
               runs: Iterable[str] | None = None,
               columns: Sequence[str] | None = None) -> pa.Table:
    """One table over the published runs (all rows, every run), with its schema; only
    ``columns`` of it when given (what a caller needs of 100,000 rows, not all of them)."""
    schema = TABLES[table]
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    parts = []
    fs, _ = filesystem(out_url, options)
    for run_id in (published_runs(out_url, options) if runs is None else runs):
        _, folder = filesystem(join(run_url(out_url, run_id), table), options)
        if not fs.exists(folder):
            continue
        for path in sorted(fs.find(folder)):
            if path.endswith(".parquet"):
                with fs.open(path, "rb") as f:
                    parts.append(_read_part(f, schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _read_part(f, schema: pa.Schema) -> pa.Table:
    """A part's columns of ``schema``; a column a part written by an older version lacks is
    null."""
    have = set(pq.read_schema(f).names)
    f.seek(0)
    table = pq.read_table(f, columns=[n for n in schema.names if n in have])
    for name in schema.names:
        if name not in have:
            table = table.append_column(schema.field(name),
                                        pa.nulls(table.num_rows, schema.field(name).type))
    return table.select(schema.names).cast(schema)


def latest_series(table: pa.Table) -> pa.Table:
    """The newest row (by run id) per series key."""
    if table.num_rows == 0:
        return table
    import duckdb

    con = duckdb.connect()
    con.register("all_rows", table)
    return con.sql("""SELECT * FROM all_rows QUALIFY row_number() OVER
                      (PARTITION BY series_key ORDER BY run_id DESC) = 1
                      ORDER BY series_key""").to_arrow_table()


#: what `finished` reads of the published series rows
_FINISHED_COLUMNS = ("run_id", "series_key", "status", "model_sha256", "volumes_computed",
                     "error_code", "mask_source")


@dataclass(frozen=True)
class Finished:
    """Series keys a new run leaves alone, as two key arrays (a few MB at 100,000 series,
    never the rows): ``done`` whatever the index says now, and ``skipped``, left alone while
    the current index still does not select them (`todo` needs the index's status)."""

    done: pa.Array
    skipped: pa.Array

    def todo(self, keys: pa.Array, statuses: pa.Array) -> pa.Array:
        """Which of the manifest rows (``series_key``, ``status``) still need doing."""
        import pyarrow.compute as pc

        if len(keys) == 0:
            return pa.array([], pa.bool_())
        left_alone = pc.or_(pc.is_in(keys, value_set=self.done),
                            pc.and_(pc.is_in(keys, value_set=self.skipped),
                                    pc.not_equal(statuses, "selected")))
        return pc.invert(pc.fill_null(left_alone, False))

    def __len__(self) -> int:
        return len(self.done) + len(self.skipped)


def finished(out_url: str, options: StorageOptions | None = None, *,
             retry_failed: bool = False, model_sha256: str | None = None,
             need_volumes: bool = False, mask_source: str | None = None) -> Finished:
    """The series a new run leaves alone, judged by each series' newest published row:

    - ``error``: left alone unless ``retry_failed``;
    - ``skipped``: left alone while the current index still does not select it;
    - ``ok``: left alone when it was made by the same model (``model_sha256``, None: any)
      and, when this run has masks (``need_volumes``), has its volumes. A row with volumes
      also serves a run without masks: a forgotten ``--masks`` never replaces volumes. An
      ``ok`` row whose mask was missing or unusable (a ``mask_*`` code) counts as failed:
      left alone unless ``retry_failed`` (e.g. after fixing the masks).

    With the calcium segmenter (``mask_source``, its ``segmenter <name> sha256:...``), an
    ``ok`` row whose volumes another segmenter made is processed again; volumes from
    external masks are kept (they win over any segmenter).

    So the same command again processes nothing, while a new model or segmenter, masks
    added later or a series the index now selects are processed. Only the columns the rule
    needs are read, and the rule runs in DuckDB.
    """
    import duckdb

    table = read_table(out_url, "series", options, columns=_FINISHED_COLUMNS)
    con = duckdb.connect()
    con.register("all_rows", table)
    problems = ", ".join(f"'{c}'" for c in sorted(MASK_PROBLEM_CODES))
    failed = (f"(status = 'error' OR (error_code IN ({problems}) "
              "AND NOT coalesce(volumes_computed, false)))")
    ok_kept = ("((CAST($sha AS VARCHAR) IS NULL OR model_sha256 = $sha) "
               "AND (coalesce(volumes_computed, false) OR NOT $need) "
               "AND NOT (coalesce(volumes_computed, false) AND CAST($src AS VARCHAR) IS NOT NULL "
               "AND mask_source IS NOT NULL AND mask_source NOT IN ('external', $src)))")
    latest = ("SELECT * FROM all_rows QUALIFY row_number() OVER "
              "(PARTITION BY series_key ORDER BY run_id DESC) = 1")
    params = {"sha": model_sha256, "need": need_volumes, "src": mask_source,
              "retry": retry_failed}
    done = con.sql(f"""SELECT series_key FROM ({latest}) WHERE series_key IS NOT NULL AND
        CASE WHEN {failed} THEN NOT $retry WHEN status = 'skipped' THEN false
             ELSE {ok_kept} END""", params=params).to_arrow_table().column(0)
    skipped = con.sql(f"""SELECT series_key FROM ({latest})
        WHERE status = 'skipped' AND NOT {failed}""").to_arrow_table().column(0)
    return Finished(done.combine_chunks() if done.num_chunks else pa.array([], pa.string()),
                    skipped.combine_chunks() if skipped.num_chunks
                    else pa.array([], pa.string()))


def finished_keys(out_url: str, options: StorageOptions | None = None, *,
                  retry_failed: bool = False, model_sha256: str | None = None,
                  need_volumes: bool = False, selected: frozenset[str] = frozenset(),
                  mask_source: str | None = None) -> set[str]:
    """`finished` as a set of keys, ``selected`` being the keys the index selects now
    (for small outputs and tests; the job uses `Finished.todo` on the manifest's rows)."""
    f = finished(out_url, options, retry_failed=retry_failed, model_sha256=model_sha256,
                 need_volumes=need_volumes, mask_source=mask_source)
    return set(f.done.to_pylist()) | (set(f.skipped.to_pylist()) - set(selected))


def long_rows(row: dict) -> tuple[list[dict], list[dict]]:
    """The landmarks and segments rows of one series row (none unless it is ok)."""
    if row.get("status") != "ok":
        return [], []
    base = {k: row.get(k) for k in ("run_id", "series_key", "series_uid", "patient_key")}
    low = set(row.get("low_confidence_landmarks") or ())
    marks = []
    for name in LANDMARKS:
        side, kind = _split(name, LANDMARK_KINDS)
        marks.append({**base, "landmark": name, "side": side, "kind": kind,
                      "slice": row.get(f"{name}_slice"),
                      "volume_slice": row.get(f"{name}_volume_slice"),
                      "z_mm": row.get(f"{name}_z_mm"),
                      "probability": row.get(f"{name}_prob"), "low_confidence": name in low})
    segs = []
    if row.get("volumes_computed"):
        for name in SEGMENTS:
            side, kind = _split(name, SEGMENT_KINDS)
            segs.append({**base, "segment": name, "side": side, "kind": kind,
                         "volume_mm3": row.get(f"{name}_mm3"),
                         "voxels": row.get(f"{name}_voxels"),
                         "plaques": row.get(f"{name}_plaques"),
                         "peak_hu": row.get(f"{name}_peak_hu"),
                         "volume_mm3_low": row.get(f"{name}_mm3_low"),
                         "volume_mm3_high": row.get(f"{name}_mm3_high"),
                         "mask_source": row.get("mask_source"),
                         "risk_group": row.get("risk_group")})
    return marks, segs


def _split(name: str, kinds: tuple[str, ...]) -> tuple[str, str]:
    for side in SIDES:
        if name.startswith(side + "_") and name[len(side) + 1:] in kinds:
            return side, name[len(side) + 1:]
    raise ValueError(f"{name} is not <side>_<kind>")


def safe_name(key: str) -> str:
    """A file name for a series key (UIDs are digits and dots; stack keys add '#k'): its
    pictures, label maps, masks and DICOM files in a run folder are named by it."""
    return re.sub(r"[^0-9A-Za-z._-]", "_", key)


def part_name(number: int) -> str:
    """The file name of a run's part ``number`` in each of its tables."""
    return f"part-{number:05d}.parquet"


def _parquet(rows: list[dict], schema: pa.Schema) -> bytes:
    names = set(schema.names)
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k in names} for r in rows],
                                 schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


class RunWriter:
    """Writes a run's three tables in parts as rows arrive: a part every ``part_rows``
    series, or sooner once its first row waited ``part_seconds`` (a killed driver loses at
    most that much finished work). The run is published by `publish` (the marker), never
    before; `begin` records what the run is, for the recovery of a killed run."""

    def __init__(self, out_url: str, run_id: str, options: StorageOptions | None = None,
                 part_rows: int = 500, part_seconds: float | None = None):
        self.url = run_url(out_url, run_id)
        self.options = options
        self.part_rows = part_rows
        self.part_seconds = part_seconds
        self.pending: list[dict] = []
        self.parts = 0
        self.rows = 0
        self._since = 0.0  # when the first pending row arrived (time.monotonic)

    def begin(self, record: dict) -> None:
        """Write ``record`` (what the run is: inputs, model, configuration) before any part."""
        write_bytes(join(self.url, RUN_RECORD), json.dumps(record, indent=1).encode(),
                    self.options)

    def add(self, row: dict) -> None:
        if not self.pending:
            self._since = time.monotonic()
        self.pending.append(row)
        waited = self.part_seconds is not None and \
            time.monotonic() - self._since >= self.part_seconds
        if len(self.pending) >= self.part_rows or waited:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        marks, segs = [], []
        for row in self.pending:
            m, s = long_rows(row)
            marks += m
            segs += s
        name = part_name(self.parts)
        # the series file last: it commits the part (a part without it is not the run's)
        for table, rows in (("landmarks", marks), ("segments", segs), ("series", self.pending)):
            write_bytes(join(self.url, table, name), _parquet(rows, TABLES[table]),
                        self.options)
        self.parts += 1
        self.rows += len(self.pending)
        self.pending = []

    def publish(self, payload: dict) -> str:
        from cohort.storage import publish_marker

        self.flush()
        return publish_marker(self.url, payload, self.options, name=MARKER)
