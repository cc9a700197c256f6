"""The `cohort run` driver's peak memory against the size of the index it reads: 1,000 vs
100,000 manifest rows, with this checkout's code and with a baseline commit's, in one run.

    python benchmarks/bench_driver_memory.py [--sizes 1000 100000] [--process 20]
                                             [--baseline-ref 3b87ab7]

A SYNTHETIC series (one 64 x 64 phantom) is generated and indexed; its manifest row is
copied into indexes of each size (every copy its own series key and UID, the same files, so
each row carries a real file list: about 100 paths). Half of each index is already finished
in a published run (resume must judge them without loading the published rows), the rest is
selected; each run processes ``--process`` series (``--max-series``) and leaves the rest for
later, so the job's cost is the same at every size and only the manifest grows.

Each `cohort run` is a process of its own (its own local Ray, 2 CPUs); a thread samples the
driver process's RSS every 50 ms (psutil). The baseline runs the same command with the code
of ``--baseline-ref`` (a git worktree), which loads the manifest into pandas and hands every
selected row to Ray through the driver. Prints, per code and size, the driver's peak RSS and
the run's seconds, then the ratio largest / smallest size against the target of 1.2x.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from code_versions import code_versions
from machine_info import machine

from cohort.discover.index import index_cohort
from cohort.discover.manifest import MANIFEST_FILE, MARKER, read_manifest
from cohort.job.checkpoint import describe
from cohort.storage import publish_marker
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort
from cohort.write.identity import IdentityConfig
from cohort.write.ownership import record_identity
from cohort.write.runs import RunWriter

TARGET = 1.2


def make_index(template: pa.Table, n: int, process: int, folder: Path) -> None:
    """An index of ``n`` series rows, each a copy of ``template``'s selected row. The rows
    the run processes (the first ``process`` after the finished half) keep the real files;
    the others name files of their own (``/archive/<i>/<name>``), as real rows do (identical
    strings would be shared in memory and flatter any driver)."""
    row = template.filter(pc.equal(template["status"], "selected")).slice(0, 1)
    real = row["files"][0].as_py()
    names = [f.rsplit("/", 1)[-1] for f in real]
    parts = []
    for start in range(0, n, 5_000):  # in slices, so that building it stays small too
        idx = range(start, min(n, start + 5_000))
        keys = pa.array([f"1.2.826.0.1.99.{i}" for i in idx], pa.string())
        files = pa.array([real if n // 2 <= i < n // 2 + process else
                          [f"/archive/{i}/{name}" for name in names] for i in idx],
                         pa.list_(pa.string()))
        t = pa.concat_tables([row] * len(keys))
        for name in ("series_key", "series_uid", "selected_series_key"):
            t = t.set_column(t.schema.get_field_index(name), name, keys)
        t = t.set_column(t.schema.get_field_index("files"), "files", files)
        parts.append(t)
    folder.mkdir(parents=True)
    pq.write_table(pa.concat_tables(parts), folder / MANIFEST_FILE, row_group_size=1024,
                   compression="zstd")
    publish_marker(str(folder), {"what": "cohort index manifest (benchmark copy)"},
                   name=MARKER)


def publish_half(out: Path, n: int, sha256: str) -> None:
    """A published run whose rows finish the first half of the index's series."""
    run_id = "20000101T000000Z-000000"
    writer = RunWriter(str(out), run_id, part_rows=5000)
    for i in range(n // 2):
        key = f"1.2.826.0.1.99.{i}"
        writer.add({"run_id": run_id, "series_key": key, "series_uid": key, "status": "ok",
                    "model_sha256": sha256, "volumes_computed": False})
    writer.publish({"what": "cohort run", "run_id": run_id})
    record_identity(str(out), IdentityConfig(keep_ids=True))


def driver_peak(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """Run ``cmd``; its own RSS peak in MB (sampled), its seconds, its exit code."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    peak = [0]

    def sample():
        p = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peak[0] = max(peak[0], p.memory_info().rss)
            except psutil.Error:
                break
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = proc.communicate()
    t.join()
    if proc.returncode:
        print(out[-3000:], file=sys.stderr)
    return peak[0] / 2**20, time.perf_counter() - t0, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    ap.add_argument("--process", type=int, default=20, help="series each run processes")
    ap.add_argument("--baseline-ref", default="3b87ab7",
                    help="commit whose driver is the baseline ('' to skip)")
    args = ap.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_cohort(SynthConfig(patients=1, seed=3, matrix=64, thicknesses_mm=(1.25,),
                                    localizer_p=0, second_series_p=0, followup_p=0,
                                    tilt_p=0, stepped_p=0, workers=1), str(tmp / "c"))
        index_cohort(str(tmp / "c" / "dicom"), str(tmp / "template"))
        template = read_manifest(str(tmp / "template"))
        n_files = template.filter(pc.equal(template["status"], "selected"))["n_files"][0]
        print(f"SYNTHETIC: one 64 x 64 series of {n_files} files, copied into each index")
        sha = describe(None, None).sha256
        with code_versions(args.baseline_ref, tmp) as codes:
            results: dict[str, dict[int, tuple[float, float]]] = {c: {} for c in codes}
            for n in args.sizes:
                make_index(template, n, args.process, tmp / f"index{n}")
                mb = (tmp / f"index{n}" / MANIFEST_FILE).stat().st_size / 1e6
                print(f"index of {n} rows: manifest {mb:.1f} MB on disk")
                for name, code in codes.items():
                    out = tmp / f"out-{n}-{len(results[name])}-{name[:4]}"
                    publish_half(out, n, sha)
                    env = {**os.environ, "PYTHONPATH": code}
                    env.pop("COHORT_SALT", None)
                    cmd = [sys.executable, "-m", "cohort.cli", "run", str(tmp / f"index{n}"),
                           "--out", str(out), "--max-series", str(args.process),
                           "--no-segmenter", "--qc", "none", "--keep-ids"]
                    peak, secs, rc = driver_peak(cmd, env)
                    status = "" if rc == 0 else f" (exit {rc})"
                    print(f"  {name:>22}: driver peak {peak:8.0f} MB, {secs:6.1f} s{status}",
                          flush=True)
                    results[name][n] = (peak, secs)
        small, large = min(args.sizes), max(args.sizes)
        print(f"\ndriver peak memory, {large} / {small} index rows (target <= {TARGET}x):")
        for name, r in results.items():
            if small in r and large in r:
                ratio = r[large][0] / r[small][0]
                verdict = "meets" if ratio <= TARGET else "misses"
                print(f"  {name:>22}: {ratio:5.2f}x ({r[small][0]:.0f} -> {r[large][0]:.0f} MB)"
                      f" {verdict} the target")


if __name__ == "__main__":
    main()
