"""The `cohort` command: one entry point, one subcommand per job.

Errors a user can fix (a bad option, an unwritable output URL) end the command with one
line on stderr that names the problem and what would work, and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import replace

from cohort import __version__
from cohort.errors import CohortError, ConfigError, StorageError

EPILOG = """\
Commands: `synth heads` (a synthetic head-CT cohort as DICOM, with ground truth), `index`
(discover the series of a DICOM archive, select one per study, write the manifest), `run`
(the cohort job: landmarks and segment calcium -> Parquet), `query` (SQL over its tables),
`train localization` (the 5-fold DST study), `train shipped` (reproduce the shipped
checkpoint), `synth ccccii` and `benchmark ccccii` (the Clean-CC-CCII benchmark) and `demo`
(the main job on its default).
All data written by `synth` is synthetic (phantoms, not patient data).
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cohort",
        description="Segment-specific intracranial carotid calcification on head-CT cohorts.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cohort {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress in detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    synth = sub.add_parser("synth", help="generate synthetic cohorts in real file formats",
                           description="Generate synthetic cohorts in real file formats.")
    synth_sub = synth.add_subparsers(dest="what", metavar="WHAT", required=True)
    heads = synth_sub.add_parser(
        "heads", help="head CT as DICOM series, with calcium masks, segment labels, landmarks",
        description="Write a synthetic head-CT cohort: DICOM series (one file per slice), the "
                    "calcium mask and segment label map of each series as NIfTI, and "
                    "ground_truth.parquet (landmark slices, segment volumes). OUT may be a "
                    "folder or any fsspec URL, s3://bucket/prefix included.")
    heads.add_argument("--out", required=True, metavar="URL", help="where to write the cohort")
    _synth_options(heads)

    index = sub.add_parser(
        "index", help="discover and select the series of a DICOM archive -> manifest.parquet",
        description="List every object under INPUT_URL (any folder layout, any file names), "
                    "read only the DICOM headers (byte ranges), group the images into series, "
                    "check each series' geometry (gantry tilt, gaps, duplicates), select one "
                    "series per study and write OUT/manifest.parquet (one row per series and "
                    "per unusable object, with the reason) and OUT/objects.parquet. Problems in "
                    "the data become rows; the command fails only when INPUT_URL or OUT cannot "
                    "be used.")
    index.add_argument("input", metavar="INPUT_URL",
                       help="folder, s3://bucket/prefix or any fsspec URL holding DICOM files")
    index.add_argument("--out", required=True, metavar="URL",
                       help="folder or prefix for manifest.parquet, objects.parquet, _SUCCESS.json")
    _index_options(index)

    from cohort.cli_run import add_run_parser

    add_run_parser(sub)

    train = sub.add_parser("train", help="train models with k-fold cross-validation on Ray Train",
                           description="Train models with k-fold patient-level "
                                       "cross-validation on Ray Train.")
    train_sub = train.add_subparsers(dest="what", metavar="WHAT", required=True)
    shipped = train_sub.add_parser(
        "shipped", help="reproduce the shipped checkpoint (synthetic cohort + 5-fold study)",
        description="Generate the synthetic cohort of the shipped checkpoint's recipe "
                    "(cohort.train.ship), run its 5-fold study, and export the fold model with "
                    "the best validation MAE (float16) to --to (default: the package's "
                    "cohort/model/weights/dst-small-synthetic.pt). SYNTHETIC phantoms only.")
    shipped.add_argument("--out", required=True, metavar="URL",
                         help="where the cohort and the study are written")
    shipped.add_argument("--to", metavar="PATH", help="checkpoint file to write")
    loc = train_sub.add_parser(
        "localization", help="the DST landmark study (the paper's Table II, ablations: IV)",
        description="The 5-fold patient-level landmark-localization study: prepares model "
                    "inputs once, trains each fold on Ray Train (checkpoints every epoch, "
                    "resume after a crash, early stopping on validation), predicts each "
                    "fold's test split once with its best model, and writes predictions, "
                    "per-fold metrics, Table II and calibration under OUT/tables.")
    loc.add_argument("--data", required=True, metavar="URL",
                     help="a synthetic cohort (from `cohort synth heads`) or the --out folder "
                          "of `cohort index`")
    loc.add_argument("--labels", metavar="URL",
                     help="landmark table (Parquet/CSV: series_uid, patient_key, six "
                          "<landmark>_slice columns); a synthetic cohort brings its own")
    loc.add_argument("--out", required=True, metavar="URL", help="where the study is written")
    loc.add_argument("--model", default="small", help="DST configuration: small (default), "
                                                      "paper, tiny")
    loc.add_argument("--ablations", nargs="*", default=[], metavar="NAME",
                     help="also run: no_attention right_padding blocks_0 blocks_1 blocks_8")
    loc.add_argument("--folds", type=int, default=5)
    loc.add_argument("--epochs", type=int, default=60)
    loc.add_argument("--batch-size", type=int, default=2)
    loc.add_argument("--lr", type=float, default=2e-3, help="SGD learning rate (paper: 2e-3)")
    loc.add_argument("--momentum", type=float, default=0.3,
                     help="SGD momentum (public code: 0.3, Nesterov)")
    loc.add_argument("--warmup-epochs", type=int, default=2,
                     help="linear warm-up epochs before cosine decay")
    loc.add_argument("--input-size", type=int, default=128,
                     help="model pixels per side in-plane (default 128; stored in the models)")
    loc.add_argument("--threads", type=int, default=1,
                     help="CPUs (torch threads) per Ray Train worker")
    loc.add_argument("--patience", type=int, default=10,
                     help="epochs without a better validation MAE before stopping")
    loc.add_argument("--workers", type=int, default=1, help="Ray Train workers per fold")
    loc.add_argument("--gpus", action="store_true", help="one GPU per worker")
    loc.add_argument("--seed", type=int, default=0)
    loc.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint")

    _ccccii_parsers(sub, synth_sub)

    demo = sub.add_parser(
        "demo", help="run the main job on its embedded default: local folder, synthetic cohort",
        description="Run the main job on its embedded default (a local folder, a synthetic "
                    "cohort) and print where the results are with a short summary.")
    demo.add_argument("--out", default="demo-output", metavar="DIR",
                      help="folder for the demo's results (default: ./demo-output)")
    demo.add_argument("--patients", type=int, default=12, help="synthetic patients (default 12)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--matrix", type=int, default=512, help="pixels per row (default 512)")
    demo.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU)")
    return parser


def _synth_options(p: argparse.ArgumentParser) -> None:
    d = _default_synth()
    p.add_argument("--patients", type=int, default=d.patients,
                   help=f"number of synthetic patients (default {d.patients})")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed; same seed, same bytes")
    p.add_argument("--matrix", type=int, default=d.matrix,
                   help="rows = columns of each slice (default 512; 128 is handy for tests)")
    p.add_argument("--thickness", type=float, nargs="+", metavar="MM",
                   help="slice thickness(es) to draw from, in mm (default: 0.625 .. 5)")
    p.add_argument("--tilt", type=float, default=d.tilt_p, metavar="P",
                   help=f"probability of a gantry-tilted series (default {d.tilt_p})")
    p.add_argument("--stepped", type=float, default=d.stepped_p, metavar="P",
                   help="probability that a primary series is a sequential head protocol of "
                        "two contiguous blocks, thin slices through the posterior fossa and "
                        "thicker ones above, e.g. 4 mm then 7 mm (default "
                        f"{d.stepped_p}); with --tilt, both blocks are tilted")
    p.add_argument("--localizer", type=float, default=d.localizer_p, metavar="P",
                   help=f"probability of a localizer in a study (default {d.localizer_p})")
    p.add_argument("--second-series", type=float, default=d.second_series_p, metavar="P",
                   help="probability of a bone-kernel or thick series beside the primary "
                        f"(default {d.second_series_p})")
    p.add_argument("--followup", type=float, default=d.followup_p, metavar="P",
                   help=f"probability of a follow-up study (default {d.followup_p})")
    p.add_argument("--neck-cut", type=float, default=d.neck_cut_p, metavar="P",
                   help=f"probability that the scan stops below the skull base "
                        f"(default {d.neck_cut_p})")
    p.add_argument("--calcium-free", type=float, default=d.calcium_free_p, metavar="P",
                   help=f"fraction of subjects without calcification (default {d.calcium_free_p})")
    p.add_argument("--transfer-syntax", default=d.transfer_syntax,
                   help="explicit, implicit, deflate, rle, jpeg-ls, jpeg2000, or mixed "
                        f"(default {d.transfer_syntax})")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="worker processes (default 0: one per CPU)")
    p.add_argument("--ray", action="store_true",
                   help="one Ray task per patient on the connected Ray cluster (use inside "
                        "`ray job submit`), instead of local processes")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a cohort written to OUT before")
    p.add_argument("--s3-endpoint", metavar="URL",
                   help="S3-compatible endpoint for s3:// URLs (default: $COHORT_S3_ENDPOINT "
                        "or AWS); credentials come from the standard AWS chain")


def _index_options(p: argparse.ArgumentParser) -> None:
    from cohort.config import IndexConfig

    d = IndexConfig()
    run = p.add_argument_group("how the archive is read")
    run.add_argument("--executor", choices=("ray", "local"), default=d.discovery.executor,
                     help="ray: Ray tasks on the connected cluster, or on a local Ray instance "
                          "started here (default); local: in this process")
    run.add_argument("--num-cpus", type=int, default=d.discovery.num_cpus,
                     help="CPUs of a local Ray instance started here (default 0: all)")
    run.add_argument("--files-per-task", type=int, default=d.discovery.files_per_task,
                     help=f"headers read per task (default {d.discovery.files_per_task})")
    run.add_argument("--io-threads", type=int, default=d.discovery.io_threads,
                     help=f"concurrent reads per task (default {d.discovery.io_threads})")
    run.add_argument("--header-block", type=int, default=d.discovery.header_block_bytes // 1024,
                     metavar="KIB", help="first byte range read per object, in KiB (default "
                                         f"{d.discovery.header_block_bytes // 1024})")
    run.add_argument("--s3-endpoint", metavar="URL",
                     help="S3-compatible endpoint for s3:// URLs (default: $COHORT_S3_ENDPOINT "
                          "or AWS); credentials come from the standard AWS chain")
    sel = p.add_argument_group("which series is selected per study")
    sel.add_argument("--modality", nargs="+", default=list(d.selection.modalities),
                     help="Modality values analysed (default: CT)")
    sel.add_argument("--allow-derived", action="store_true",
                     help="let DERIVED / SECONDARY images be selected too")
    sel.add_argument("--min-coverage", type=float, default=d.selection.min_coverage_mm,
                     metavar="MM", help="z extent that counts as full head coverage (default "
                                        f"{d.selection.min_coverage_mm:g} mm)")
    sel.add_argument("--prefer", nargs="+", default=list(d.selection.prefer),
                     metavar="RULE", help="ranking rules, most important first (default: "
                                          f"{' '.join(d.selection.prefer)})")
    sel.add_argument("--soft-kernel", nargs="+", default=[], metavar="PATTERN",
                     help="more soft-tissue kernel names or regexes (added to the defaults)")
    sel.add_argument("--bone-kernel", nargs="+", default=[], metavar="PATTERN",
                     help="more bone kernel names or regexes (added to the defaults)")
    sel.add_argument("--min-slices", type=int, default=d.stack.min_slices,
                     help=f"fewer distinct slices fail a series (default {d.stack.min_slices})")


def _index_config(args: argparse.Namespace):
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


def _run_index(args: argparse.Namespace) -> int:
    from cohort.discover import index_cohort, summarize

    cfg = _index_config(args)
    result = index_cohort(args.input, args.out, cfg, _storage_options(args.s3_endpoint))
    print(summarize(result))
    return 0


def _default_synth():
    from cohort.config import SynthConfig

    return SynthConfig()


def _synth_config(args: argparse.Namespace):
    from cohort.config import SynthConfig

    kw = dict(patients=args.patients, seed=args.seed, matrix=args.matrix, tilt_p=args.tilt,
              stepped_p=args.stepped,
              localizer_p=args.localizer, second_series_p=args.second_series,
              followup_p=args.followup, neck_cut_p=args.neck_cut,
              calcium_free_p=args.calcium_free, transfer_syntax=args.transfer_syntax,
              workers=args.workers)
    if args.thickness:
        kw["thicknesses_mm"] = tuple(args.thickness)
    return SynthConfig(**kw)


def _storage_options(endpoint: str | None):
    from cohort.storage import StorageOptions

    opts = StorageOptions.from_env()
    return replace(opts, endpoint_url=endpoint) if endpoint else opts


def _run_synth_heads(args: argparse.Namespace) -> int:
    from cohort.storage import check_writable
    from cohort.synth.heads import generate_cohort
    from cohort.synth.summary import describe_cohort

    cfg = _synth_config(args)
    options = _storage_options(args.s3_endpoint)
    check_writable(args.out, options)
    t0 = time.perf_counter()
    table = generate_cohort(cfg, args.out, options, overwrite=args.overwrite,
                            executor="ray" if args.ray else "processes")
    print(describe_cohort(table, args.out, time.perf_counter() - t0))
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from cohort.demo import run_demo

    print(run_demo(out_dir=args.out, patients=args.patients, seed=args.seed,
                   matrix=args.matrix, workers=args.workers))
    return 0


def _run_train_localization(args: argparse.Namespace) -> int:
    from cohort.preprocess.model_input import ModelInputConfig
    from cohort.train.command import train_localization
    from cohort.train.loop import TrainConfig
    from cohort.train.splits import SplitConfig
    from cohort.train.study import StudyConfig

    config = StudyConfig(
        train=TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                          lr=args.lr, momentum=args.momentum,
                          warmup_epochs=args.warmup_epochs, patience=args.patience,
                          seed=args.seed),
        splits=SplitConfig(folds=args.folds, seed=args.seed), workers=args.workers,
        use_gpu=args.gpus, cpus_per_worker=args.threads,
        model_input=ModelInputConfig(size=args.input_size))
    print(train_localization(args.data, args.out, config, labels_url=args.labels,
                             ablations=tuple(args.ablations),
                             options=_storage_options(args.s3_endpoint)))
    return 0


# --- Clean-CC-CCII: `synth ccccii` and `benchmark ccccii` ---------------------------------


def _ccccii_parsers(sub, synth_sub) -> None:
    from cohort.synth.ccccii import ChestConfig

    d = ChestConfig()
    paper_models = "dst,resnet50_3d,densenet121_3d"  # the paper's Table III (DST at its size)
    syn = synth_sub.add_parser(
        "ccccii", help="a synthetic Clean-CC-CCII stand-in: chest CT slices as PNG/JPEG",
        description="Write a SYNTHETIC stand-in for Clean-CC-CCII in its folder layout "
                    "(OUT/<NCP|CP|Normal>/<patient_id>/<scan_id>/<k>.png): chest CT slices "
                    "with lungs, mediastinum and ribs; NCP scans carry bilateral peripheral "
                    "ground-glass opacities, CP scans a lobar consolidation, Normal none.")
    syn.add_argument("--out", required=True, metavar="URL", help="where to write the set")
    syn.add_argument("--patients", type=int, default=d.patients,
                     help=f"patients, spread over the three classes (default {d.patients})")
    syn.add_argument("--seed", type=int, default=d.seed)
    syn.add_argument("--matrix", type=int, default=d.matrix,
                     help=f"pixels per side (default {d.matrix}; the real data: 512)")
    syn.add_argument("--slices", type=int, nargs=2, default=[d.min_slices, d.max_slices],
                     metavar=("MIN", "MAX"), help="slices per scan, drawn in this range "
                                                  f"(default {d.min_slices} {d.max_slices})")
    syn.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint")

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
    b.add_argument("--models", default=paper_models,
                   help="comma-separated: dst (paper size), dst-small, dst-tiny, resnet50_3d, "
                        f"densenet121_3d, resnet_tiny_3d, densenet_tiny_3d (default "
                        f"{paper_models})")
    b.add_argument("--ablation-blocks", type=int, nargs="*", default=[0, 1], metavar="N",
                   help="Table V: also train the first DST with these block counts "
                        "(default 0 1; none to skip)")
    b.add_argument("--size", type=int, default=128, help="in-plane pixels (default 128)")
    b.add_argument("--depth", type=int, default=64, help="slices after resizing (default 64)")
    b.add_argument("--native-depth", action="store_true",
                   help="DST models read each scan at its own depth (in-plane resized only)")
    b.add_argument("--folds", type=int, default=5)
    b.add_argument("--epochs", type=int, default=30)
    b.add_argument("--batch-size", type=int, default=4)
    b.add_argument("--lr", type=float, default=2e-3, help="SGD learning rate (paper: 2e-3)")
    b.add_argument("--momentum", type=float, default=0.9)
    b.add_argument("--patience", type=int, default=10,
                   help="epochs without a lower validation loss before stopping")
    b.add_argument("--workers", type=int, default=1, help="Ray Train workers per fold")
    b.add_argument("--gpus", action="store_true", help="one GPU per worker")
    b.add_argument("--threads", type=int, default=1, help="CPUs (torch threads) per worker")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint")


def _run_ccccii(args: argparse.Namespace) -> int:
    options = _storage_options(args.s3_endpoint)
    if args.command == "synth":
        from cohort.storage import check_writable
        from cohort.synth.ccccii import ChestConfig, describe, generate_ccccii

        cfg = ChestConfig(patients=args.patients, seed=args.seed, matrix=args.matrix,
                          min_slices=args.slices[0], max_slices=args.slices[1])
        check_writable(args.out, options)
        t0 = time.perf_counter()
        rows = generate_ccccii(cfg, args.out, options)
        print(describe(rows, args.out, time.perf_counter() - t0))
        return 0
    from cohort.ccccii.benchmark import BenchmarkConfig
    from cohort.ccccii.cache import InputConfig
    from cohort.ccccii.command import benchmark_ccccii
    from cohort.train.loop import TrainConfig
    from cohort.train.splits import SplitConfig
    from cohort.train.study import StudyConfig

    config = BenchmarkConfig(
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        ablation_blocks=tuple(args.ablation_blocks),
        input=InputConfig(size=args.size, depth=args.depth), native_depth=args.native_depth,
        study=StudyConfig(
            train=TrainConfig(task="classification", model="dst", epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                              patience=args.patience, seed=args.seed),
            splits=SplitConfig(folds=args.folds, seed=args.seed), workers=args.workers,
            use_gpu=args.gpus, cpus_per_worker=args.threads))
    print(benchmark_ccccii(args.data, args.out, config, options=options))
    return 0


def _storage_failures() -> tuple[type[BaseException], ...]:
    """What storage libraries raise when an endpoint or the credentials are wrong."""
    kinds: list[type[BaseException]] = [OSError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        kinds += [BotoCoreError, ClientError]
    except ImportError:  # pragma: no cover (s3fs brings botocore)
        pass
    return tuple(kinds)


def quiet_ray() -> None:
    """Ray's own messages below warnings stay in its log files (``-v`` shows them): its C++
    core's error lines about restartable actors, Ray Data's operator dumps."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("cohort.progress").setLevel(logging.INFO)  # shown without -v
    if not args.verbose:
        quiet_ray()
    try:
        if args.command == "synth" and args.what == "heads":
            return _run_synth_heads(args)
        if args.command == "index":
            return _run_index(args)
        if args.command == "demo":
            return _run_demo(args)
        if args.command in ("run", "query"):
            from cohort.cli_run import run_query, run_run

            text = run_run(args) if args.command == "run" else run_query(args)
            if text:
                print(text)
            return 0
        if args.command == "train" and args.what == "localization":
            return _run_train_localization(args)
        if args.command == "train" and args.what == "shipped":
            from cohort.infer.checkpoint import shipped_checkpoint
            from cohort.train.ship import ship

            print(ship(args.out, args.to or shipped_checkpoint(),
                       options=_storage_options(None)))
            return 0
        if (args.command, getattr(args, "what", None)) in (("synth", "ccccii"),
                                                           ("benchmark", "ccccii")):
            return _run_ccccii(args)
    except ConfigError as e:
        print(f"cohort: error: {e}", file=sys.stderr)
        return 2
    except (StorageError, CohortError) as e:
        print(f"cohort: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cohort: interrupted. A run stopped midway publishes nothing and is ignored; "
              "the same command goes on where the published runs left off", file=sys.stderr)
        return 130
    except _storage_failures() as e:  # unreachable endpoint, no or wrong credentials
        print(f"cohort: error: {type(e).__name__}: {e}; check the path or URL, "
              "--s3-endpoint, and the storage credentials (AWS_ACCESS_KEY_ID and "
              "AWS_SECRET_ACCESS_KEY, or a profile)", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
