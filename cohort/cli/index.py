"""`cohort index`: discover and select the series of a DICOM archive."""

from __future__ import annotations

import argparse

from cohort.cli.options import add_index_options, index_config, storage_options

NAME = "index"
HELP = "discover and select the series of a DICOM archive -> manifest.parquet"


def add_parser(sub) -> None:
    index = sub.add_parser(
        "index", help="discover and select the series of a DICOM archive -> manifest.parquet",
        description="List every object under INPUT_URL (any folder layout, any file names; "
                    "several INPUT_URLs on one storage make one index), "
                    "read only the DICOM headers (byte ranges), group the images into series, "
                    "check each series' geometry (gantry tilt, gaps, duplicates, blocks of "
                    "different thickness), select one series per study and write "
                    "OUT/manifest.parquet (one row per series and per unusable object, with "
                    "the reason) and OUT/objects.parquet. Problems in the data become rows; "
                    "the command fails only when an INPUT_URL or OUT cannot be used.")
    index.add_argument("input", metavar="INPUT_URL", nargs="+",
                       help="folder, s3://bucket/prefix or any fsspec URL holding DICOM files; "
                       "several (folders, prefixes or buckets on one storage) make one index")
    index.add_argument("--out", required=True, metavar="URL",
                       help="folder or prefix for manifest.parquet, objects.parquet, _SUCCESS.json")
    add_index_options(index)
    index.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> str:
    from cohort.discover import index_cohort, summarize

    result = index_cohort(tuple(args.input), args.out, index_config(args),
                          storage_options(args.s3_endpoint))
    return summarize(result)
