"""`cohort query`: SQL (DuckDB) over the published tables of a run output."""

from __future__ import annotations

import argparse

from cohort.cli.options import storage_options

NAME = "query"
HELP = "SQL over the published tables of a run output (DuckDB)"


def add_parser(sub) -> None:
    q = sub.add_parser("query", help="SQL over the published tables of a run output (DuckDB)",
                       description="Run SQL with DuckDB over the views series (newest row per "
                                   "series), series_all, landmarks, segments and runs of "
                                   "OUTPUT_URL. qc_picture and label_map are relative to "
                                   "OUTPUT_URL. Example: cohort query out \"SELECT risk_group, "
                                   "count(*) FROM series GROUP BY 1\"")
    q.add_argument("output", metavar="OUTPUT_URL", help="the --out of `cohort run`")
    q.add_argument("sql", metavar="SQL")
    form = q.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true",
                      help="print CSV: a header, integers as integers, lists as JSON arrays "
                      "in their cell, NULL as an empty cell")
    form.add_argument("--json", action="store_true",
                      help="print JSON Lines: one object per row, lists as arrays, integers "
                      "as integers, NULL (and NaN) as null")
    form.add_argument("--full", action="store_true",
                      help="table with whole values (by default values are cut at 60 "
                      "characters on a terminal, whole when the output is piped or "
                      "redirected)")
    q.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint")
    q.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> str:
    """Run the SQL; return the result as a table, CSV or JSON Lines to print."""
    import sys

    import duckdb

    from cohort.errors import ConfigError
    from cohort.query import VIEWS, as_csv, as_json_lines, as_text, connect
    from cohort.storage import filesystem, redact
    from cohort.write.runs import published_runs

    options = storage_options(args.s3_endpoint)
    fs, path = filesystem(args.output, options)
    if not fs.exists(path):
        raise ConfigError(f"{redact(args.output)} does not exist; give the --out of a "
                          "finished `cohort run`")
    if not published_runs(args.output, options):
        raise ConfigError(f"{redact(args.output)} holds no published run "
                          "(runs/<id>/_SUCCESS.json); give the --out of a finished `cohort run`")
    con = connect(args.output, options)
    try:  # DuckDB raises some errors (conversions) only while the result is fetched
        rel = con.sql(args.sql)
        if rel is None:
            return ""
        if args.csv:
            return as_csv(rel)
        if args.json:
            return as_json_lines(rel)
        return as_text(rel, full=args.full or not sys.stdout.isatty())
    except duckdb.Error as e:  # the whole message: "Did you mean", candidate bindings, LINE
        raise ConfigError(f"query failed: {str(e).rstrip()}\nviews: {', '.join(VIEWS)}"
                          ) from e
