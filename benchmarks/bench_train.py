"""Training throughput of the DST localization model: volumes per second per worker, the
small default against the paper's size, on this machine (CPU, or a GPU when present).

    python benchmarks/bench_train.py [--depth 96] [--batch 2] [--steps 5]

One worker's step = forward, the sum of six cross-entropies, backward, gradient clipping
and an SGD update, exactly as `cohort.train.loop` does it (random inputs: compute does not
depend on content). Time to convergence and test metrics come from a full study
(`cohort train localization`), not from this script.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from cohort.model.dst import build_model
from cohort.model.runtime import autocast, pick_device
from cohort.train.loop import TrainConfig


def throughput(name: str, depth: int, batch: int, steps: int, device: torch.device) -> float:
    cfg = TrainConfig(model=name)
    model = build_model(name).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    x = torch.randn(batch, 1, 128, 128, depth, device=device)
    y = torch.randint(0, depth, (batch, 6), device=device)

    def step():
        with autocast(device):
            out = model(x)
        loss = sum(F.cross_entropy(out.landmark_logits[:, j], y[:, j]) for j in range(6))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=96)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    device = pick_device()
    print(f"DST training throughput on {device} ({torch.get_num_threads()} CPU threads), "
          f"128 x 128 x {args.depth}, batch {args.batch}")
    rates = {}
    for name in ("small", "paper"):
        rates[name] = throughput(name, args.depth, args.batch, args.steps, device)
        print(f"  {name:6s} {rates[name]:7.2f} volumes/s per worker")
    print(f"  small / paper = {rates['small'] / rates['paper']:.1f}x")


if __name__ == "__main__":
    main()
