"""`cohort report`: one HTML page with its figures, drawn from a run output's tables."""

from __future__ import annotations

import argparse

from cohort.cli.options import add_s3_endpoint, storage_options

NAME = "report"
HELP = "an HTML report of a run output: flow, volumes, risk groups, change, QC, provenance"


def add_parser(sub) -> None:
    from cohort.report import ReportConfig

    d = ReportConfig()
    p = sub.add_parser(
        NAME, help=HELP,
        description="Write one HTML page (index.html, with its PNG figures and the QC "
                    "pictures it shows) from the published runs of OUTPUT_URL: the study flow "
                    "from archive objects to series measured with every exclusion by reason, "
                    "calcium by segment and side, risk groups, change over time, landmark "
                    "confidence, the QC gallery of flagged series and the runs' provenance; "
                    "marked SYNTHETIC where the models (or, with --synthetic-images, the "
                    "images) are. Prints where it is.")
    p.add_argument("output", metavar="OUTPUT_URL", help="the --out of `cohort run`")
    p.add_argument("--to", metavar="URL",
                   help="folder to write the report to (default: OUTPUT_URL/report); an "
                        "earlier report's pictures there are replaced")
    p.add_argument("--gallery", type=int, default=d.max_gallery, metavar="N",
                   help="flagged series shown as pictures, most flags first (default "
                        "%(default)s; all are listed in a table)")
    p.add_argument("--synthetic-images", action="store_true",
                   help="say that the images are synthetic phantoms (the tables record only "
                        "what the models were trained on)")
    add_s3_endpoint(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> str:
    from cohort.report import ReportConfig, write_report
    from cohort.storage import redact

    config = ReportConfig(max_gallery=args.gallery, synthetic_data=args.synthetic_images)
    url = write_report(args.output, storage_options(args.s3_endpoint), config,
                       report_url=args.to)
    return f"report: {redact(url)}"
