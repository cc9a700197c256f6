"""`cohort synth heads` and `cohort synth ccccii`: synthetic cohorts in real file formats."""

from __future__ import annotations

import argparse
import time

from cohort.cli.options import add_s3_endpoint, storage_options

NAME = "synth"
HELP = "generate synthetic cohorts in real file formats"


def add_parser(sub) -> None:
    from cohort.synth.ccccii import ChestConfig
    from cohort.synth.config import SynthConfig

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
    _head_options(heads, SynthConfig())
    heads.set_defaults(handler=handle_heads)

    d = ChestConfig()
    syn = synth_sub.add_parser(
        "ccccii", help="a synthetic Clean-CC-CCII stand-in: chest CT slices as PNG/JPEG",
        description="Write a SYNTHETIC stand-in for Clean-CC-CCII in its folder layout "
                    "(OUT/<NCP|CP|Normal>/<patient_id>/<scan_id>/<k>.png): chest CT slices "
                    "with lungs, mediastinum and ribs; NCP scans carry bilateral peripheral "
                    "ground-glass opacities, CP scans a lobar consolidation, Normal none.")
    syn.add_argument("--out", required=True, metavar="URL", help="where to write the set")
    syn.add_argument("--patients", type=int, default=d.patients,
                     help="patients, spread over the three classes (default %(default)s)")
    syn.add_argument("--seed", type=int, default=d.seed, help="(default %(default)s)")
    syn.add_argument("--matrix", type=int, default=d.matrix,
                     help="pixels per side (default %(default)s; the real data: 512)")
    syn.add_argument("--slices", type=int, nargs=2, default=[d.min_slices, d.max_slices],
                     metavar=("MIN", "MAX"), help="slices per scan, drawn in this range "
                                                  "(default %(default)s)")
    add_s3_endpoint(syn)
    syn.set_defaults(handler=handle_ccccii)


def _head_options(p: argparse.ArgumentParser, d) -> None:
    p.add_argument("--patients", type=int, default=d.patients,
                   help="number of synthetic patients (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed; same seed, same bytes")
    p.add_argument("--matrix", type=int, default=d.matrix,
                   help="rows = columns of each slice (default %(default)s; 128 is handy for "
                        "tests)")
    p.add_argument("--thickness", type=float, nargs="+", metavar="MM",
                   help="slice thickness(es) to draw from, in mm (default: "
                        f"{' '.join(f'{t:g}' for t in d.thicknesses_mm)})")
    p.add_argument("--tilt", type=float, default=d.tilt_p, metavar="P",
                   help="probability of a gantry-tilted series (default %(default)s)")
    p.add_argument("--stepped", type=float, default=d.stepped_p, metavar="P",
                   help="probability that a primary series is a sequential head protocol of "
                        "two contiguous blocks, thin slices through the posterior fossa and "
                        "thicker ones above, e.g. 4 mm then 7 mm (default %(default)s); with "
                        "--tilt, both blocks are tilted")
    p.add_argument("--localizer", type=float, default=d.localizer_p, metavar="P",
                   help="probability of a localizer in a study (default %(default)s)")
    p.add_argument("--second-series", type=float, default=d.second_series_p, metavar="P",
                   help="probability of a bone-kernel or thick series beside the primary "
                        "(default %(default)s)")
    p.add_argument("--followup", type=float, default=d.followup_p, metavar="P",
                   help="probability of a follow-up study (default %(default)s)")
    p.add_argument("--neck-cut", type=float, default=d.neck_cut_p, metavar="P",
                   help="probability that the scan stops below the skull base "
                        "(default %(default)s)")
    p.add_argument("--calcium-free", type=float, default=d.calcium_free_p, metavar="P",
                   help="fraction of subjects without calcification (default %(default)s)")
    p.add_argument("--metal", type=float, default=d.metal_p, metavar="P",
                   help="fraction of subjects with dental fillings, whose metal throws "
                        "streaks (default %(default)s)")
    p.add_argument("--motion", type=float, default=d.motion_p, metavar="P",
                   help="probability that the head moved during a scan: doubled edges in "
                        "a run of slices (default %(default)s)")
    p.add_argument("--holder", type=float, default=d.holder_p, metavar="P",
                   help="probability of a head holder behind the head (default %(default)s)")
    p.add_argument("--transfer-syntax", default=d.transfer_syntax,
                   help="explicit, implicit, deflate, rle, jpeg-ls, jpeg2000, or mixed "
                        "(default %(default)s)")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="worker processes (default %(default)s: one per CPU)")
    p.add_argument("--ray", action="store_true",
                   help="one Ray task per patient on the connected Ray cluster (use inside "
                        "`ray job submit`), instead of local processes")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a cohort written to OUT before")
    add_s3_endpoint(p)


def synth_config(args: argparse.Namespace):
    from cohort.synth.config import SynthConfig

    kw = dict(patients=args.patients, seed=args.seed, matrix=args.matrix, tilt_p=args.tilt,
              stepped_p=args.stepped, localizer_p=args.localizer,
              second_series_p=args.second_series, followup_p=args.followup,
              neck_cut_p=args.neck_cut, calcium_free_p=args.calcium_free,
              metal_p=args.metal, motion_p=args.motion, holder_p=args.holder,
              transfer_syntax=args.transfer_syntax, workers=args.workers)
    if args.thickness:
        kw["thicknesses_mm"] = tuple(args.thickness)
    return SynthConfig(**kw)


def handle_heads(args: argparse.Namespace) -> str:
    from cohort.storage import check_writable
    from cohort.synth.heads import generate_cohort
    from cohort.synth.summary import describe_cohort

    cfg = synth_config(args)
    options = storage_options(args.s3_endpoint)
    check_writable(args.out, options)
    t0 = time.perf_counter()
    table = generate_cohort(cfg, args.out, options, overwrite=args.overwrite,
                            executor="ray" if args.ray else "processes")
    return describe_cohort(table, args.out, time.perf_counter() - t0)


def handle_ccccii(args: argparse.Namespace) -> str:
    from cohort.storage import check_writable
    from cohort.synth.ccccii import ChestConfig, describe, generate_ccccii

    options = storage_options(args.s3_endpoint)
    cfg = ChestConfig(patients=args.patients, seed=args.seed, matrix=args.matrix,
                      min_slices=args.slices[0], max_slices=args.slices[1])
    check_writable(args.out, options)
    t0 = time.perf_counter()
    rows = generate_ccccii(cfg, args.out, options)
    return describe(rows, args.out, time.perf_counter() - t0)
