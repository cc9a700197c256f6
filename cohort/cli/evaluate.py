"""`cohort evaluate landmarks` / `cohort evaluate calcium`: a run's landmarks or calcium
against known ones."""

from __future__ import annotations

import argparse

from cohort.cli.options import storage_options

NAME = "evaluate"
HELP = "a run's landmarks or calcium against a truth table"


def add_parser(sub) -> None:
    ev = sub.add_parser("evaluate", help=HELP,
                        description="Compare what a run found with known answers.")
    what = ev.add_subparsers(dest="what", metavar="WHAT", required=True)
    lm = what.add_parser(
        "landmarks", help="landmark agreement by slice thickness and acquisition",
        description="The landmarks of OUTPUT_URL's newest series rows against a truth table "
                    "(a synthetic cohort's ground_truth.parquet, or Parquet/CSV with "
                    "series_uid and the six <landmark>_slice columns, optionally "
                    "<landmark>_z_mm): MAE in slices and mm, Top-1, Acc(tau=1), and how "
                    "often a low-confidence landmark and an unflagged one is wrong, overall "
                    "and per slice-thickness band, tilted, rotated, neck-cut and "
                    "variable-thickness series.")
    lm.add_argument("output", metavar="OUTPUT_URL", help="the --out of `cohort run`")
    lm.add_argument("--truth", required=True, metavar="URL",
                    help="truth table (Parquet or CSV)")
    lm.add_argument("--save", metavar="URL",
                    help="also write the per-landmark errors as Parquet here")
    lm.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint")
    lm.set_defaults(handler=handle_landmarks)
    ca = what.add_parser(
        "calcium", help="calcium volume, Dice and risk-group agreement by slice thickness",
        description="The calcium of OUTPUT_URL's newest ok series with volumes against a "
                    "truth table (a synthetic cohort's ground_truth.parquet, or Parquet/CSV "
                    "with series_uid and total_calcium_mm3, optionally mask_path relative "
                    "to the table's folder): Pearson r of log1p volume, Bland-Altman bias "
                    "and limits, risk-group agreement (weighted kappa), coverage of the "
                    "volume intervals, and voxel Dice where the run wrote its masks "
                    "(--write-masks); overall and per slice-thickness band.")
    ca.add_argument("output", metavar="OUTPUT_URL", help="the --out of `cohort run`")
    ca.add_argument("--truth", required=True, metavar="URL", help="truth table")
    ca.add_argument("--save", metavar="URL", help="also write the per-series rows as Parquet")
    ca.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint")
    ca.set_defaults(handler=handle_calcium)


def series_and_truth(args: argparse.Namespace):
    """(series table of the run's newest rows, truth table, storage options).

    Raises:
        ConfigError: OUTPUT_URL holds no published run.
    """
    import io

    import pandas as pd

    from cohort.errors import ConfigError
    from cohort.query import connect
    from cohort.storage import read_bytes, redact
    from cohort.write.runs import published_runs

    options = storage_options(args.s3_endpoint)
    if not published_runs(args.output, options):
        raise ConfigError(f"{redact(args.output)} holds no published run; give the --out of "
                          "a finished `cohort run`")
    data = read_bytes(args.truth, options)
    truth = (pd.read_csv(io.BytesIO(data)) if args.truth.endswith(".csv")
             else pd.read_parquet(io.BytesIO(data)))
    return connect(args.output, options).sql("SELECT * FROM series").df(), truth, options


def handle_landmarks(args: argparse.Namespace) -> str:
    import io

    from cohort.agreement import agreement_by_acquisition, landmark_errors, to_markdown
    from cohort.errors import ConfigError
    from cohort.storage import redact, write_bytes

    series, truth, options = series_and_truth(args)
    errors = landmark_errors(series, truth)
    if errors.empty:
        raise ConfigError(f"no ok series of {redact(args.output)} has a row in "
                          f"{redact(args.truth)} (matched on series_uid)")
    synthetic = bool(truth["synthetic"].all()) if "synthetic" in truth else False
    if args.save:
        buf = io.BytesIO()
        errors.to_parquet(buf, index=False)
        write_bytes(args.save, buf.getvalue(), options)
    return to_markdown(agreement_by_acquisition(errors), synthetic=synthetic)


def handle_calcium(args: argparse.Namespace) -> str:
    import io
    import posixpath

    from cohort.calcium_agreement import agreement, calcium_rows
    from cohort.errors import ConfigError
    from cohort.storage import redact, write_bytes
    from cohort.train.tables import to_markdown

    series, truth, options = series_and_truth(args)
    rows = calcium_rows(series, truth, output_url=args.output,
                        truth_root=posixpath.dirname(args.truth.rstrip("/")), options=options)
    if rows.empty:
        raise ConfigError(f"no ok series with volumes of {redact(args.output)} has a row in "
                          f"{redact(args.truth)} (matched on series_uid)")
    synthetic = bool(truth["synthetic"].all()) if "synthetic" in truth else False
    if args.save:
        buf = io.BytesIO()
        rows.to_parquet(buf, index=False)
        write_bytes(args.save, buf.getvalue(), options)
    sources = ", ".join(sorted(str(s) for s in rows["mask_source"].dropna().unique()))
    title = f"Calcium against the truth ({len(rows)} series; masks: {sources or 'unknown'})"
    return to_markdown(agreement(rows), title, synthetic)
