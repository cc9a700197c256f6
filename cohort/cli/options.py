"""Option builders and value converters shared by the subcommands of `cohort`.

Defaults come from the configuration dataclasses (defined once there); help texts name them.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from cohort.errors import ConfigError

S3_ENDPOINT_HELP = ("S3-compatible endpoint for s3:// URLs (default: $COHORT_S3_ENDPOINT or "
                    "AWS); credentials come from the standard AWS chain")


def add_s3_endpoint(p) -> None:
    p.add_argument("--s3-endpoint", metavar="URL", help=S3_ENDPOINT_HELP)


def storage_options(endpoint: str | None):
    """Storage options from the environment, with ``--s3-endpoint`` when given."""
    from cohort.storage import StorageOptions

    opts = StorageOptions.from_env()
    return replace(opts, endpoint_url=endpoint) if endpoint else opts


def add_index_options(p: argparse.ArgumentParser) -> None:
    """How an archive is read and which series is selected (`cohort index`, `cohort run`)."""
    from cohort.config import IndexConfig

    d = IndexConfig()
    run = p.add_argument_group("how the archive is read")
    run.add_argument("--executor", choices=("ray", "local"), default=d.discovery.executor,
                     help="ray: Ray tasks on the connected cluster, or on a local Ray instance "
                          "started here (default); local: in this process")
    run.add_argument("--num-cpus", type=int, default=d.discovery.num_cpus,
                     help="CPUs of a local Ray instance started here (default 0: all)")
    run.add_argument("--files-per-task", type=int, default=d.discovery.files_per_task,
                     help="headers read per task (default %(default)s)")
    run.add_argument("--io-threads", type=int, default=d.discovery.io_threads,
                     help="concurrent reads per task (default %(default)s)")
    run.add_argument("--header-block", type=int, default=d.discovery.header_block_bytes // 1024,
                     metavar="KIB", help="first byte range read per object, in KiB (default "
                                         "%(default)s)")
    add_s3_endpoint(run)
    sel = p.add_argument_group("which series is selected per study")
    sel.add_argument("--modality", nargs="+", default=list(d.selection.modalities),
                     help="Modality values analysed (default: %(default)s)")
    sel.add_argument("--allow-derived", action="store_true",
                     help="let DERIVED / SECONDARY images be selected too")
    sel.add_argument("--min-coverage", type=float, default=d.selection.min_coverage_mm,
                     metavar="MM", help="z extent that counts as full head coverage (default "
                                        "%(default)g mm)")
    sel.add_argument("--prefer", nargs="+", default=list(d.selection.prefer),
                     metavar="RULE", help="ranking rules, most important first (default: "
                                          f"{' '.join(d.selection.prefer)})")
    sel.add_argument("--soft-kernel", nargs="+", default=[], metavar="PATTERN",
                     help="more soft-tissue kernel names or regexes (added to the defaults)")
    sel.add_argument("--bone-kernel", nargs="+", default=[], metavar="PATTERN",
                     help="more bone kernel names or regexes (added to the defaults)")
    sel.add_argument("--min-slices", type=int, default=d.stack.min_slices,
                     help="fewer distinct slices fail a series (default %(default)s)")


def index_config(args: argparse.Namespace):
    """The `IndexConfig` of the options `add_index_options` added."""
    from cohort.config import DiscoveryConfig, IndexConfig, SelectionConfig

    d = IndexConfig()
    if args.min_slices < 2:
        raise ConfigError(f"--min-slices must be at least 2, got {args.min_slices}")
    return IndexConfig(
        discovery=DiscoveryConfig(
            executor=args.executor, num_cpus=args.num_cpus, files_per_task=args.files_per_task,
            io_threads=args.io_threads, header_block_bytes=args.header_block * 1024),
        stack=replace(d.stack, min_slices=args.min_slices),
        selection=SelectionConfig(
            modalities=tuple(args.modality), allow_derived=args.allow_derived,
            min_coverage_mm=args.min_coverage, prefer=tuple(args.prefer),
            soft_kernels=d.selection.soft_kernels + tuple(args.soft_kernel),
            bone_kernels=d.selection.bone_kernels + tuple(args.bone_kernel)))


def add_training_options(p, train, splits, *, threads: int, workers: int) -> None:
    """Options of a k-fold study on Ray Train, their defaults from ``train`` (a TrainConfig)
    and ``splits`` (a SplitConfig)."""
    p.add_argument("--folds", type=int, default=splits.folds, help="(default %(default)s)")
    p.add_argument("--epochs", type=int, default=train.epochs, help="(default %(default)s)")
    p.add_argument("--batch-size", type=int, default=train.batch_size,
                   help="volumes per worker step (default %(default)s)")
    p.add_argument("--lr", type=float, default=train.lr,
                   help="learning rate (default %(default)g; the paper: 2e-3 with SGD)")
    p.add_argument("--momentum", type=float, default=train.momentum,
                   help="SGD momentum (default %(default)g)")
    p.add_argument("--patience", type=int, default=train.patience,
                   help="epochs without a better validation metric before stopping "
                        "(default %(default)s)")
    p.add_argument("--threads", type=int, default=threads,
                   help="CPUs (torch threads) per Ray Train worker (default %(default)s)")
    p.add_argument("--workers", type=int, default=workers,
                   help="Ray Train workers per fold (default %(default)s)")
    p.add_argument("--gpus", action="store_true", help="one GPU per worker")
    p.add_argument("--seed", type=int, default=train.seed, help="(default %(default)s)")
    add_s3_endpoint(p)
