"""`cohort query`: SQL (DuckDB) over the published tables of an output URL.

Views, each over every published run (runs without their marker are invisible):

    series       one row per series: its newest row (a retried series shows its last run)
    series_all   every row of every run
    landmarks    six rows per ok series, from the run of its newest series row
    segments     eight rows per ok series with volumes, likewise
    runs         one row per published run: id, counts, model, code version, seconds and
                 scans per minute; ``interrupted`` for a run stopped before it ended whose
                 finished series a later run published (`cohort.write.recovery`): its
                 ``seconds`` and ``scans_per_minute`` are NULL (it never ended), and
                 ``recovered_by`` / ``recovered_at`` / ``not_written`` say which run took
                 over, when, and how many of its series it left unwritten (NULL: unknown)
    patient_changes
                 change over time: one row per patient and segment for every patient with
                 two or more dated studies measured (`PATIENT_CHANGES`)

In the series views, ``qc_picture`` and ``label_map`` are relative to the output URL
(``runs/<run_id>/qc/<series>.png``); the tables store them relative to their run folder.

Tables are read with pyarrow through fsspec (local folders and s3:// alike, no DuckDB
extension needed) and registered in an in-memory DuckDB connection.
"""

from __future__ import annotations

import os
import tempfile

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from cohort.storage import StorageOptions
from cohort.write.runs import RUNS, latest_series, published_runs, read_table, run_manifest

VIEWS = ("series", "series_all", "landmarks", "segments", "runs", "patient_changes")
RUN_FILES = ("qc_picture", "label_map")  # series columns stored relative to their run folder
_NESTED = {"list", "struct", "map", "array", "union"}  # DuckDB type ids JSON writes as such
_FLOATS = {"double", "float"}


#: Change over time, per patient and segment, from the newest series rows. A study counts
#: once it has a study date and volumes (an ok series with a calcium mask); a study measured
#: by several series (re-runs keep only the newest row; several selected stacks) counts its
#: first series key. The first and the last study by date are compared:
#:
#: * ``years``: days between them / 365.25; ``annual_rate_mm3_per_year`` is null when both
#:   lie on the same day;
#: * ``same_model``: the same landmark model (sha256) and the same mask source (segmenter
#:   name and checksum, or external masks) measured both; a change measured by two models
#:   mixes biological change with the models' difference;
#: * ``change_low_mm3`` / ``change_high_mm3``: the widest change the two volume intervals
#:   allow (segmenter masks only; null for external masks), and
#:   ``change_beyond_intervals``: the intervals do not overlap, i.e. the sign of the change
#:   holds whatever the measurement uncertainty.
PATIENT_CHANGES = """
WITH measured AS (
    SELECT s.patient_key, s.study_key, s.series_key,
           COALESCE(TRY_STRPTIME(s.study_date, '%Y%m%d'),
                    TRY_STRPTIME(s.study_date, '%Y-%m-%d'),
                    TRY_STRPTIME(s.study_date, '%Y.%m.%d'))::DATE AS study_date,
           s.model_name, s.model_sha256, g.mask_source,
           g.segment, g.side, g.kind, g.volume_mm3, g.volume_mm3_low, g.volume_mm3_high
    FROM segments AS g JOIN series AS s USING (run_id, series_key)
    WHERE s.status = 'ok' AND s.patient_key IS NOT NULL AND g.volume_mm3 IS NOT NULL
), per_study AS (
    SELECT * FROM measured WHERE study_date IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY patient_key, COALESCE(study_key, series_key),
                               segment ORDER BY series_key) = 1
), ranked AS (
    SELECT *,
           row_number() OVER (PARTITION BY patient_key, segment
                              ORDER BY study_date, series_key) AS from_first,
           row_number() OVER (PARTITION BY patient_key, segment
                              ORDER BY study_date DESC, series_key DESC) AS from_last,
           count(*) OVER (PARTITION BY patient_key, segment) AS n_studies
    FROM per_study
)
SELECT f.patient_key, f.segment, f.side, f.kind, f.n_studies,
       f.study_date AS first_study_date, l.study_date AS last_study_date,
       (l.study_date - f.study_date) / 365.25 AS years,
       f.volume_mm3 AS first_volume_mm3, l.volume_mm3 AS last_volume_mm3,
       l.volume_mm3 - f.volume_mm3 AS change_mm3,
       CASE WHEN l.study_date > f.study_date
            THEN (l.volume_mm3 - f.volume_mm3) / ((l.study_date - f.study_date) / 365.25)
       END AS annual_rate_mm3_per_year,
       l.volume_mm3_low - f.volume_mm3_high AS change_low_mm3,
       l.volume_mm3_high - f.volume_mm3_low AS change_high_mm3,
       CASE WHEN f.volume_mm3_low IS NOT NULL AND l.volume_mm3_low IS NOT NULL
            THEN l.volume_mm3_low > f.volume_mm3_high OR l.volume_mm3_high < f.volume_mm3_low
       END AS change_beyond_intervals,
       f.model_sha256 IS NOT DISTINCT FROM l.model_sha256
           AND f.mask_source IS NOT DISTINCT FROM l.mask_source AS same_model,
       f.series_key AS first_series_key, l.series_key AS last_series_key,
       f.model_name AS first_model, l.model_name AS last_model,
       f.mask_source AS first_mask_source, l.mask_source AS last_mask_source
FROM ranked AS f JOIN ranked AS l USING (patient_key, segment)
WHERE f.from_first = 1 AND l.from_last = 1 AND f.n_studies >= 2
ORDER BY f.patient_key, f.side, f.kind
"""


def connect(out_url: str, options: StorageOptions | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views of the module docstring."""
    runs = published_runs(out_url, options)
    con = duckdb.connect()
    series_all = _paths_from_out(read_table(out_url, "series", options, runs))
    series = latest_series(series_all)
    keep = {(k, r) for k, r in zip(series.column("series_key").to_pylist(),
                                   series.column("run_id").to_pylist(), strict=True)}
    con.register("series_all", series_all)
    con.register("series", series)
    for name in ("landmarks", "segments"):
        table = read_table(out_url, name, options, runs)
        mask = [(k, r) in keep for k, r in zip(table.column("series_key").to_pylist(),
                                               table.column("run_id").to_pylist(),
                                               strict=True)]
        con.register(name, table.filter(pa.array(mask, type=pa.bool_())))
    con.register("runs", _runs_table([(r, run_manifest(out_url, r, options)) for r in runs]))
    con.execute(f"CREATE VIEW patient_changes AS {PATIENT_CHANGES}")
    return con


#: the runs view's columns
_RUNS_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("ok", pa.int64()), ("skipped", pa.int64()), ("error", pa.int64()),
    ("finished_earlier", pa.int64()), ("model", pa.string()), ("model_sha256", pa.string()),
    ("model_trained_on", pa.string()), ("code_version", pa.string()),
    ("seconds", pa.float64()), ("scans_per_minute", pa.float64()),
    ("interrupted", pa.bool_()), ("recovered_by", pa.string()), ("recovered_at", pa.string()),
    ("not_written", pa.int64()),
])


def _runs_table(manifests: list[tuple[str, dict]]) -> pa.Table:
    """The runs view from ``(run id, manifest)`` pairs. An interrupted run never ended: its
    seconds and rate are NULL, never a number its marker does not hold."""
    records = []
    for run_id, m in manifests:
        c = m.get("counts") or {}
        model = m.get("model") or {}
        stopped = m.get("interrupted")
        records.append({
            "run_id": run_id, "ok": c.get("ok", 0), "skipped": c.get("skipped", 0),
            "error": c.get("error", 0), "finished_earlier": c.get("finished_earlier", 0),
            "model": model.get("name"), "model_sha256": model.get("sha256"),
            "model_trained_on": model.get("trained_on"), "code_version": m.get("code_version"),
            "seconds": None if stopped else m.get("seconds"),
            "scans_per_minute": None if stopped else m.get("scans_per_minute"),
            "interrupted": bool(stopped),
            "recovered_by": (stopped or {}).get("recovered_by"),
            "recovered_at": (stopped or {}).get("recovered_at"),
            "not_written": (stopped or {}).get("not_written")})
    return pa.Table.from_pylist(records, schema=_RUNS_SCHEMA)


def query(out_url: str, sql: str, options: StorageOptions | None = None) -> pa.Table:
    """The result of ``sql`` over the views, as an Arrow table.

    Raises:
        duckdb.Error: the SQL is not valid for these views.
    """
    con = connect(out_url, options)
    return con.sql(sql).to_arrow_table()


def as_text(rel: duckdb.DuckDBPyRelation, *, full: bool) -> str:
    """The result as a plain-text table; values are cut at 60 characters unless ``full``.
    NULL reads ``NULL`` in every column, as in DuckDB (pandas would print NaN, None or
    <NA> by type, and NaN for a NULL number is a number nobody measured); a NaN stays NaN."""
    table = rel.to_arrow_table()
    frame = duckdb.from_arrow(table).fetchdf()
    for i, column in enumerate(table.columns):
        if column.null_count:
            nulls = column.is_null().to_numpy(zero_copy_only=False)
            frame.isetitem(i, frame.iloc[:, i].astype(object).where(~nulls, "NULL"))
    return frame.to_string(index=False, max_colwidth=None if full else 60)


def as_csv(rel: duckdb.DuckDBPyRelation) -> str:
    """The result as CSV with a header, written by DuckDB: integers as integers, lists,
    structs and maps as JSON in their cell, NULL as an empty cell, quotes only where needed."""
    flat = rel.query("cohort_result", f"SELECT {_replace(rel, _NESTED, 'to_json({0})')} "
                                      "FROM cohort_result")
    with tempfile.TemporaryDirectory(prefix="cohort-query-") as folder:
        path = os.path.join(folder, "result.csv")
        flat.to_csv(path)
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\n")


def as_json_lines(rel: duckdb.DuckDBPyRelation) -> str:
    """The result as JSON Lines, one object per row, written by DuckDB: lists as arrays,
    integers as integers, NULL as null; NaN and infinities as null (JSON has neither)."""
    finite = _replace(rel, _FLOATS, "CASE WHEN isfinite({0}) THEN {0} END")
    rows = rel.query("cohort_result", f"SELECT to_json(cohort_row)::VARCHAR FROM (SELECT "
                                      f"{finite} FROM cohort_result) AS cohort_row").fetchall()
    return "\n".join(row[0] for row in rows)


def _replace(rel: duckdb.DuckDBPyRelation, kinds: set[str], template: str) -> str:
    """``*``, with the columns whose DuckDB type id is in ``kinds`` replaced by ``template``
    applied to them."""
    names = ['"' + name.replace('"', '""') + '"'
             for name, kind in zip(rel.columns, rel.types, strict=True) if kind.id in kinds]
    if not names:
        return "*"
    return "* REPLACE (" + ", ".join(f"{template.format(n)} AS {n}" for n in names) + ")"


def _paths_from_out(table: pa.Table) -> pa.Table:
    """``qc_picture`` and ``label_map`` relative to the output URL, not the run folder."""
    for name in RUN_FILES:
        stored = table.column(name)
        from_out = pc.binary_join_element_wise(RUNS, table.column("run_id"), stored, "/")
        # a path already relative to the output URL is kept, never prefixed twice
        fixed = pc.if_else(pc.starts_with(stored, RUNS + "/"), stored, from_out)
        table = table.set_column(table.schema.get_field_index(name),
                                 table.schema.field(name), fixed)
    return table
