"""`cohort benchmark ccccii`: the Clean-CC-CCII benchmark, DST against 3-D CNNs."""

from __future__ import annotations

import argparse

from cohort.cli.options import add_training_options, storage_options

NAME = "benchmark"
HELP = "benchmarks of the method on public data sets"


def add_parser(sub) -> None:
    from cohort.ccccii.benchmark import BenchmarkConfig

    d = BenchmarkConfig()
    models = ",".join(d.models)
    bench = sub.add_parser("benchmark", help="benchmarks of the method on public data sets",
                           description="Benchmarks of the method on public data sets.")
    bench_sub = bench.add_subparsers(dest="what", metavar="WHAT", required=True)
    b = bench_sub.add_parser(
        "ccccii", help="Clean-CC-CCII: DST against 3-D CNNs, k-fold (Tables III and V)",
        description="The Clean-CC-CCII classification benchmark (NCP / CP / Normal): "
                    "patient-level k-fold cross-validation of each model on Ray Train, test "
                    "predictions, accuracy / macro-F1 / one-vs-rest AUC, measured compute, "
                    "and the DST depth ablation, under OUT/tables. DATA is "
                    "<class>/<patient_id>/<scan_id>/<slice images> or "
                    "<class>/<patient_id>/<scan_id>.npy; what cannot be used is listed in "
                    "OUT/tables/problems.md.")
    b.add_argument("--data", required=True, metavar="URL", help="the data set's root folder")
    b.add_argument("--out", required=True, metavar="URL", help="where results are written")
    b.add_argument("--models", default=models,
                   help="comma-separated: dst (paper size), dst-small, dst-tiny, resnet50_3d, "
                        "densenet121_3d, resnet_tiny_3d, densenet_tiny_3d (default "
                        "%(default)s)")
    b.add_argument("--ablation-blocks", type=int, nargs="*", default=list(d.ablation_blocks),
                   metavar="N", help="Table V: also train the first DST with these block "
                                     "counts (default %(default)s; none to skip)")
    b.add_argument("--size", type=int, default=d.input.size,
                   help="in-plane pixels (default %(default)s)")
    b.add_argument("--depth", type=int, default=d.input.depth,
                   help="slices after resizing (default %(default)s)")
    b.add_argument("--native-depth", action="store_true",
                   help="DST models read each scan at its own depth (in-plane resized only)")
    add_training_options(b, d.study.train, d.study.splits, threads=d.study.cpus_per_worker,
                         workers=d.study.workers)
    b.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> str:
    from dataclasses import replace

    from cohort.ccccii.benchmark import BenchmarkConfig
    from cohort.ccccii.cache import InputConfig
    from cohort.ccccii.command import benchmark_ccccii
    from cohort.train.splits import SplitConfig

    d = BenchmarkConfig()
    config = BenchmarkConfig(
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        ablation_blocks=tuple(args.ablation_blocks),
        input=InputConfig(size=args.size, depth=args.depth), native_depth=args.native_depth,
        study=replace(
            d.study,
            train=replace(d.study.train, epochs=args.epochs, batch_size=args.batch_size,
                          lr=args.lr, momentum=args.momentum, patience=args.patience,
                          seed=args.seed),
            splits=SplitConfig(folds=args.folds, seed=args.seed), workers=args.workers,
            use_gpu=args.gpus, cpus_per_worker=args.threads))
    return benchmark_ccccii(args.data, args.out, config,
                            options=storage_options(args.s3_endpoint))
