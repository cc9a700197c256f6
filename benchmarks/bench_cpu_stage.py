"""The job's CPU stage (`cohort.job.prepare.prepare_series`) on 512 x 512 series, this
checkout against a baseline commit's code in the same run, on one core.

    python benchmarks/bench_cpu_stage.py [--baseline-ref 8f79f98] [--rounds 5] [--s3]

Issue 20 asked for the CPU stage at <= 1 s per 512 x 512 x 150 series per core, measured
against its own time when the work began: ``--baseline-ref`` defaults to 8f79f98, the
commit that added the step-by-step profile (`profile_cpu_stage.py`, where the time goes).

Each code runs in a child process of its own (``PYTHONPATH`` = this checkout, or a git
worktree of the baseline), pinned to one core where the OS allows, with one torch thread and
one reader thread; the two codes alternate round by round, so that load from elsewhere on
the machine falls on both alike. Each child reads every series once to warm the page cache
and imports, then times `prepare_series` on each. Prints the median seconds per series, per
150 slices, the ratio this / baseline, the target's verdict, and whether both codes gave the
same outputs (every packed array bit for bit, every value equal): a faster stage that
changes its outputs does not count. The series are SYNTHETIC phantoms (generated here).

``--s3`` serves the series from a SeaweedFS S3 server on loopback, as a cohort lives in
object storage: the stage then pays for its requests too (the server runs outside the
pinned core; its own CPU seconds per series read are printed beside), with the job's 8
reader threads per series so that the requests' latency overlaps as in the job. The CPU
seconds of `prepare_series` are printed beside its wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from code_versions import code_versions

TARGET_S_PER_150 = 1.0
#: (name, thickness mm, tilted): head series of 150 slices or more (a shorter one would
#: scale its fixed costs up to 150 slices), one of them gantry-tilted
SERIES = (("1.0 mm", 1.0, False), ("0.625 mm", 0.625, False), ("1.25 mm tilted", 1.25, True))

ISOLATED = " (isolated)"
CPU = " (CPU)"
#: reader threads per series: one for local files (one core, nothing to wait for); on S3
#: the job's default, whose threads hide the requests' latency (as in the job)
IO_THREADS = {False: 1, True: 8}
CHILD = r"""
import json, os, pickle, sys, time
ISOLATED = " (isolated)"
CPU = " (CPU)"


def main():
    import torch
    torch.set_num_threads(1)
    from cohort.job.prepare import PrepareConfig, prepare_isolated, prepare_series
    from cohort.preprocess.arterial_crop import CropConfig
    from cohort.read.series import ReadConfig
    from cohort.storage import StorageOptions
    series = json.loads(open(sys.argv[1]).read())
    threads = int(os.environ.get("BENCH_IO_THREADS", "1"))
    config = PrepareConfig(read=ReadConfig(io_threads=threads), crop=CropConfig(),
                           storage=StorageOptions.from_env())
    times, outs = {}, {}
    for name, files in series.items():
        prepare_series(files, name, config)  # warm: page cache, imports, caches
        prepare_isolated(files, name, config)  # and the job's isolated reader process
    for name, files in series.items():
        t0, c0 = time.perf_counter(), time.process_time()
        out = prepare_series(files, name, config)
        times[name] = time.perf_counter() - t0
        times[name + CPU] = time.process_time() - c0
        t0 = time.perf_counter()
        prepare_isolated(files, name, config)  # as the job calls it: the result pickled back
        times[name + ISOLATED] = time.perf_counter() - t0
        out.pop("seconds_prepare", None)
        outs[name] = out
    with open(sys.argv[2], "wb") as f:
        pickle.dump(outs, f)
    print(json.dumps(times))


if __name__ == "__main__":  # the isolated reader spawns a process that imports this file
    main()
"""


def _pin() -> list[str]:
    """``taskset -c 0`` where it exists: one core, as the target says."""
    from shutil import which

    return ["taskset", "-c", "0"] if which("taskset") else []


def generate(tmp: Path) -> dict[str, list[str]]:
    from cohort.synth.config import SynthConfig
    from cohort.synth.heads import generate_cohort

    series = {}
    for i, (name, thickness, tilted) in enumerate(SERIES):
        root = tmp / f"series{i}"
        cfg = SynthConfig(patients=1, seed=5 + i, matrix=512, thicknesses_mm=(thickness,),
                          localizer_p=0, second_series_p=0, followup_p=0,
                          tilt_p=1.0 if tilted else 0.0, stepped_p=0.0, workers=1)
        generate_cohort(cfg, str(root))
        series[name] = sorted(str(p) for p in (root / "dicom").rglob("*.dcm"))
    return series


@contextmanager
def served(series: dict[str, list[str]], s3: bool) -> Iterator[tuple[dict, dict, object]]:
    """(series -> URIs, environment for the children, the S3 server's process or None):
    the local files, or with ``s3`` the same files uploaded to a SeaweedFS bucket."""
    if not s3:
        yield series, {}, None
        return
    import psutil

    from cohort.testing.seaweed import SeaweedS3

    with SeaweedS3() as server:
        bucket = server.make_bucket("bench-cpu-stage")
        fs = server.filesystem()
        uris = {}
        for i, (name, files) in enumerate(series.items()):
            uris[name] = []
            for f in files:
                key = f"{bucket.removeprefix('s3://')}/series{i}/{Path(f).name}"
                fs.pipe_file(key, Path(f).read_bytes())
                uris[name].append(f"s3://{key}")
        env = {"COHORT_S3_ENDPOINT": server.endpoint_url, "AWS_ACCESS_KEY_ID": server.key,
               "AWS_SECRET_ACCESS_KEY": server.secret}
        yield uris, env, psutil.Process(server._proc.pid)


def _cpu(proc) -> float:
    if proc is None:
        return 0.0
    t = proc.cpu_times()
    return t.user + t.system


def same(a, b) -> bool:
    """Outputs equal: packed arrays bit for bit, everything else by value."""
    from cohort.job.packing import unpack

    if isinstance(a, bytes) and isinstance(b, bytes):
        ua, ub = unpack(a), unpack(b)
        return ua.keys() == ub.keys() and all(
            ua[k].dtype == ub[k].dtype and ua[k].shape == ub[k].shape
            and np.array_equal(ua[k], ub[k], equal_nan=True) for k in ua)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return a == b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-ref", default="8f79f98",
                    help="git ref of the baseline code (default %(default)s: where issue 20 "
                         "item 6 started); '' for this checkout only")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    ap.add_argument("--s3", action="store_true",
                    help="read the series from a SeaweedFS S3 server on loopback")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as t, served(generate(Path(t)), args.s3) as (
            series, s3_env, server):
        tmp = Path(t)
        (tmp / "series.json").write_text(json.dumps(series))
        (tmp / "child.py").write_text(CHILD)
        with code_versions(args.baseline_ref, tmp) as codes:
            times: dict[str, dict[str, list[float]]] = {
                c: {s + x: [] for s in series for x in ("", ISOLATED, CPU)} for c in codes}
            server_s: dict[str, list[float]] = {c: [] for c in codes}
            outputs: dict[str, dict] = {}
            for r in range(args.rounds):
                for name, code in codes.items():
                    env = {**os.environ, **s3_env, "PYTHONPATH": code, "OMP_NUM_THREADS": "1",
                           "BENCH_IO_THREADS": str(IO_THREADS[args.s3])}
                    out = tmp / f"out-{r}-{len(outputs)}.pkl"
                    c0 = _cpu(server)
                    proc = subprocess.run([*_pin(), sys.executable, str(tmp / "child.py"),
                                           str(tmp / "series.json"), str(out)],
                                          env=env, capture_output=True, text=True, cwd=code)
                    # each child reads every series four times (two warm, two timed)
                    server_s[name].append((_cpu(server) - c0) / (4 * len(series)))
                    if proc.returncode:
                        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
                    got = json.loads(proc.stdout.strip().splitlines()[-1])
                    for s, sec in got.items():
                        times[name][s].append(sec)
                    with open(out, "rb") as f:
                        outputs[name] = pickle.load(f)
                print(f"round {r + 1}/{args.rounds} done", flush=True)

    where = "read from a SeaweedFS S3 server on loopback" if args.s3 else "local files"
    print(f"\nSYNTHETIC 512 x 512 series ({where}); prepare_series on one core, "
          f"{IO_THREADS[args.s3]} reader thread(s); median of {args.rounds} alternating rounds")
    names = list(codes)
    head = f"{'series':26s} {'slices':>6s}" + "".join(f" {n[:24]:>24s}" for n in names)
    print(head + ("   ratio   per 150 slices (this)" if len(names) > 1 else
                  "   per 150 slices"))
    worst = 0.0
    for s, files in [(k + x, f) for k, f in series.items() for x in ("", ISOLATED, CPU)]:
        med = {n: statistics.median(times[n][s]) for n in names}
        per150 = med[names[0]] * 150 / len(files)
        worst = max(worst, per150)
        line = f"{s:26s} {len(files):6d}" + "".join(f" {med[n]:22.3f} s" for n in names)
        if len(names) > 1:
            line += f"   {med[names[0]] / med[names[1]]:5.2f}x"
        print(line + f"   {per150:.2f} s")
    if args.s3:
        print("the S3 server's CPU per series read: " + ", ".join(
            f"{n} {statistics.median(server_s[n]):.3f} s" for n in names))
    verdict = "meets" if worst <= TARGET_S_PER_150 else "misses"
    print(f"\nslowest per 150 slices: {worst:.2f} s against the target of "
          f"{TARGET_S_PER_150:.1f} s per core: {verdict} it")
    if len(names) > 1:
        equal = same(outputs[names[0]], outputs[names[1]])
        print(f"outputs of both codes: {'identical' if equal else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
