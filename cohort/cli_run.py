"""The `run` and `query` subcommands of the `cohort` command (registered by cohort.cli)."""

from __future__ import annotations

import argparse
import shlex

RUN_HELP = ("Process a cohort: INPUT_URL is a DICOM archive (folder, s3://bucket/prefix, any "
            "fsspec URL; it is indexed first, into OUT/index) or a folder written by "
            "`cohort index`. Each selected series is read, checked, tilt-corrected, split into "
            "hemispheres; the DST finds its six landmark slices; with --masks, calcium is "
            "assigned to the eight ICA segments. Results: Parquet tables series / landmarks / "
            "segments under OUT/runs/<run_id>/, published by a _SUCCESS.json written last. "
            "Re-running the same command processes only series not finished before. Without "
            "--model the shipped checkpoint is used: trained on SYNTHETIC phantoms, a "
            "demonstration, not for clinical or research conclusions.")


def add_run_parser(sub) -> None:
    from cohort.cli import _index_options
    from cohort.quantify import QuantifyConfig

    quant = QuantifyConfig()  # the defaults are defined once, there

    p = sub.add_parser("run", help="the cohort job: landmarks and segment calcium -> Parquet",
                       description=RUN_HELP)
    p.add_argument("input", metavar="INPUT_URL", help="DICOM archive or `cohort index` folder")
    p.add_argument("--out", required=True, metavar="URL", help="output folder or s3:// prefix")
    p.add_argument("--model", metavar="CKPT", help="DST checkpoint (.pt, path or URL) from "
                   "`cohort train localization` (models/fold-<f>.pt); default: the shipped "
                   "synthetic-phantom checkpoint")
    p.add_argument("--masks", metavar="URL", help="folder of calcium masks named "
                   "<SeriesInstanceUID>.nii.gz on each series' grid (e.g. renamed nnU-Net "
                   "output); without it, landmarks only")
    p.add_argument("--gpus", type=int, default=0, metavar="N",
                   help="inference actors with one GPU each (default 0: CPU actors)")
    p.add_argument("--cpu-actors", type=int, default=1, metavar="N",
                   help="inference actors when --gpus is 0 (default 1)")
    p.add_argument("--actor-cpus", type=float, default=None,
                   help="CPUs Ray reserves per inference actor (default: 1 with --gpus, else 0)")
    p.add_argument("--actor-threads", type=int, default=1,
                   help="torch threads per inference actor (default 1)")
    p.add_argument("--batch-size", type=int, default=4, help="volumes per forward pass")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="seconds one series may take before it is cut off (default 600)")
    p.add_argument("--task-memory", type=float, default=3.0, metavar="GB",
                   help="memory Ray reserves per series task (default 3)")
    p.add_argument("--task-cpus", type=float, default=1.0, metavar="N",
                   help="CPUs Ray reserves per series task (default 1; 0.5 runs two per core, "
                   "for object stores far away)")
    p.add_argument("--finish-tasks", type=int, default=2, metavar="N",
                   help="concurrent finish tasks (quantification, flagged QC pictures) when "
                   "they are light; with --qc all or --label-maps they reserve CPUs like "
                   "series tasks (default 2)")
    p.add_argument("--retry-failed", action="store_true",
                   help="process again the series whose last published row is an error")
    p.add_argument("--qc", choices=("flagged", "all", "none"), default="flagged",
                   help="QC pictures for flagged series (default), all, or none")
    p.add_argument("--qc-series", nargs="+", default=[], metavar="UID",
                   help="series (UIDs or keys) that get a QC picture whatever their flags")
    p.add_argument("--label-maps", action="store_true",
                   help="write NIfTI segment label maps (needs --masks), for 3D Slicer / ITK-SNAP")
    p.add_argument("--salt", help="secret for pseudonymous patient/study keys (or set "
                   "COHORT_SALT); never written anywhere")
    p.add_argument("--keep-ids", action="store_true",
                   help="write PatientID and StudyInstanceUID as they are (no salt needed)")
    p.add_argument("--max-series", type=int, metavar="N", help="process at most N (a trial)")
    p.add_argument("--mask-errors", action="store_true",
                   help="make a series whose mask is missing or unusable an error row; by "
                   "default it keeps its landmarks, gets the mask_* code and the QC flag "
                   "mask_problem, and its segment volumes are not computed")
    p.add_argument("--risk-cutoffs", type=float, nargs="+", metavar="MM3",
                   default=list(quant.risk_thresholds_mm3),
                   help="increasing total-ICAC-volume cut-offs (mm^3) between risk groups; a "
                   "series is in the group of the number of cut-offs its volume exceeds. "
                   "Default %(default)s: round PLACEHOLDERS one decade apart, not values from "
                   "a published study; risk groups are study-specific (e.g. tertiles of your "
                   "cohort's non-zero volumes, cohort.quantify.risk.tertile_cutoffs). Every "
                   "row's risk_scheme says which cut-offs made its group")
    p.add_argument("--risk-groups", nargs="+", metavar="NAME",
                   default=list(quant.risk_groups),
                   help="group names, one more than the cut-offs (default %(default)s)")
    _index_options(p)

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


def run_run(args: argparse.Namespace) -> str:
    """Run the job; return what to print."""
    from cohort.cli import _index_config, _storage_options
    from cohort.infer.identity import IdentityConfig
    from cohort.pipeline import RunConfig, run_cohort

    config = RunConfig(
        model=args.model, masks=args.masks, gpus=args.gpus, cpu_actors=args.cpu_actors,
        actor_cpus=args.actor_cpus, actor_threads=args.actor_threads,
        batch_size=args.batch_size, series_timeout_s=args.timeout,
        task_memory_gb=args.task_memory, task_cpus=args.task_cpus,
        finish_tasks=args.finish_tasks, retry_failed=args.retry_failed, qc=args.qc,
        qc_series=tuple(args.qc_series), label_maps=args.label_maps,
        max_series=args.max_series, mask_problems="error" if args.mask_errors else "note",
        quantify=_quantify_config(args),
        identity=IdentityConfig(salt=args.salt, keep_ids=args.keep_ids),
        index=_index_config(args))
    report = run_cohort(args.input, args.out, config, _storage_options(args.s3_endpoint))
    lines = [report.line(), *report.qc_lines]
    if report.manifest.get("model", {}).get("trained_on") == "synthetic phantoms":
        lines.append("model: trained on SYNTHETIC phantoms (the shipped demonstration "
                     "checkpoint unless --model says otherwise); not for clinical use")
    endpoint = f" --s3-endpoint {shlex.quote(args.s3_endpoint)}" if args.s3_endpoint else ""
    lines.append(f'query it: cohort query {shlex.quote(args.out)}{endpoint} "SELECT status, '
                 'error_code, count(*) FROM series GROUP BY ALL"')
    return "\n".join(lines)


def _quantify_config(args: argparse.Namespace):
    from cohort.errors import ConfigError
    from cohort.quantify import QuantifyConfig

    default = QuantifyConfig()
    cutoffs, groups = tuple(args.risk_cutoffs), tuple(args.risk_groups)
    if cutoffs == default.risk_thresholds_mm3 and groups == default.risk_groups:
        return default
    if len(groups) != len(cutoffs) + 1 and groups == default.risk_groups:
        raise ConfigError(f"--risk-cutoffs gives {len(cutoffs)} cut-offs: give --risk-groups with "
                     f"{len(cutoffs) + 1} names")
    return QuantifyConfig(risk_thresholds_mm3=cutoffs, risk_groups=groups,
                          risk_source="given with --risk-cutoffs")


def run_query(args: argparse.Namespace) -> str:
    """Run the SQL; return the result as a table, CSV or JSON Lines to print."""
    import sys

    import duckdb

    from cohort.cli import _storage_options
    from cohort.errors import ConfigError
    from cohort.query import VIEWS, as_csv, as_json_lines, as_text, connect
    from cohort.storage import filesystem, redact
    from cohort.write.runs import published_runs

    options = _storage_options(args.s3_endpoint)
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
