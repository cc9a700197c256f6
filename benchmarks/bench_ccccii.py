"""Clean-CC-CCII models at the paper's input: compute, parameters, peak memory, latency.

    python benchmarks/bench_ccccii.py [--models dst resnet50_3d densenet121_3d] [--size 128]
                                      [--depth 64] [--repeats 3] [--threads N]

For each model at 128 x 128 x 64 (batch 1, CPU): G multiply-accumulates, parameters, peak
resident memory of one forward pass (weights included) and latency per volume, each model
measured in a fresh process by `cohort.model.compute.measure`, with ratios against the DST
measured in the same run. The paper's Table III gives the G MAC column (as "GFlops") for
comparison: DST 35.57, ResNet50_3D 40.89, DenseNet121_3D 21.45. Inputs are random tensors:
compute does not depend on content.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

PAPER_GMAC = {"dst": 35.57, "resnet50_3d": 40.89, "densenet121_3d": 21.45}

PROBE = r"""
import dataclasses, json, sys, torch
from cohort.model import zoo
from cohort.model.compute import measure
name, size, depth, repeats, threads = sys.argv[1], *map(int, sys.argv[2:6])
torch.set_num_threads(threads)
c = measure(lambda: zoo.build_network(name), (size, size, depth), repeats=repeats)
print(json.dumps(dataclasses.asdict(c)))
"""


def probe(name: str, size: int, depth: int, repeats: int, threads: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, name, str(size), str(depth), str(repeats), str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["dst", "resnet50_3d", "densenet121_3d"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--depth", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = ap.parse_args()
    import os

    threads = args.threads or os.cpu_count() or 1
    rows = {m: probe(m, args.size, args.depth, args.repeats, threads) for m in args.models}
    ref = next((m for m in args.models if m.startswith("dst")), args.models[0])
    r = rows[ref]
    print(
        f"Clean-CC-CCII models at {args.size} x {args.size} x {args.depth}, batch 1, "
        f"{r['device']}; ratios against {ref} measured in the same run"
    )
    print(
        f"  {'model':16s} {'G MAC':>8s} {'paper':>6s} {'params M':>9s} {'peak MB':>8s} "
        f"{'ms/vol':>8s}   {'MAC x':>6s} {'params x':>8s} {'mem x':>6s} {'time x':>6s}"
    )
    for m, c in rows.items():
        paper = f"{PAPER_GMAC[m]:6.2f}" if m in PAPER_GMAC else f"{'-':>6s}"
        print(
            f"  {m:16s} {c['gmac']:8.2f} {paper} {c['params_m']:9.2f} "
            f"{c['peak_memory_mb']:8.0f} {c['latency_ms']:8.0f}   "
            f"{c['gmac'] / r['gmac']:6.2f} {c['params_m'] / r['params_m']:8.2f} "
            f"{c['peak_memory_mb'] / max(r['peak_memory_mb'], 1e-9):6.2f} "
            f"{c['latency_ms'] / r['latency_ms']:6.2f}"
        )


if __name__ == "__main__":
    main()
