"""The main job, `cohort run`, stage by stage.

    manifest (cohort index, run here when the input is not indexed yet)
      -> series already finished in published runs are left alone (resume: two arrays of
         keys, judged in DuckDB over the published rows' few columns)
      -> the driver scans the manifest in bounded batches: counts, and the rows of series
         the index did not select (they need no processing)     (cohort.job.manifest_stream)
      -> Ray Data reads the manifest (read_parquet, filtered in the read tasks), one row per
         series; the file lists never pass through the driver:
         map          CPU task per series, 1 CPU, in an isolated process with a time limit:
                      fetch, decode, validate, tilt-correct, hemisphere split, calcium
                      summary from the user's mask (or the segmenter's arterial slab),
                      model input
                                                 (cohort.job.stages -> cohort.job.prepare)
         map_batches  DST actors (num_gpus=1 each on GPU nodes, else CPU), batches of
                      similar depth, left-padded                     (cohort.job.landmarks)
         map_batches  without --masks: calcium segmenter actors (a GPU shared with the
                      DST's), the arterial crop from the landmarks, calibrated masks and
                      volume intervals                                 (cohort.job.calcium)
         map          CPU: segment volumes, risk group, QC flags, QC picture for flagged
                      series, optional label maps (cohort.job.stages -> cohort.job.finish)
      -> the driver writes series / landmarks / segments Parquet in parts as rows arrive,
         then the run manifest `_SUCCESS.json` last            (cohort.write.runs)

Every input series gets exactly one row per run: ok, skipped (not selected at indexing,
with the reason) or error (with its code). Nothing raises out of a stage for one series.
A run stopped midway (its driver killed) publishes nothing itself; the next run on the
output publishes the parts it wrote as an interrupted run and processes the rest
(`cohort.write.recovery`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from cohort import __version__
from cohort.config import IndexConfig
from cohort.discover.listing import check_inputs, describe_inputs, input_list
from cohort.errors import ConfigError, StorageError
from cohort.job.checkpoint import ModelInfo, describe
from cohort.job.config import RunConfig
from cohort.job.finish import FinishConfig
from cohort.job.manifest_stream import (
    manifest_patient_ids,
    not_processed_rows,
    scan_manifest,
    series_dataset,
)
from cohort.job.preflight import (
    check_masks,
    check_resources,
    check_written_keys,
    index_of_inputs,
    inside,
    only_ours,
)
from cohort.job.prepare import PrepareConfig
from cohort.job.rows import plain
from cohort.job.segmenter_checkpoint import SegmenterInfo, describe_segmenter
from cohort.job.stages import finish_stage, prepare_stage
from cohort.preprocess.model_input import ModelInputConfig
from cohort.quantify.qc import FlagCounter
from cohort.ray_session import RaySession
from cohort.storage import (
    StorageOptions,
    check_endpoint,
    check_writable,
    filesystem,
    join,
    redact,
)
from cohort.write.identity import IdentityConfig
from cohort.write.ownership import (
    check_identity,
    claim,
    record_identity,
)
from cohort.write.progress import Progress
from cohort.write.recovery import recover_unfinished
from cohort.write.runs import (
    RunWriter,
    finished,
    new_run_id,
    run_url,
)

logger = logging.getLogger(__name__)
progress_logger = logging.getLogger("cohort.progress")

GiB = 1024**3


@dataclass(frozen=True)
class RunReport:
    run_id: str | None  # None: nothing to do, nothing published
    url: str | None
    counts: dict[str, int]  # ok / skipped / error among this run's rows; finished_earlier
    seconds: float
    scans_per_minute: float
    manifest: dict
    out_url: str | None = None
    qc_lines: list[str] = field(default_factory=list)  # how many series flagged, and why

    def line(self) -> str:
        c = self.counts
        if self.run_id is None:
            return (f"nothing to do: every series of {redact(self.out_url or '')} finished in "
                    "earlier runs (--retry-failed redoes failed ones); nothing was published")
        return (f"run {self.run_id}: {c.get('ok', 0)} ok, {c.get('skipped', 0)} skipped, "
                f"{c.get('error', 0)} failed, {c.get('finished_earlier', 0)} finished in "
                f"earlier runs{self._later()}; {self.scans_per_minute:.1f} scans/min over "
                f"{self.seconds:.0f} s -> {self.url}")

    def _later(self) -> str:
        n = self.counts.get("left_for_later", 0)
        return (f", {n} selected left for later runs (--max-series; the same command goes on)"
                if n else "")


def code_version() -> str:
    """The package version, with the git commit when running from a checkout."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, timeout=5,
                             capture_output=True, text=True, check=True).stdout.strip()
        return f"{__version__}+g{sha}" if sha else __version__
    except (OSError, subprocess.SubprocessError):
        return __version__


def ensure_index(inputs: str | Sequence[str], index: str | None, out_url: str,
                 config: IndexConfig, options: StorageOptions | None) -> str:
    """The URL of the inputs' manifest: the published ``index`` when the input is one
    (`index_of`), else a fresh index of the archive (one or several inputs, indexed
    together) under ``<out>/index``."""
    from cohort.discover.index import index_cohort

    if index is not None:
        return index
    inputs = input_list(inputs)
    index_url = join(out_url, "index")
    logger.info("indexing %s into %s", describe_inputs(inputs), redact(index_url))
    index_cohort(inputs, index_url, config, options)
    return index_url


def _dataset(source, n_series: int, config: RunConfig, prepare: PrepareConfig,
             finish: FinishConfig, model: ModelInfo, seg: SegmenterInfo | None = None):
    """The job's stages over ``source``, a dataset of ``n_series`` input rows, one per
    block (`cohort.job.manifest_stream.series_dataset`)."""
    import ray

    from cohort.job.landmarks import LandmarkPredictor  # torch: the actors' import only

    context = ray.data.DataContext.get_current()
    # the job shows one progress display of its own (cohort.write.progress); Ray Data's
    # operator bars and logs are for -v
    context.enable_progress_bars = logging.getLogger().isEnabledFor(logging.INFO)
    if not context.enable_progress_bars:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # its notice that we switched the bars off
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    ds = source
    # worker deaths are retried by Ray Data's defaults (tasks and actor restarts); failures
    # of a series never raise out of a stage
    ds = ds.map(prepare_stage, fn_kwargs={"config": prepare},
                num_cpus=config.task_cpus, memory=config.task_memory_gb * GiB)
    actors = config.gpus or config.cpu_actors
    actor_cpus = config.reserved_actor_cpus
    # with the segmenter, its actors and the DST's share each GPU (half each)
    gpu_share = (0.5 if seg is not None else 1) if config.gpus else 0
    ds = ds.map_batches(
        LandmarkPredictor, batch_size=config.batch_size * 2, batch_format="pandas",
        fn_constructor_kwargs={"model_url": config.model, "sha256": model.sha256,
                               "storage": prepare.storage,
                               "threads": config.actor_threads,
                               "batch_size": config.batch_size,
                               "prefer_gpu": config.gpus > 0},
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=gpu_share, num_cpus=actor_cpus)
    if seg is not None:
        from cohort.job.calcium import CalciumSegmenterStage

        ds = ds.map_batches(
            CalciumSegmenterStage, batch_size=config.batch_size, batch_format="pandas",
            fn_constructor_kwargs={"model_url": config.segmenter, "sha256": seg.sha256,
                                   "storage": prepare.storage,
                                   "threads": config.actor_threads,
                                   "prefer_gpu": config.gpus > 0, "run_url": finish.run_url,
                                   "write_masks": config.write_masks or config.dicom_seg},
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=gpu_share, num_cpus=actor_cpus)
    # the actors hand on one block per batch: no more finish tasks than blocks
    blocks = -(-n_series // (2 * config.batch_size))
    return ds.map(finish_stage, fn_kwargs={"config": finish},
                  **finish_resources(config, max_tasks=blocks))


def _rows_as_they_come(ds):
    """The rows of ``ds``, each block's as soon as it is done. ``Dataset.iter_rows`` hands a
    block on only once the next one has arrived (it prefetches one), so the driver would
    write a finished batch only when another finishes: rows held back behind a slow or
    stalled series, and lost with a driver killed meanwhile."""
    from ray.data.block import BlockAccessor

    for batch in ds.iter_batches(batch_size=None, batch_format=None, prefetch_batches=0):
        yield from BlockAccessor.for_block(BlockAccessor.batch_to_block(batch)).iter_rows(
            public_row_format=True)


def finish_heavy(config: RunConfig) -> bool:
    """Whether the finish stage reads full-resolution data for most series (a QC picture
    for every series, or label maps); otherwise it is light: quantification of the calcium
    summary (milliseconds) and pictures for the few flagged series."""
    return config.qc == "all" or config.label_maps or config.dicom_seg


def finish_resources(config: RunConfig, max_tasks: int | None = None) -> dict:
    """Ray resources of the finish stage's tasks.

    A heavy finish stage reserves CPU and memory like the prepare stage. A light one
    reserves no CPU, in a pool of ``finish_tasks``: Ray Data gives every stage that reserves
    CPU a share of the cluster (half of it is split evenly between them), so a 1-CPU finish
    stage would hold back a 1-CPU prepare task on a small machine while itself idling most of
    the time. Ray Data also hands the resources an operator does not need (its pool's
    maximum) to the others. ``max_tasks``: the stage's input blocks, when fewer.
    """
    import ray

    if finish_heavy(config):
        return {"num_cpus": config.task_cpus, "memory": config.task_memory_gb * GiB}
    size = max(1, min(config.finish_tasks, max_tasks or config.finish_tasks))
    return {"num_cpus": 0, "compute": ray.data.TaskPoolStrategy(size=size)}


def run_cohort(inputs: str | Sequence[str], out_url: str, config: RunConfig | None = None,
               options: StorageOptions | None = None) -> RunReport:
    """Run the job (see the module docstring) on ``inputs``: a DICOM archive or a published
    index, or several archives (folders, prefixes, buckets on one storage) indexed together;
    return what it did.

    Every check that can refuse the job runs before anything is written; an output folder
    this call created is removed again when it refuses. The run claims the output
    (`cohort.write.ownership`), recovers the runs stopped before they published (their
    finished series are kept, `cohort.write.recovery`), and shuts down a Ray instance it
    started.

    Raises:
        ConfigError / StorageError: before any series is processed (bad model, masks, inputs
            or output, no salt, another salt than the output's); never because of one series.
    """
    inputs = input_list(inputs)
    config = config or RunConfig()
    t0 = time.perf_counter()
    identity = config.identity.resolved()
    fs_out, out_path = filesystem(out_url, options)
    existed = fs_out.exists(out_path)
    run_id = new_run_id()
    ownership = None
    ray = RaySession(config.index.discovery.num_cpus)  # started on first need, shut down here
    try:
        check_endpoint(options)  # an unreachable S3 server: said within seconds
        check_writable(out_url, options)
        if config.masks:
            fs, path = filesystem(config.masks, options)
            if not fs.isdir(path):
                raise ConfigError(f"--masks {redact(config.masks)} is not a folder; give the "
                                  "folder of <SeriesInstanceUID>.nii.gz calcium masks")
        model = describe(config.model, options)
        seg = describe_segmenter(config.segmenter, options) if config.segmenting else None
        identity_known = check_identity(out_url, identity, options)
        # None: archives, indexed into OUT/index
        index = index_of_inputs(inputs, options)
        if index is None:
            for url in inputs:
                if inside(out_url, url, options):
                    raise ConfigError(f"--out {redact(out_url)} lies inside the input "
                                      f"{redact(url)}: the index would list the job's own "
                                      "outputs; write it elsewhere")
            check_inputs(inputs, options)  # each one exists, before anything is claimed
        ownership = claim(out_url, run_id, options)
        if ownership.took_over:
            logger.warning("run %s on this output was stopped before it ended; taking over",
                           ownership.took_over.get("run_id"))
        ownership.keep_alive()  # a restarted head on another host can take over once it stops
        if index is None and config.index.discovery.executor == "ray":
            ray.ensure()  # the indexer's tasks and the job share this one Ray
        report = _run(inputs, index, out_url, config, options, identity, identity_known,
                      model, run_id, t0, ray, seg)
        if report is None:
            return _nothing_to_do(out_url, t0)
        return report
    except (ConfigError, StorageError):
        if not existed and fs_out.exists(out_path) and only_ours(out_url, options):
            fs_out.rm(out_path, recursive=True)  # a refused command leaves nothing behind
        raise
    finally:
        if ownership is not None:
            ownership.release()
        ray.close()


def _run(inputs: tuple[str, ...], index: str | None, out_url: str, config: RunConfig,
         options: StorageOptions | None, identity: IdentityConfig, identity_known: bool,
         model: ModelInfo, run_id: str, t0: float, ray: RaySession,
         seg: SegmenterInfo | None = None) -> RunReport | None:
    """The job once it owns the output; None when there is nothing to do."""
    model_input = ModelInputConfig(**model.model_input) if model.model_input else \
        ModelInputConfig()
    # deeper series are decimated by a whole factor (recorded), never refused by the model
    model_input = replace(model_input, max_len=min(model_input.max_len, model.max_len))
    index_url = ensure_index(inputs, index, out_url, config.index, options)
    # runs stopped before they published: their finished series are kept, the rest is ours
    recover_unfinished(out_url, run_id, options)
    # the driver holds key arrays and counts, never the manifest's or the outputs' rows
    # (cohort.job.manifest_stream)
    done = finished(out_url, options, retry_failed=config.retry_failed,
                    model_sha256=model.sha256,
                    need_volumes=bool(config.masks) or seg is not None,
                    mask_source=seg.mask_source if seg is not None else None)
    plan = scan_manifest(index_url, options, done, config.max_series,
                         want_uids=bool(config.masks))
    if plan.series == 0:
        hold = "holds" if len(inputs) == 1 else "hold"
        raise ConfigError(f"{describe_inputs(inputs)} {hold} no DICOM series (the index "
                          f"{redact(index_url)} lists why each object was not used: "
                          "objects.parquet); give a folder or prefix of DICOM files")
    if not identity_known:
        check_written_keys(out_url, manifest_patient_ids(index_url, options), identity,
                           options)
    if plan.todo == 0:
        return None
    if config.masks and plan.to_process:
        check_masks(config.masks, list(plan.uids), options)
    if plan.to_process:  # before anything is written: a job Ray cannot schedule would wait
        ray.ensure()
        check_resources(config.resource_request)
    record_identity(out_url, identity, options)
    url = run_url(out_url, run_id)
    writer = RunWriter(out_url, run_id, options, config.part_rows, config.part_seconds)
    common = {"run_id": run_id, "model_name": model.name, "model_sha256": model.sha256,
              "model_trained_on": model.trained_on, "code_version": code_version()}
    counts = {"ok": 0, "skipped": 0, "error": 0, "finished_earlier": plan.finished_earlier,
              "left_for_later": plan.left_for_later}
    record = {
        "what": "cohort run", "run_id": run_id, "input": describe_inputs(inputs),
        "inputs": [redact(u) for u in inputs],
        "index": redact(index_url), "output": redact(out_url),
        "model": {"source": model.source, "name": model.name, "sha256": model.sha256,
                  "trained_on": model.trained_on, "model_input": asdict(model_input),
                  "calibrated": model.has_temperatures,
                  "confidence_threshold": model.confidence_threshold},
        "segmenter": _segmenter_record(seg),
        "masks": "external" if config.masks else ("segmenter" if seg else None),
        "code_version": common["code_version"],
        "config": _config_record(config),
        "counts": {k: counts[k] for k in ("finished_earlier", "left_for_later")},
        "series_in_manifest": plan.series,
    }
    writer.begin(record)  # what the run is, should it be stopped before it publishes
    for row in not_processed_rows(index_url, options, done, common, identity):
        counts[row["status"]] += 1
        writer.add(row)
    prepare = PrepareConfig(read=replace(config.read, rules=config.index.stack),
                            model_input=model_input, masks_url=config.masks,
                            crop=seg.crop if seg is not None else None,
                            mask_problems=config.mask_problems,
                            timeout_s=config.series_timeout_s, storage=options)
    finish = FinishConfig(quantify=config.quantify, prepare=prepare, run_url=url,
                          qc=config.qc, qc_series=frozenset(config.qc_series),
                          label_maps=config.label_maps, dicom_seg=config.dicom_seg,
                          keep_ids=identity.keep_ids)
    stats = ""
    flags = FlagCounter()  # the run's QC summary, in constant memory
    t_stream = time.perf_counter()
    if plan.to_process:
        progress_logger.info("run %s: %d series to process (%d finished in earlier runs, %d "
                             "not selected)", run_id, plan.to_process, counts["finished_earlier"],
                             counts["skipped"] + counts["error"])
        source = series_dataset(index_url, options, done, plan, common, identity)
        ds = _dataset(source, plan.to_process, config, prepare, finish, model, seg)
        progress = Progress(plan.to_process, every=config.progress_every)
        try:
            for row in _rows_as_they_come(ds):
                row = {k: plain(v) for k, v in row.items()}
                counts[row["status"]] += 1
                writer.add(row)
                progress.update(row["status"])
                flags.add(row)
        finally:
            progress.close()
        stats = ds.stats()
    seconds = time.perf_counter() - t0
    rate = plan.to_process / max(1e-9, time.perf_counter() - t_stream) * 60
    qc = flags.summary()
    payload = {
        **record, "counts": counts,
        "seconds": round(seconds, 1), "scans_per_minute": round(rate, 2),
        "qc": asdict(qc),
        "ray_data_stats": stats,
    }
    writer.publish(payload)
    if config.dicomweb and counts["ok"]:
        push_run(config.dicomweb, url, options)  # after publishing: the files stay local
    report = RunReport(run_id, url, counts, seconds, rate, payload, qc_lines=qc.lines())
    logger.info(report.line())
    return report


def _segmenter_record(seg: SegmenterInfo | None) -> dict | None:
    """The calcium segmenter of a run, for its manifest."""
    if seg is None:
        return None
    return {"source": seg.source, "name": seg.name, "sha256": seg.sha256,
            "trained_on": seg.trained_on, "temperature": seg.temperature,
            "threshold": seg.threshold, "interval_level": seg.level,
            "interval_thresholds": list(seg.bounds), "crop": asdict(seg.crop),
            "component_filter": seg.component_filter is not None}


def push_run(dicomweb: str, url: str, options: StorageOptions | None) -> int:
    """Store a published run's SEG and SR files (``dicom/*/*.dcm``) at a DICOMweb server.

    Raises:
        DicomWebError: the server cannot be reached or refuses (the run stays published).
    """
    from cohort.export.dicomweb import DicomWebConfig, push

    fs, path = filesystem(join(url, "dicom"), options)
    if not fs.exists(path):
        return 0
    found = sorted(fs.glob(f"{path}/*/*.dcm"))
    urls = [join(url, "dicom", *p[len(path) + 1:].split("/")) for p in found]
    return push(DicomWebConfig(dicomweb), urls, options)


def _nothing_to_do(out_url: str, t0: float) -> RunReport:
    """The report of a run that found every series finished: nothing is published."""
    return RunReport(None, None, {}, time.perf_counter() - t0, 0.0, {}, out_url=out_url)


def _config_record(config: RunConfig) -> dict:
    """The run's configuration for its manifest: plain values, no secrets."""
    record = asdict(config)
    record["identity"] = {"salted": bool(config.identity.resolved().salt),
                          "keep_ids": config.identity.keep_ids}
    for key in ("model", "masks", "segmenter"):
        if record.get(key):
            record[key] = redact(record[key])
    return record
