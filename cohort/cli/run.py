"""`cohort run`: the cohort job, landmarks and segment calcium -> Parquet."""

from __future__ import annotations

import argparse
import shlex

from cohort.cli.options import add_index_options, index_config, storage_options

RUN_HELP = ("Process a cohort: INPUT_URL is a DICOM archive (folder, s3://bucket/prefix, any "
            "fsspec URL; it is indexed first, into OUT/index; several INPUT_URLs on one "
            "storage are indexed together) or a folder written by `cohort index`. Each "
            "selected series is read, checked, tilt-corrected, split into hemispheres; the "
            "DST finds its six landmark slices; the calcium segmenter (a "
            "calibrated 3-D ViT on a crop around both ICAs) makes the calcium mask, or "
            "--masks gives yours; calcium is assigned to the eight ICA segments, with a "
            "volume interval per segment from the segmenter's calibrated probabilities. "
            "Results: Parquet tables series / landmarks / segments under OUT/runs/<run_id>/, "
            "published by a _SUCCESS.json written last. "
            "Re-running the same command processes only series not finished before. Without "
            "--model / --segmenter the shipped checkpoints are used: trained on SYNTHETIC "
            "phantoms, a demonstration, not for clinical or research conclusions.")


NAME = "run"
HELP = "the cohort job: landmarks and segment calcium -> Parquet"


def add_parser(sub) -> None:
    from cohort.job.finish import QC_CHOICES
    from cohort.pipeline import RunConfig
    from cohort.quantify import QuantifyConfig

    d, quant = RunConfig(), QuantifyConfig()  # the defaults are defined once, there

    p = sub.add_parser("run", help="the cohort job: landmarks and segment calcium -> Parquet",
                       description=RUN_HELP)
    p.add_argument("input", metavar="INPUT_URL", nargs="+",
                   help="DICOM archive or `cohort index` folder; several archives (folders, "
                   "prefixes or buckets on one storage) are indexed and run together")
    p.add_argument("--out", required=True, metavar="URL", help="output folder or s3:// prefix")
    p.add_argument("--model", metavar="CKPT", help="DST checkpoint (.pt, path or URL) from "
                   "`cohort train localization` (models/fold-<f>.pt); default: the shipped "
                   "synthetic-phantom checkpoint")
    p.add_argument("--masks", metavar="URL", help="folder of calcium masks named "
                   "<SeriesInstanceUID>.nii.gz on each series' grid (e.g. renamed nnU-Net "
                   "output); they win over the segmenter, which then does not run")
    p.add_argument("--segmenter", metavar="CKPT", help="calcium segmenter checkpoint from "
                   "`cohort train segmenter` (models/vit-fold-<f>.pt); default: the shipped "
                   "synthetic-phantom segmenter")
    p.add_argument("--no-segmenter", action="store_true",
                   help="without --masks: landmarks only, no calcium volumes")
    p.add_argument("--write-masks", action="store_true",
                   help="write the segmenter's calcium masks as NIfTI on each series' grid "
                   "(runs/<run_id>/masks/)")
    p.add_argument("--gpus", type=int, default=d.gpus, metavar="N",
                   help="inference actors with one GPU each (default %(default)s: CPU actors)")
    p.add_argument("--cpu-actors", type=int, default=d.cpu_actors, metavar="N",
                   help="inference actors when --gpus is 0 (default %(default)s)")
    p.add_argument("--actor-cpus", type=float, default=d.actor_cpus,
                   help="CPUs Ray reserves per inference actor (default: 1 with --gpus, else 0)")
    p.add_argument("--actor-threads", type=int, default=d.actor_threads,
                   help="torch threads per inference actor (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="volumes per forward pass (default %(default)s)")
    p.add_argument("--timeout", type=float, default=d.series_timeout_s, metavar="S",
                   help="seconds one series may take before it is cut off (default "
                        "%(default)g)")
    p.add_argument("--task-memory", type=float, default=d.task_memory_gb, metavar="GB",
                   help="memory Ray reserves per series task (default %(default)g)")
    p.add_argument("--task-cpus", type=float, default=d.task_cpus, metavar="N",
                   help="CPUs Ray reserves per series task (default %(default)g; 0.5 runs two "
                   "per core, for object stores far away)")
    p.add_argument("--finish-tasks", type=int, default=d.finish_tasks, metavar="N",
                   help="concurrent finish tasks (quantification, flagged QC pictures) when "
                   "they are light; with --qc all or --label-maps they reserve CPUs like "
                   "series tasks (default %(default)s)")
    p.add_argument("--retry-failed", action="store_true",
                   help="process again the series whose last published row is an error")
    p.add_argument("--qc", choices=QC_CHOICES, default=d.qc,
                   help="QC pictures for flagged series, all, or none (default %(default)s)")
    p.add_argument("--qc-series", nargs="+", default=[], metavar="UID",
                   help="series (UIDs or keys) that get a QC picture whatever their flags")
    p.add_argument("--label-maps", action="store_true",
                   help="write NIfTI segment label maps (needs --masks), for 3D Slicer / ITK-SNAP")
    p.add_argument("--dicom-seg", action="store_true",
                   help="write a DICOM SEG (calcium by ICA segment) and a DICOM SR (TID 1500: "
                   "volumes, plaques, peak HU, total, risk group, landmarks) per series "
                   "under RUN/dicom/<series>/ (highdicom; de-identified like the tables)")
    p.add_argument("--dicomweb", metavar="URL",
                   help="after the run, store its SEG and SR at this DICOMweb root "
                   "(STOW-RS), e.g. http://pacs:8042/dicom-web; credentials from "
                   "COHORT_DICOMWEB_USER / COHORT_DICOMWEB_PASSWORD; needs --dicom-seg")
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
    add_index_options(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> str:
    """Run the job; return what to print."""
    from cohort.pipeline import RunConfig, run_cohort
    from cohort.write.identity import IdentityConfig

    config = RunConfig(
        model=args.model, masks=args.masks, segmenter=args.segmenter,
        segment=not args.no_segmenter, write_masks=args.write_masks,
        gpus=args.gpus, cpu_actors=args.cpu_actors,
        actor_cpus=args.actor_cpus, actor_threads=args.actor_threads,
        batch_size=args.batch_size, series_timeout_s=args.timeout,
        task_memory_gb=args.task_memory, task_cpus=args.task_cpus,
        finish_tasks=args.finish_tasks, retry_failed=args.retry_failed, qc=args.qc,
        qc_series=tuple(args.qc_series), label_maps=args.label_maps,
        dicom_seg=args.dicom_seg, dicomweb=args.dicomweb,
        max_series=args.max_series, mask_problems="error" if args.mask_errors else "note",
        quantify=_quantify_config(args),
        identity=IdentityConfig(salt=args.salt, keep_ids=args.keep_ids),
        index=index_config(args))
    report = run_cohort(tuple(args.input), args.out, config,
                        storage_options(args.s3_endpoint))
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
