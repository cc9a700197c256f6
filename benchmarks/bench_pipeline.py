"""The cohort job end to end (`run_cohort` on Ray Data) against a sequential loop of the same
stage code in one process, and the job's peak memory at two cohort sizes, in one run.

    python benchmarks/bench_pipeline.py [--small 20] [--large 200] [--matrix 512] [--cpus 2]

A SYNTHETIC cohort (one primary series per patient, with its calcium mask) is generated
straight onto a SeaweedFS S3 server on loopback and indexed once. Then, in this order:

1. sequential: the first --small series, one after the other in this process, with the
   stages' own code: `prepare_series` -> `LandmarkPredictor` on a one-row batch ->
   `finish_stage` (qc none). Per-stage seconds per scan. Inference is also timed alone in
   the pipeline's own batches over the prepared inputs.
2. for --small and then --large series, each on a fresh local Ray with --cpus CPUs:
   a. the slowest stage alone: the prepare stage as the pipeline runs it (Ray Data tasks with
      the job's resources) and nothing else;
   b. the pipeline: `run_cohort`.
   A thread samples the whole process tree (driver, raylet, GCS, workers and their isolated
   decoder processes; the S3 server apart) every --sample-s seconds: memory, CPU, and the
   machine's busy cores.

Prints scans per minute, the ratios pipeline / sequential and pipeline / slowest stage alone
(at both sizes, and as marginal rates without the fixed start-up), CPU per scan, and peak
memory large / small. On a machine with CUDA the pipeline runs one GPU actor and the inference
actor's utilisation is the headline.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from machine_info import machine
from process_sampler import TreePeak, TreeSampler

from cohort.anatomy import LANDMARKS
from cohort.config import DiscoveryConfig, IndexConfig
from cohort.discover.index import index_cohort
from cohort.discover.manifest import read_manifest
from cohort.errors import ErrorCode, SeriesError
from cohort.job.checkpoint import describe, shipped_checkpoint
from cohort.job.finish import FinishConfig
from cohort.job.landmarks import LandmarkPredictor
from cohort.job.prepare import PrepareConfig, prepare_series
from cohort.job.rows import input_rows
from cohort.job.stages import STAGE_DEFAULTS, finish_stage, prepare_stage
from cohort.pipeline import RunConfig, run_cohort
from cohort.preprocess.model_input import ModelInputConfig
from cohort.ray_session import keep_idle_workers
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort
from cohort.testing.seaweed import SeaweedS3
from cohort.write.identity import IdentityConfig
from cohort.write.runs import read_table

BUCKET = "bench-pipeline"
SALT = "bench"
MiB = 1024**2


# --- the model ---------------------------------------------------------------------------


def checkpoint(path: str | None, tmp: Path) -> tuple[str, str]:
    """(checkpoint path, what it is): --model, else the shipped one, else an untrained
    `small` DST at 64 px (throughput depends on the architecture, not on the weights)."""
    if path:
        return path, f"--model {path}"
    shipped = shipped_checkpoint()
    if os.path.isfile(shipped):
        return shipped, f"shipped {Path(shipped).name}"
    import torch

    from cohort.model.dst import build_model, save_checkpoint

    torch.manual_seed(0)
    out = tmp / "dst-small-untrained.pt"
    save_checkpoint(out, build_model("small"), model_input={"size": 64}, synthetic=True)
    return str(out), (
        "untrained DST `small` at 64 x 64 (the shipped checkpoint "
        f"{Path(shipped).name} is not in this checkout)"
    )


# --- the sequential baseline -------------------------------------------------------------


@dataclass
class Sequential:
    n: int
    seconds: float  # the loop, wall clock
    cpu_s: float  # CPU seconds of this process during the loop
    prepare_s: list[float]
    infer_s: list[float]  # one-row batches, as in the loop
    finish_s: list[float]
    infer_batched_s: float  # all prepared inputs, in the pipeline's batches: per scan
    rows: list[dict]  # finished rows (table values only)
    statuses: dict[str, int]


def configs(model_input: dict, masks: str, options, cfg: RunConfig) -> tuple:
    """PrepareConfig and FinishConfig exactly as `run_cohort` builds them."""
    prepare = PrepareConfig(
        read=replace(cfg.read, rules=cfg.index.stack),
        model_input=ModelInputConfig(**model_input),
        masks_url=masks,
        timeout_s=cfg.series_timeout_s,
        storage=options,
    )
    finish = FinishConfig(
        quantify=cfg.quantify,
        prepare=prepare,
        run_url="s3://unused",
        qc=cfg.qc,
        label_maps=cfg.label_maps,
    )
    return prepare, finish


def prepare_here(row: dict, config: PrepareConfig) -> dict:
    """`prepare_stage` without the isolated process (one process, as the baseline says)."""
    row = {**STAGE_DEFAULTS, **row}
    try:
        row.update(prepare_series(list(row["files"]), row["series_uid"], config))
    except SeriesError as e:
        row.update(status="error", error_code=e.code.value, error_detail=str(e))
    except Exception as e:  # noqa: BLE001 - as the stage: one series, one row
        row.update(
            status="error",
            error_code=ErrorCode.PROCESSING_FAILED.value,
            error_detail=f"{type(e).__name__}: {e}",
        )
    return row


def run_sequential(
    rows: list[dict],
    model_path: str,
    prepare: PrepareConfig,
    finish: FinishConfig,
    batch_size: int,
    use_gpu: bool,
) -> Sequential:
    predictor = LandmarkPredictor(model_path, threads=1, batch_size=batch_size, prefer_gpu=use_gpu)
    # warm-up on the first series (imports, allocator, first forward pass), not counted
    predictor(pd.DataFrame([prepare_here(rows[0], prepare)]))
    prep_s, inf_s, fin_s, done, inputs = [], [], [], [], []
    c0, t0 = _self_cpu(), time.perf_counter()
    for row in rows:
        a = time.perf_counter()
        row = prepare_here(row, prepare)
        b = time.perf_counter()
        if row["status"] == "ok":
            inputs.append(row)
        out = predictor(pd.DataFrame([row])).iloc[0].to_dict()
        c = time.perf_counter()
        out = finish_stage(out, finish)
        d = time.perf_counter()
        prep_s.append(b - a)
        inf_s.append(c - b)
        fin_s.append(d - c)
        done.append(out)
    seconds, cpu = time.perf_counter() - t0, _self_cpu() - c0
    # inference alone, in the pipeline's batches (map_batches hands 2 x batch_size rows)
    step = 2 * batch_size
    t1 = time.perf_counter()
    for s in range(0, len(inputs), step):
        predictor(pd.DataFrame(inputs[s : s + step]))
    batched = (time.perf_counter() - t1) / max(1, len(inputs))
    statuses: dict[str, int] = {}
    for r in done:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return Sequential(len(rows), seconds, cpu, prep_s, inf_s, fin_s, batched, done, statuses)


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --- the pipeline ------------------------------------------------------------------------


@dataclass
class PipelineRun:
    n: int
    seconds: float  # run_cohort, wall clock (manifest, streaming, writing, publishing)
    stream_s: float  # the Ray Data part, from the report's scans per minute
    scans_per_minute: float
    statuses: dict[str, int]
    peak: TreePeak
    cores_busy: float  # whole machine, average while the run was sampled
    server_cpu_s: float  # the S3 server's CPU seconds meanwhile
    actor_busy_s: float  # sum of the inference actor's per-series seconds
    series: pd.DataFrame


def start_ray(cpus: int, gpus: int, object_store_gb: float, attempts: int = 3) -> None:
    """A fresh local Ray; tried again when a loaded machine makes the node start time out."""
    import ray

    keep_idle_workers()  # as the job's own local Ray (cohort.ray_session)
    for attempt in range(1, attempts + 1):
        try:
            ray.init(
                num_cpus=cpus,
                num_gpus=gpus,
                object_store_memory=int(object_store_gb * 1024**3),
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
            return
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for a time-out
            ray.shutdown()
            if attempt == attempts:
                raise
            print(f"  (Ray did not start, attempt {attempt}: {e}; trying again)")


def run_pipeline(
    index_url: str,
    out_url: str,
    n: int,
    cfg: RunConfig,
    options,
    args: argparse.Namespace,
    exclude: set[int],
) -> PipelineRun:
    import ray

    gpus = 1 if cfg.gpus else 0
    with TreeSampler(exclude, args.sample_s) as sampler:
        start_ray(args.cpus, gpus, args.object_store_gb)
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            t0 = time.perf_counter()
            report = run_cohort(index_url, out_url, replace(cfg, max_series=n), options)
            seconds = time.perf_counter() - t0
        finally:
            sampler.sample()
            ray.shutdown()
    series = read_table(out_url, "series", options).to_pandas()
    ok = series[series["status"] == "ok"]
    counts = {k: v for k, v in report.counts.items() if v}
    rate = report.scans_per_minute
    return PipelineRun(
        n,
        seconds,
        n / rate * 60 if rate else float("nan"),
        rate,
        counts,
        sampler.peak,
        sampler.cores_busy,
        sampler.excluded_cpu_s,
        float(ok["seconds_inference"].fillna(0).sum()),
        series,
    )


# --- the slowest stage alone ------------------------------------------------------------


@dataclass
class StageRun:
    n: int
    seconds: float  # from building the dataset to its last row, as the pipeline's streaming
    cores_busy: float
    cpu_s: float  # the process tree
    server_cpu_s: float
    peak: TreePeak

    @property
    def scans_per_minute(self) -> float:
        return self.n / self.seconds * 60


def prepare_only(row: dict, config: PrepareConfig) -> dict:
    """The pipeline's prepare stage, its heavy outputs dropped (nothing consumes them)."""
    out = prepare_stage(row, config)
    return {"series_uid": out["series_uid"], "status": out["status"]}


def run_prepare_alone(
    rows: list[dict],
    prepare: PrepareConfig,
    cfg: RunConfig,
    args: argparse.Namespace,
    exclude: set[int],
) -> StageRun:
    """The prepare stage alone, as the pipeline runs it: Ray Data tasks with the job's
    resources (`task_cpus`, `task_memory_gb`), one block per series, on a fresh local Ray
    with the same CPUs, over the same series."""
    import ray

    with TreeSampler(exclude, args.sample_s) as sampler:
        start_ray(args.cpus, 1 if cfg.gpus else 0, args.object_store_gb)
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            t0 = time.perf_counter()
            ds = ray.data.from_items(rows, override_num_blocks=len(rows))
            ds = ds.map(
                prepare_only,
                fn_kwargs={"config": prepare},
                num_cpus=cfg.task_cpus,
                memory=cfg.task_memory_gb * 1024**3,
            )
            bad = sum(r["status"] != "ok" for r in ds.iter_rows())
            seconds = time.perf_counter() - t0
        finally:
            ray.shutdown()
    if bad:
        print(f"  ({bad} series failed in the prepare stage)")
    return StageRun(len(rows), seconds, sampler.cores_busy, sampler.peak.cpu_s,
                    sampler.excluded_cpu_s, sampler.peak)


# --- the report --------------------------------------------------------------------------


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def agreement(seq: Sequential, run: PipelineRun) -> str:
    """How many series got the same landmark slices and total calcium both ways."""
    pipe = run.series.set_index("series_key")
    same_lm = same_total = both_ok = 0
    for r in seq.rows:
        if r["status"] != "ok" or r["series_key"] not in pipe.index:
            continue
        p = pipe.loc[r["series_key"]]
        if p["status"] != "ok":
            continue
        both_ok += 1
        same_lm += all(int(p[f"{n}_slice"]) == int(r[f"{n}_slice"]) for n in LANDMARKS)
        same_total += p["total_calcium_voxels"] == r["total_calcium_voxels"]
    return (
        f"{same_lm}/{both_ok} series with the same landmark slices, {same_total}/{both_ok} "
        "with the same total calcium voxels"
    )


def _parts(peak: TreePeak, n: int) -> str:
    """CPU seconds per scan by part of the process tree, and how many processes each part
    started (a worker pool that churns pays Python's and the imports' start-up again)."""
    return ", ".join(
        f"{k} {v / n:.2f} ({peak.seen_by_part.get(k, 0)} processes)"
        for k, v in sorted(peak.cpu_by_part.items()))


def print_peak(label: str, run: PipelineRun) -> None:
    p = run.peak
    parts = ", ".join(f"{k} {v / MiB:.0f}" for k, v in sorted(p.by_part.items()))
    print(
        f"  {label:6s} {run.n:4d} scans: peak RSS {p.rss / MiB:7.0f} MiB ({parts}; "
        f"{p.processes} processes), peak PSS {p.pss / MiB:6.0f} MiB; "
        f"{p.samples} samples"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--small",
        type=int,
        default=20,
        help="scans of the small run (and of the sequential baseline)",
    )
    ap.add_argument("--large", type=int, default=200, help="scans of the large run")
    ap.add_argument("--matrix", type=int, default=512, help="in-plane pixels (512: realistic)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--cpus",
        type=int,
        default=os.cpu_count() or 2,
        help="CPUs of the local Ray (default: this machine's)",
    )
    ap.add_argument("--actor-cpus", type=float, default=None,
                    help="CPUs reserved per inference actor (default: the job's, 0 on CPU)")
    ap.add_argument("--batch-size", type=int, default=RunConfig().batch_size)
    ap.add_argument("--object-store-gb", type=float, default=2.0)
    ap.add_argument("--gen-workers", type=int, default=2, help="processes generating the cohort")
    ap.add_argument("--model", help="DST checkpoint (default: shipped, else untrained small)")
    ap.add_argument("--sample-s", type=float, default=0.5, help="memory sampling period")
    ap.add_argument("--skip-large", action="store_true", help="only the small runs")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if args.actor_cpus is None:  # what run_cohort reserves on a CPU-only machine
        args.actor_cpus = 0.0
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    import torch

    use_gpu = torch.cuda.is_available()
    n_gen = args.small if args.skip_large else max(args.small, args.large)
    print(
        f"cohort job throughput and memory, SYNTHETIC head CT ({n_gen} patients, one "
        f"primary series each, {args.matrix} x {args.matrix}, calcium masks)"
    )
    print(f"machine: {machine()}; {load()}")
    with (
        tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp,
        SeaweedS3(volume_size_limit_mb=1024, max_volumes=64) as server,
    ):
        options = server.storage_options()
        exclude = {server._proc.pid}  # the S3 server is storage, not the job (as bench_index)
        model_path, model_note = checkpoint(args.model, Path(tmp))
        info = describe(model_path)
        print(
            f"model: {model_note}; model input {info.model_input or 'default'}; "
            f"torch threads per actor {RunConfig().actor_threads}"
        )
        root = f"{server.make_bucket(BUCKET)}/cohort"
        synth = SynthConfig(
            patients=n_gen,
            seed=args.seed,
            matrix=args.matrix,
            localizer_p=0.0,
            second_series_p=0.0,
            followup_p=0.0,
            workers=args.gen_workers,
        )
        t0 = time.perf_counter()
        generate_cohort(synth, root, options)
        gen_s = time.perf_counter() - t0
        fs = server.filesystem()
        size = sum(fs.du(f"{root.removeprefix('s3://')}/dicom", total=False).values())
        t0 = time.perf_counter()
        index_url = f"{root}/index"
        index_cohort(
            f"{root}/dicom",
            index_url,
            IndexConfig(discovery=DiscoveryConfig(executor="local")),
            options,
        )
        manifest = read_manifest(index_url, options).to_pandas()
        manifest = manifest[manifest["kind"] == "series"]
        selected = manifest[manifest["status"] == "selected"]
        print(
            f"data: generated onto SeaweedFS S3 (loopback, same cores) in {gen_s:.0f} s, "
            f"{size / 1e9:.2f} GB of DICOM, {len(manifest)} series, {len(selected)} "
            f"selected; indexed in {time.perf_counter() - t0:.0f} s; "
            f"{_slices(manifest)} slices per series"
        )

        cfg = RunConfig(
            model=model_path,
            masks=f"{root}/masks",
            qc="none",
            identity=IdentityConfig(salt=SALT),
            batch_size=args.batch_size,
            actor_cpus=args.actor_cpus,
            gpus=1 if use_gpu else 0,
        )
        prepare, finish = configs(info.model_input, cfg.masks, options, cfg)
        common = {
            "run_id": "sequential",
            "model_name": info.name,
            "model_sha256": info.sha256,
            "model_trained_on": info.trained_on,
            "code_version": "bench",
        }
        rows = input_rows(selected.head(args.small), common, cfg.identity)

        print(f"\n1. sequential loop, one process, {len(rows)} scans ({load()})")
        with TreeSampler(exclude, args.sample_s) as seq_sampler:
            seq = run_sequential(rows, model_path, prepare, finish, args.batch_size, use_gpu)
        seq_rate = seq.n / seq.seconds * 60
        print(
            f"  machine: {seq_sampler.cores_busy:.2f} of {os.cpu_count()} cores busy on "
            f"average (the S3 server {seq_sampler.excluded_cpu_s / seq.n:.2f} CPU s per scan); "
            f"peak RSS {seq_sampler.peak.rss / MiB:.0f} MiB"
        )
        print(
            f"  {seq_rate:.2f} scans/min ({seq.seconds:.0f} s, {seq.cpu_s / seq.n:.2f} CPU s "
            f"per scan); statuses {seq.statuses}"
        )
        print(
            f"  per scan: prepare {_stat(seq.prepare_s)}, inference {_stat(seq.infer_s)} "
            f"(one-row batches; {seq.infer_batched_s:.3f} s in the pipeline's batches), "
            f"finish {_stat(seq.finish_s)}"
        )
        del rows
        gc.collect()

        runs: list[tuple[str, PipelineRun, StageRun]] = []
        sizes = [("small", args.small)] + ([] if args.skip_large else [("large", args.large)])
        actors = cfg.gpus or cfg.cpu_actors
        for step, (label, n) in enumerate(sizes, start=2):
            rows = input_rows(selected.head(n), {**common, "run_id": "alone"}, cfg.identity)
            print(
                f"\n{step}a. the prepare stage alone ({label}), {n} scans: Ray Data tasks "
                f"with the job's resources ({cfg.task_cpus:g} CPU, {cfg.task_memory_gb:g} GB "
                f"each) on a fresh local Ray with {args.cpus} CPUs ({load()})"
            )
            alone = run_prepare_alone(rows, prepare, cfg, args, exclude)
            del rows
            print(
                f"  {alone.scans_per_minute:.2f} scans/min over {alone.seconds:.0f} s; machine "
                f"{alone.cores_busy:.2f} cores busy; tree CPU {alone.cpu_s / n:.2f} s per "
                f"scan ({_parts(alone.peak, n)}), the S3 server {alone.server_cpu_s / n:.2f}"
            )
            print(
                f"{step}b. pipeline ({label}), run_cohort on {n} scans: local Ray with "
                f"{args.cpus} CPUs{', 1 GPU' if use_gpu else ''}, {actors} inference "
                f"actor(s) x {cfg.actor_cpus:g} CPU, batch {cfg.batch_size} ({load()})"
            )
            run = run_pipeline(index_url, f"{root}/out-{label}", n, cfg, options, args, exclude)
            runs.append((label, run, alone))
            print(
                f"  {run.scans_per_minute:.2f} scans/min over {run.stream_s:.0f} s of "
                f"streaming (run_cohort {run.seconds:.0f} s in all, including the manifest "
                f"and publishing); statuses {run.statuses}; tree CPU "
                f"{run.peak.cpu_s / n:.2f} s per scan ("
                + _parts(run.peak, n) + ")"
            )
            print(
                f"  inference actor busy {run.actor_busy_s:.1f} s of {run.stream_s:.0f} s "
                f"streaming: utilisation {run.actor_busy_s / actors / run.stream_s:.0%}"
                + (
                    f"; {n / run.actor_busy_s:.2f} scans/s while busy on the GPU"
                    if use_gpu and run.actor_busy_s
                    else ""
                )
            )
            print(
                f"  machine: {run.cores_busy:.2f} of {os.cpu_count()} cores busy on average "
                f"(the S3 server {run.server_cpu_s / n:.2f} CPU s per scan)"
            )
            print_peak(label, run)
        print(f"  agreement with the sequential loop: {agreement(seq, runs[0][1])}")

        results(seq, runs, cfg, use_gpu)


def results(
    seq: Sequential,
    runs: list[tuple[str, PipelineRun, StageRun]],
    cfg: RunConfig,
    use_gpu: bool,
) -> None:
    """The summary: the stages alone, the slowest of them, the ratios."""
    seq_rate = seq.n / seq.seconds * 60
    actors = cfg.gpus or cfg.cpu_actors
    t_prepare = sum(seq.prepare_s) / seq.n
    t_finish = sum(seq.finish_s) / seq.n
    infer_rate = actors / seq.infer_batched_s * 60 if seq.infer_batched_s else float("inf")
    finish_rate = cfg.finish_tasks / t_finish * 60 if t_finish else float("inf")
    print(f"\nRESULTS (SYNTHETIC data; {machine()}; {load()})")
    print(
        "  stages alone: prepare as Ray Data runs it "
        + ", ".join(f"{a.scans_per_minute:.2f} scans/min ({a.n} scans)" for _, _, a in runs)
        + f" ({t_prepare:.2f} s per scan in one process); inference {infer_rate:.2f} "
        f"scans/min ({actors} actor(s), {seq.infer_batched_s:.3f} s per scan in the "
        f"pipeline's batches); finish {finish_rate:.0f} scans/min ({cfg.finish_tasks} tasks, "
        f"{t_finish:.3f} s per scan)"
    )
    print(f"  sequential loop: {seq_rate:.2f} scans/min")
    for label, run, alone in runs:
        r = run.scans_per_minute
        slowest = min(alone.scans_per_minute, infer_rate, finish_rate)
        name = ("prepare" if slowest == alone.scans_per_minute
                else "inference" if slowest == infer_rate else "finish")
        print(
            f"  pipeline {label:5s} ({run.n:3d} scans): {r:.2f} scans/min = "
            f"{r / seq_rate:.2f}x the sequential loop ({'PASS' if r >= seq_rate else 'FAIL'} "
            f">= 1), {r / slowest:.2f}x its slowest stage alone, {name} "
            f"({'PASS' if r >= 0.9 * slowest else 'FAIL'} >= 0.90)"
        )
        own = 60 / max(t_prepare, seq.infer_batched_s, t_finish)
        print(
            f"      against the slowest stage's own rate, one series after another in one "
            f"process (the classic bound: a pipeline goes as fast as its slowest stage), "
            f"{own:.2f} scans/min: {r / own:.2f}x ({'PASS' if r >= 0.9 * own else 'FAIL'} "
            f">= 0.90)"
        )
        if not use_gpu:
            ceiling, share = shared_core_ceiling(alone, seq.infer_batched_s, t_finish)
            print(
                f"      the cores' ceiling for all the stages' work: {ceiling:.2f} scans/min "
                f"(prepare alone's rate x its CPU per scan / (that + inference "
                f"{seq.infer_batched_s:.2f} + finish {t_finish:.2f} CPU s per scan); the "
                f"inference adds {share:.0%} to prepare's CPU) -> pipeline {r / ceiling:.2f}x "
                f"the ceiling; the slowest stage alone is out of reach by "
                f"{1 - ceiling / alone.scans_per_minute:.0%} before any Ray overhead"
            )
    if len(runs) == 2:
        (_, a, pa), (_, b, pb) = runs
        marginal = _marginal(a.n, a.stream_s, b.n, b.stream_s)
        marginal_alone = _marginal(pa.n, pa.seconds, pb.n, pb.seconds)
        print(
            f"  marginal rates, ({b.n} - {a.n}) scans / the difference in seconds, i.e. "
            f"without the fixed start-up: pipeline {marginal:.2f} scans/min, prepare alone "
            f"{marginal_alone:.2f} -> {marginal / marginal_alone:.2f}x; "
            f"{marginal / seq_rate:.2f}x the sequential loop"
        )
        extra_cpu = (b.peak.cpu_s - a.peak.cpu_s) / (b.n - a.n) if b.n > a.n else float("nan")
        print(
            f"  CPU seconds per scan (the whole process tree, without the S3 server): "
            f"sequential {seq.cpu_s / seq.n:.2f}, pipeline {a.peak.cpu_s / a.n:.2f} ({a.n} "
            f"scans), {b.peak.cpu_s / b.n:.2f} ({b.n} scans), marginal {extra_cpu:.2f}; the S3 "
            f"server {b.server_cpu_s / b.n:.2f} more per scan, on the same cores"
        )
        print(
            f"  peak memory of the whole job, {b.n} / {a.n} scans: RSS "
            f"{b.peak.rss / a.peak.rss:.2f}x ({a.peak.rss / MiB:.0f} -> "
            f"{b.peak.rss / MiB:.0f} MiB), PSS {b.peak.pss / a.peak.pss:.2f}x "
            f"({a.peak.pss / MiB:.0f} -> {b.peak.pss / MiB:.0f} MiB)"
        )
        print(
            "  object store: not sampled (its only cheap probe, the raylet's gRPC "
            "FormatGlobalMemoryInfo, needs the grpc package, not installed here); the "
            "raylet's RSS above holds the store's pages it touched"
        )
    if not use_gpu:
        print(
            "  GPU: none on this machine. The inference actor shares the CPUs with the "
            "prepare tasks here, so the pipeline cannot reach the prepare stage alone (the "
            "ceiling lines above say by how much at best); on a GPU node the inference leaves "
            "the CPUs and the same lines give the GPU actor's utilisation and scans/s"
        )
    print(
        "  RSS sums every process's resident pages (shared pages, e.g. the object store "
        "mapped by workers, count once per process); PSS splits them. The S3 server is "
        "not included. Timings share the cores with whatever else runs (load above)."
    )


def shared_core_ceiling(alone: StageRun, infer_s: float, finish_s: float
                        ) -> tuple[float, float]:
    """The most a pipeline could do when every stage runs on the same CPUs (no GPU): the
    prepare stage alone keeps the cores busy at its measured rate; the pipeline must also
    spend the inference and finish stages' CPU on those cores (single-threaded: their wall
    seconds per scan are CPU seconds), and the S3 server's share for prepare stays the same.
    Returns (scans/min, the inference's CPU as a fraction of prepare's)."""
    prepare_cpu = (alone.cpu_s + alone.server_cpu_s) / alone.n
    ceiling = alone.scans_per_minute * prepare_cpu / (prepare_cpu + infer_s + finish_s)
    return ceiling, infer_s / prepare_cpu


def _marginal(n_a: int, s_a: float, n_b: int, s_b: float) -> float:
    return (n_b - n_a) / (s_b - s_a) * 60 if s_b > s_a and n_b > n_a else float("nan")


def _stat(values: list[float]) -> str:
    s = sorted(values)
    return f"{sum(s) / len(s):.3f} s (median {s[len(s) // 2]:.3f}, max {s[-1]:.3f})"


def _slices(manifest: pd.DataFrame) -> str:
    n = manifest["n_files"]
    return f"{int(n.min())}-{int(n.max())} (median {int(n.median())})"


if __name__ == "__main__":
    main()
