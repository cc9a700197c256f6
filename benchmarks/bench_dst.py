"""DST compute, latency and peak memory: the paper's size against the small default.

    python benchmarks/bench_dst.py [--depths 64 128 256 512] [--batches 1 4] [--quick]

* multiply-accumulates and parameters at 128 x 128 x 64 (the paper: ~137 M, 36.4 G);
* CPU latency per volume and peak memory against depth, batch 1 and larger batches, each
  measurement in a fresh process by `cohort.model.compute.measure` (peak resident memory of
  the model and one forward pass, minus the process's memory before), with torch threads =
  cores;
* the same at 256 x 256 in-plane for one depth, to show memory follows depth, not in-plane
  size beyond the encoder;
* on a GPU, if present: latency and peak CUDA memory per 128 x 128 x 64 volume in bf16;
* ``--inputs``: what the shipped model's input costs per volume, old against new: preparing
  it from a read 512 x 512 volume (`cohort.preprocess.model_input.prepare`: the whole head at
  240 mm, against the skull base at 128 mm, both 64 x 64) and the small model's forward pass
  on it, as ratios to the old input measured in the same run.
Inputs are random tensors: compute does not depend on content. Counts are those of
`cohort.model.compute` (attention included, see there).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

PROBE = r"""
import dataclasses, json, sys
from cohort.model.compute import measure
from cohort.model.dst import build_model
name, device = sys.argv[1], sys.argv[5]
depth, batch, size = (int(v) for v in sys.argv[2:5])
c = measure(lambda: build_model(name), (size, size, depth), device=device, batch=batch)
print(json.dumps(dataclasses.asdict(c)))
"""


def measure(name: str, depth: int, batch: int, size: int, device: str = "cpu") -> dict:
    """``cohort.model.compute.measure`` in a fresh process: seconds per volume, peak MB."""
    out = subprocess.run([sys.executable, "-c", PROBE, name, str(depth), str(batch), str(size),
                          device], capture_output=True, text=True, check=True)
    c = json.loads(out.stdout.strip().splitlines()[-1])
    return {"s_per_volume": c["latency_ms"] / 1000, "peak_mb": c["peak_memory_mb"]}


def counts(name: str) -> tuple[float, float]:
    """(M parameters, G multiply-accumulates) at 128 x 128 x 64."""
    import torch

    from cohort.model.compute import count_macs, count_parameters
    from cohort.model.dst import build_model

    model = build_model(name)
    return count_parameters(model) / 1e6, count_macs(model, torch.randn(1, 1, 128, 128, 64)) / 1e9


def input_cost(repeats: int = 3) -> None:
    """Per-volume cost of the old (whole head, 240 mm) and new (skull base, 128 mm) model
    input at 64 x 64: preparation from a 512 x 512 synthetic volume, and inference."""
    import time

    import numpy as np
    import torch

    from cohort.model.dst import build_model
    from cohort.preprocess.model_input import ModelInputConfig, prepare
    from cohort.read.volume import Volume
    from cohort.synth.series import synthesize_series

    s = synthesize_series(11, 0, matrix=512, thickness_mm=2.5)
    vol = Volume(s.image.astype(np.float32), s.grid, "1.2.3")
    model = build_model("small").eval()
    configs = {"old: head, 240 mm": ModelInputConfig(size=64, fov_mm=240.0),
               "new: skull base, 128 mm": ModelInputConfig(size=64, fov_mm=128.0,
                                                           crop="skull_base")}
    print(f"\nModel input per volume (512 x 512 x {vol.grid.shape[0]} slices of 2.5 mm, "
          f"SYNTHETIC), {torch.get_num_threads()} threads, best of {repeats}")
    base = None
    for label, cfg in configs.items():
        prep = infer = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            mi = prepare(vol, cfg)
            t1 = time.perf_counter()
            with torch.no_grad():
                model(torch.from_numpy(mi.array)[None, None])
            t2 = time.perf_counter()
            prep, infer = min(prep, t1 - t0), min(infer, t2 - t1)
        base = base or (prep, infer)
        print(f"  {label:24s} prepare {prep:6.3f} s ({prep / base[0]:.2f}x)  inference "
              f"{infer:6.3f} s ({infer / base[1]:.2f}x)  pixel {cfg.fov_mm / cfg.size:.2f} mm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["paper", "small"])
    ap.add_argument("--depths", nargs="+", type=int, default=[64, 128, 256, 512])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--quick", action="store_true", help="depths 64 and 128 only, batch 1")
    ap.add_argument("--inputs", action="store_true",
                    help="only the old-against-new model input cost per volume")
    args = ap.parse_args()
    if args.inputs:
        input_cost()
        return
    if args.quick:
        args.depths, args.batches = [64, 128], [1]
    import torch

    print(f"DST benchmark on {torch.get_num_threads()} CPU thread(s); torch {torch.__version__}")
    print("\nSize at 128 x 128 x 64 (paper: ~137 M parameters, 36.4 G MAC)")
    ref = counts("paper")[1]
    for name in args.models:
        params, gmac = counts(name)
        print(f"  {name:8s} {params:8.2f} M params {gmac:8.2f} G MAC  ({gmac / ref:.2f}x paper)")
    print("\nCPU latency per volume (s) and peak memory (MB) at 128 x 128 in-plane")
    heads = " ".join(f"{'b=' + str(b):>17s}" for b in args.batches)
    print(f"  {'model':8s} {'depth':>5s} {heads}")
    for name in args.models:
        for depth in args.depths:
            cells = []
            for b in args.batches:
                m = measure(name, depth, b, 128)
                cells.append(f"{m['s_per_volume']:7.3f} s {m['peak_mb']:6.0f} MB")
            print(f"  {name:8s} {depth:5d} " + " ".join(f"{c:>17s}" for c in cells))
    d = args.depths[0]
    print(f"\nIn-plane size at depth {d}, batch 1: memory follows depth, not in-plane size "
          "beyond the encoder")
    for name in args.models:
        a, b = measure(name, d, 1, 128), measure(name, d, 1, 256)
        print(f"  {name:8s} 128x128: {a['peak_mb']:6.0f} MB  256x256: {b['peak_mb']:6.0f} MB "
              f"(x{b['peak_mb'] / max(a['peak_mb'], 1):.2f} for 4x the pixels)")
    if torch.cuda.is_available():
        print("\nGPU (bf16 autocast), 128 x 128 x 64 (the paper: 10 ms, 800 MB on an A100)")
        for name in args.models:
            m = measure(name, 64, 1, 128, "cuda")
            print(f"  {name:8s} {m['s_per_volume'] * 1000:7.2f} ms {m['peak_mb']:7.0f} MB")


if __name__ == "__main__":
    main()
