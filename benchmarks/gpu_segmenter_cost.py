"""The calcium segmenter's cost per scan on a GPU: seconds per crop of the job's segmenter
stage (MONAI's sliding windows over the arterial crop, the stage's own code), for the
shipped `default` network and the `paper` size, in float32 (the stage's setting) and bf16
autocast, at several windows per batch.

    python benchmarks/gpu_segmenter_cost.py [--crop 176 176 96] [--device auto|cpu]

The crop is random CT-like numbers of the size of a typical crop (about 180 x 170 pixels
by 16-170 slices, docs/segmenter.md): compute does not depend on content. The `default`
network carries the shipped weights, `paper` fresh ones (cost does not depend on them).
Per setting: median seconds per crop over 5 repeats after 2 warm-ups (CUDA synchronised),
windows per second and peak GPU memory. ``--device cpu`` runs the same on the CPU (one
repeat, `default` only unless --models says otherwise): that is how it is tested here;
its figures are the CPU's, labelled as such. SYNTHETIC inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import time

import numpy as np
import torch

from cohort.model.segmenter import CONFIGS, CalciumSegmenter, crop_logits


def windows(crop: tuple[int, int, int], window: tuple[int, int, int], overlap: float) -> int:
    """Sliding windows MONAI visits on ``crop`` (padded up to the window where smaller)."""
    n = 1
    for c, w in zip(crop, window, strict=True):
        step = max(1, int(w * (1 - overlap)))
        n *= 1 if c <= w else math.ceil((c - w) / step) + 1
    return n


def network(name: str) -> torch.nn.Module:
    if name == "default":
        from cohort.job.segmenter_checkpoint import shipped_segmenter
        from cohort.model.zoo import load_checkpoint

        net, _ = load_checkpoint(shipped_segmenter())
        return net.float()
    return CalciumSegmenter(CONFIGS[name])


def time_crop(net, hu: np.ndarray, device: torch.device, batch: int, bf16: bool,
              repeats: int) -> list[float]:
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and device.type == "cuda" \
        else contextlib.nullcontext()
    out = []
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with amp:
            crop_logits(net, hu, batch=batch, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crop", type=int, nargs=3, default=(176, 176, 96))
    ap.add_argument("--models", nargs="+", default=None, help="default paper (GPU) / default")
    ap.add_argument("--batches", type=int, nargs="+", default=None)
    ap.add_argument("--device", choices=("auto", "cpu"), default="auto")
    args = ap.parse_args()

    gpu = args.device == "auto" and torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    models = args.models or (["default", "paper"] if gpu else ["default"])
    batches = args.batches or ([4, 32] if gpu else [4])
    repeats = 5 if gpu else 1
    hu = np.random.default_rng(0).normal(40, 300, tuple(args.crop)).astype(np.float32)
    rows = []
    for name in models:
        net = network(name).to(device).eval()
        n_win = windows(tuple(args.crop), net.cfg.window, 0.25)
        for batch in batches:
            for bf16 in ((False, True) if gpu else (False,)):
                if gpu:
                    torch.cuda.reset_peak_memory_stats()
                t = statistics.median(time_crop(net, hu, device, batch, bf16, repeats))
                row = {"model": name, "windows_per_batch": batch,
                       "precision": "bf16 autocast" if bf16 else "float32",
                       "windows": n_win, "s_per_crop": round(t, 4),
                       "windows_per_s": round(n_win / t, 1)}
                if gpu:
                    row["peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
        del net
    hardware = torch.cuda.get_device_name(0) if gpu else "CPU (no GPU: figures are the CPU's)"
    print(f"\nhardware: {hardware}; crop {tuple(args.crop)} (SYNTHETIC random CT numbers)")
    for r in rows:
        print(f"{r['model']:>8} {r['precision']:>14} batch {r['windows_per_batch']:>3}: "
              f"{r['s_per_crop'] * 1000:8.1f} ms per crop ({r['windows']} windows, "
              f"{r['windows_per_s']:.0f} windows/s)"
              + (f", peak {r['peak_mb']:.0f} MB" if "peak_mb" in r else ""))


if __name__ == "__main__":
    main()
