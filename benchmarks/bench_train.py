"""Training throughput of the DST localization model and time to the validation plateau.

    python benchmarks/bench_train.py [--size 64] [--depth 96] [--batch 2] [--steps 5]
                                     [--study URL]

* Throughput: volumes per second per worker, the shipped recipe's model and input
  (`cohort.train.ship.RECIPE`: small, 64 x 64 in-plane, AdamW, Gaussian targets) against the
  paper's size at the same input and step, on this machine (CPU, or a GPU when present). One
  worker's step = forward, the recipe's loss, backward, gradient clipping and an optimizer
  update, as `cohort.train.loop` does it (random inputs: compute does not depend on content).
* ``--study``: the validation curve of a finished or running study (`cohort train shipped`
  or `cohort train localization`), read from its fold checkpoints (per-epoch history), and
  the time to its plateau: the first epoch whose validation MAE is within 10% of the best.
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from dataclasses import replace

import torch

from cohort.model.dst import build_model
from cohort.model.runtime import autocast, pick_device
from cohort.train.loop import make_optimizer
from cohort.train.ship import RECIPE
from cohort.train.tasks import LandmarkTargets, LocalizationTask


def throughput(name: str, size: int, depth: int, batch: int, steps: int,
               device: torch.device) -> float:
    cfg = replace(RECIPE.study.train, model=name)
    task = LocalizationTask(name, cfg.max_len, cfg.target_sigma_mm)
    model = build_model(name).to(device).train()
    opt = make_optimizer(model.parameters(), cfg)
    x = torch.randn(batch, 1, size, size, depth, device=device)
    y = LandmarkTargets(torch.randint(0, depth, (batch, 6), device=device),
                        torch.full((batch,), 2.0, device=device))

    def step():
        with autocast(device):
            out = model(x)
        loss = task.loss(out, y)
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


def study_curve(study: str) -> None:
    """Print each fold's validation curve and its time to the plateau."""
    paths = sorted(glob.glob(os.path.join(study, "folds", "fold-*", "checkpoint_*",
                                          "state.pt")))
    by_fold: dict[str, str] = {}
    for p in paths:  # the newest checkpoint of each fold holds the whole history
        by_fold[p.split(os.sep)[-3]] = p
    if not by_fold:
        print(f"no fold checkpoints under {study}/folds")
        return
    for fold, path in sorted(by_fold.items()):
        history = torch.load(path, map_location="cpu", weights_only=True).get("history", [])
        if not history:
            print(f"{fold}: no history (trained before histories were kept)")
            continue
        best = min(h["val_mae"] for h in history)
        plateau = next(h for h in history if h["val_mae"] <= 1.1 * best)
        print(f"\n{fold}: validation curve (MAE in slices; SYNTHETIC data)")
        print("  epoch  train loss  val MAE  val Top-1        lr  elapsed")
        for h in history:
            print(f"  {h['epoch'] + 1:5d}  {h['train_loss']:10.3f}  {h['val_mae']:7.3f}  "
                  f"{h.get('val_top1', float('nan')):9.3f}  {h['lr']:8.2e}  "
                  f"{h['elapsed_s'] / 60:5.1f} min")
        print(f"  plateau (within 10% of the best, {best:.3f}): epoch {plateau['epoch'] + 1}, "
              f"{plateau['elapsed_s'] / 60:.1f} min")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=RECIPE.study.model_input.size)
    ap.add_argument("--depth", type=int, default=96)
    ap.add_argument("--batch", type=int, default=RECIPE.study.train.batch_size)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["small", "paper"])
    ap.add_argument("--study", metavar="URL", help="also print a study's validation curve")
    args = ap.parse_args()
    device = pick_device()
    print(f"DST training throughput on {device} ({torch.get_num_threads()} CPU threads), "
          f"{args.size} x {args.size} x {args.depth}, batch {args.batch}, the shipped "
          "recipe's optimizer and loss")
    rates = {}
    for name in args.models:
        rates[name] = throughput(name, args.size, args.depth, args.batch, args.steps, device)
        print(f"  {name:6s} {rates[name]:7.2f} volumes/s per worker")
    if {"small", "paper"} <= set(rates):
        print(f"  small / paper = {rates['small'] / rates['paper']:.1f}x")
    if args.study:
        study_curve(args.study)


if __name__ == "__main__":
    main()
