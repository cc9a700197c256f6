"""The `cohort` command: one entry point, one module per subcommand.

Each subcommand module registers its parser (``add_parser``) with a ``handler`` that returns
the text to print. Errors a user can fix (a bad option, an unwritable output URL) end the
command with one line on stderr that names the problem and what would work, and a non-zero
exit code: 2 for a refused option or input, 1 for storage, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cohort import __version__
from cohort.cli import benchmark, demo, evaluate, index, query, report, run, synth, train
from cohort.errors import CohortError, ConfigError, StorageError

EPILOG = """\
Commands: `synth heads` (a synthetic head-CT cohort as DICOM, with ground truth), `index`
(discover the series of a DICOM archive, select one per study, write the manifest), `run`
(the cohort job: landmarks and segment calcium -> Parquet), `query` (SQL over its tables),
`report` (an HTML report of its tables: flow, volumes, risk groups, change, QC, provenance),
`evaluate landmarks` (a run's landmarks against a truth table, by acquisition),
`train localization` (the 5-fold DST study), `train shipped` (reproduce the shipped
checkpoint), `synth ccccii` and `benchmark ccccii` (the Clean-CC-CCII benchmark) and `demo`
(the main job on its default).
All data written by `synth` is synthetic (phantoms, not patient data).
"""


COMMANDS = (synth, index, run, query, report, evaluate, train, benchmark, demo)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` gets its options (and imports what
    their defaults come from), so `cohort --help` and the other commands start fast."""
    parser = argparse.ArgumentParser(
        prog="cohort",
        description="Segment-specific intracranial carotid calcification on head-CT cohorts.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cohort {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress in detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    words = [w for w in (sys.argv[1:] if argv is None else argv) if not w.startswith("-")]
    for module in COMMANDS:
        if words and words[0] == module.NAME:
            module.add_parser(sub)
        else:
            sub.add_parser(module.NAME, help=module.HELP)
    return parser


def _storage_failures() -> tuple[type[BaseException], ...]:
    """What storage libraries raise when an endpoint or the credentials are wrong."""
    kinds: list[type[BaseException]] = [OSError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        kinds += [BotoCoreError, ClientError]
    except ImportError:  # pragma: no cover (s3fs brings botocore)
        pass
    return tuple(kinds)


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("cohort.progress").setLevel(logging.INFO)  # shown without -v
    if not args.verbose:
        from cohort.ray_session import quiet_ray_logs

        quiet_ray_logs()
    try:
        text = args.handler(args)
    except ConfigError as e:
        print(f"cohort: error: {e}", file=sys.stderr)
        return 2
    except (StorageError, CohortError) as e:
        print(f"cohort: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cohort: interrupted. The series this run finished are kept: the same "
              "command publishes them as an interrupted run and goes on with the rest",
              file=sys.stderr)
        return 130
    except _storage_failures() as e:  # unreachable endpoint, no or wrong credentials
        print(f"cohort: error: {type(e).__name__}: {e}; check the path or URL, "
              "--s3-endpoint, and the storage credentials (AWS_ACCESS_KEY_ID and "
              "AWS_SECRET_ACCESS_KEY, or a profile)", file=sys.stderr)
        return 1
    if text:
        print(text)
    return 0
