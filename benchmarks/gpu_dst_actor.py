"""The cohort job's DST actor on a GPU: volumes/s per GPU, GPU utilisation, peak GPU memory
and latency per 128 x 128 x 64 volume in bf16, against the paper (10 ms and about 800 MB per
volume on an A100) and our target (at least 50 volumes/s per GPU).

    python benchmarks/gpu_dst_actor.py [--volumes 300] [--model paper] [--batch 8]
                                       [--device auto|cpu]

What runs is the job's own actor (`cohort.job.landmarks.LandmarkPredictor`: bf16 autocast
on CUDA, batches of similar depth, the mirrored pass when the checkpoint's decoding uses
it, decoding and confidence on the CPU) inside Ray Data's actor pool, one actor per GPU,
fed packed model inputs exactly as the job's CPU stage packs them. Inputs are random CT-like
volumes (compute does not depend on content) and the weights are a fresh model saved as a
checkpoint (throughput does not depend on them either). Three figures:

* **in the pipeline**: volumes/s per GPU over the whole Ray Data run after the actors have
  started (the first batch is left out), with GPU utilisation sampled by ``nvidia-smi``;
* **latency**: seconds per volume of the model's forward pass alone at batch 1 and at
  ``--batch`` (CUDA synchronised, 20 repeats after 3 warm-ups);
* **peak memory**: ``torch.cuda.max_memory_allocated`` of those passes.

``--device cpu`` runs the same on the CPU (full precision, the job's CPU setting): that is
how this script is tested without a GPU, and its figures are the CPU's, labelled as such.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time

import numpy as np

SIZE, DEPTH = 128, 64
PAPER_MS, PAPER_MB, TARGET_VPS = 10.0, 800.0, 50.0


def make_checkpoint(name: str, folder: str) -> str:
    from cohort.model.dst import build_model, save_checkpoint

    path = os.path.join(folder, f"dst-{name}.pt")
    save_checkpoint(path, build_model(name))
    return path


def packed_inputs(batch: dict) -> dict:
    """Ray Data batch of ids -> the CPU stage's rows: status ok and a packed model input."""
    from cohort.job.packing import pack

    ids = batch["id"]
    rng = np.random.default_rng(int(ids[0]))
    rows = []
    for _ in ids:
        x = rng.normal(0.2, 0.1, (SIZE, SIZE, DEPTH)).astype(np.float32)
        rows.append(pack(x=x, slice_z_mm=np.arange(DEPTH) * 2.5,
                         slice_index=np.arange(DEPTH)))
    return {"series_key": [f"s{i}" for i in ids], "status": ["ok"] * len(ids),
            "model_input": rows}


class GpuSampler:
    """``nvidia-smi`` utilisation (%) every 0.2 s in a thread; nothing without it."""

    def __init__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                self.samples += [float(v) for v in out.split()]
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def pipeline(ckpt: str, volumes: int, batch: int, gpus: int, device: str) -> dict:
    """The actor in Ray Data's pool: volumes/s per GPU after the first batch."""
    import ray

    from cohort.job.landmarks import LandmarkPredictor

    ds = ray.data.range(volumes, override_num_blocks=max(1, volumes // batch))
    ds = ds.map_batches(packed_inputs, batch_size=batch)
    stamps: list[float] = []
    ds = ds.map_batches(
        LandmarkPredictor, batch_size=batch, batch_format="pandas",
        fn_constructor_kwargs={"model_url": ckpt, "threads": 1 if device != "cpu" else 2,
                               "batch_size": batch, "prefer_gpu": device != "cpu"},
        compute=ray.data.ActorPoolStrategy(size=max(1, gpus)),
        num_gpus=1 if device != "cpu" else 0)
    done = 0
    with GpuSampler() as sampler:
        t_all = time.perf_counter()
        for out in ds.iter_batches(batch_size=batch, batch_format="pandas"):
            assert (out["status"] == "ok").all(), out["status"].value_counts()
            done += len(out)
            stamps.append(time.perf_counter())
        wall = time.perf_counter() - t_all
    steady = (done - batch) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    util = sampler.samples
    return {"volumes": done, "wall_s": round(wall, 2),
            "volumes_per_s_per_gpu": round(steady / max(1, gpus), 2),
            "gpu_util_mean_pct": round(statistics.mean(util), 1) if util else None,
            "gpu_util_max_pct": max(util) if util else None}


def latency(ckpt: str, batch: int, device: str) -> dict:
    """The forward pass alone (the actor's model and autocast), batch 1 and ``batch``."""
    import torch

    from cohort.job.landmarks import LandmarkPredictor

    pred = LandmarkPredictor(ckpt, threads=os.cpu_count() or 1, batch_size=batch,
                             prefer_gpu=device != "cpu")
    out = {"device": str(pred.device)}
    for b in (1, batch):
        arrays = [np.random.default_rng(b).normal(0.2, 0.1, (SIZE, SIZE, DEPTH))
                  .astype(np.float32) for _ in range(b)]
        if pred.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(3):
            pred.predict(arrays)
        times = []
        for _ in range(20):
            if pred.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            pred.predict(arrays)
            if pred.device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) / b)
        out[f"ms_per_volume_batch{b}"] = round(1000 * statistics.median(times), 2)
        if pred.device.type == "cuda":
            out[f"peak_mb_batch{b}"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volumes", type=int, default=300)
    ap.add_argument("--model", default="paper", help="DST configuration (paper, small)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", choices=("auto", "cpu"), default="auto")
    args = ap.parse_args()

    import ray
    import torch

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu"
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    with tempfile.TemporaryDirectory(prefix="gpu-dst-") as folder:
        ckpt = make_checkpoint(args.model, folder)
        lat = latency(ckpt, args.batch, device)
        ray.init(num_gpus=gpus or None, include_dashboard=False, log_to_driver=False)
        try:
            pipe = pipeline(ckpt, args.volumes, args.batch, gpus, device)
        finally:
            ray.shutdown()
    name = torch.cuda.get_device_name(0) if gpus else "CPU (no GPU: figures are the CPU's)"
    result = {"model": args.model, "input": f"{SIZE}x{SIZE}x{DEPTH}", "hardware": name,
              "gpus": gpus, "precision": "bf16 autocast" if gpus else "float32", **lat, **pipe}
    print(json.dumps(result, indent=1))
    ms = lat["ms_per_volume_batch1"]
    print(f"\nlatency per volume (batch 1): {ms:.1f} ms; paper (A100, bf16): {PAPER_MS:.0f} ms "
          f"-> ratio {ms / PAPER_MS:.2f}")
    if "peak_mb_batch1" in lat:
        print(f"peak GPU memory (batch 1): {lat['peak_mb_batch1']:.0f} MB; paper: about "
              f"{PAPER_MB:.0f} MB -> ratio {lat['peak_mb_batch1'] / PAPER_MB:.2f}")
    vps = pipe["volumes_per_s_per_gpu"]
    print(f"in the job's actor pool: {vps:.1f} volumes/s per {'GPU' if gpus else 'CPU pool'}; "
          f"target {TARGET_VPS:.0f} -> ratio {vps / TARGET_VPS:.2f}"
          + ("" if gpus else " (CPU: the target is a GPU's)"))


if __name__ == "__main__":
    main()
