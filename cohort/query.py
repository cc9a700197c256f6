"""`cohort query`: SQL (DuckDB) over the published tables of an output URL.

Views, each over every published run (runs without their marker are invisible):

    series       one row per series: its newest row (a retried series shows its last run)
    series_all   every row of every run
    landmarks    six rows per ok series, from the run of its newest series row
    segments     eight rows per ok series with volumes, likewise
    runs         one row per published run: id, counts, model, code version, seconds

Tables are read with pyarrow through fsspec (local folders and s3:// alike, no DuckDB
extension needed) and registered in an in-memory DuckDB connection.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from cohort.storage import StorageOptions
from cohort.write.runs import latest_series, published_runs, read_table, run_manifest


def connect(out_url: str, options: StorageOptions | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views of the module docstring."""
    runs = published_runs(out_url, options)
    con = duckdb.connect()
    series_all = read_table(out_url, "series", options, runs)
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
    records = []
    for run_id in runs:
        m = run_manifest(out_url, run_id, options)
        c = m.get("counts", {})
        records.append({"run_id": run_id, "ok": c.get("ok", 0), "skipped": c.get("skipped", 0),
                        "error": c.get("error", 0),
                        "finished_earlier": c.get("finished_earlier", 0),
                        "model": m.get("model", {}).get("name"),
                        "model_sha256": m.get("model", {}).get("sha256"),
                        "model_trained_on": m.get("model", {}).get("trained_on"),
                        "code_version": m.get("code_version"), "seconds": m.get("seconds"),
                        "scans_per_minute": m.get("scans_per_minute")})
    schema = pa.schema([("run_id", pa.string()), ("ok", pa.int64()), ("skipped", pa.int64()),
                        ("error", pa.int64()), ("finished_earlier", pa.int64()),
                        ("model", pa.string()), ("model_sha256", pa.string()),
                        ("model_trained_on", pa.string()), ("code_version", pa.string()),
                        ("seconds", pa.float64()), ("scans_per_minute", pa.float64())])
    con.register("runs", pa.Table.from_pylist(records, schema=schema))
    return con


def query(out_url: str, sql: str, options: StorageOptions | None = None) -> pa.Table:
    """The result of ``sql`` over the views, as an Arrow table.

    Raises:
        duckdb.Error: the SQL is not valid for these views.
    """
    con = connect(out_url, options)
    return con.sql(sql).to_arrow_table()
