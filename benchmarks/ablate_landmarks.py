"""The landmark recipe's levers, one at a time, measured on VALIDATION (never on test).

    python benchmarks/ablate_landmarks.py --cohort ./studies/shipped/cohort \
        --out ./studies/ablation [--epochs 4] [--train-fraction 0.5] \
        [--variants recipe head_crop true_slice sgd paper]

Every variant is the shipped recipe (`cohort.train.ship.RECIPE`) with one thing changed,
trained on fold 0 of the recipe's split for the same epochs on the same training patients
(``--train-fraction`` of them, to fit a CPU), and scored on fold 0's validation split:

* ``recipe``: as shipped (skull-base field of view, 128 mm over 64 pixels; Gaussian targets
  of 1.5 mm; AdamW);
* ``head_crop``: the first shipped input, the whole head at 240 mm over 64 pixels;
* ``true_slice``: the paper's cross-entropy on the true slice instead of Gaussian targets;
* ``sgd``: SGD (lr 1e-2, momentum 0.9, the first shipped recipe's) instead of AdamW;
* ``paper``: the paper-size DST instead of ``small`` (on a GPU; very slow on a CPU).

Prints, and writes to ``OUT/ablation.md``, a table of validation MAE (slices and mm),
Acc(tau=1), Top-1, the sub-slice estimate's MAE in mm, and the wall time of each variant, all
labelled SYNTHETIC. The caches of model inputs are built once per input and reused.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, replace

import numpy as np

from cohort.model.decoding import sub_slice
from cohort.preprocess.model_input import ModelInputConfig
from cohort.ray_session import RaySession
from cohort.storage import join, write_bytes
from cohort.train.data import build_cache, synthetic_sources, targets
from cohort.train.ship import RECIPE
from cohort.train.study import fold_rows, load_or_make_splits, predict, run_fold

VARIANTS = {
    "recipe": {},
    "head_crop": {"model_input": ModelInputConfig(size=64, fov_mm=240.0, crop="head")},
    "true_slice": {"train": {"target_sigma_mm": 0.0}},
    "sgd": {"train": {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.9,
                      "weight_decay": 1e-5}},
    "paper": {"train": {"model": "paper"}},
}


def variant_config(name: str, epochs: int, gpu: bool = False):
    change = VARIANTS[name]
    train = replace(RECIPE.study.train, epochs=epochs, patience=epochs,
                    **change.get("train", {}))
    return replace(RECIPE.study, train=train, use_gpu=gpu,
                   model_input=change.get("model_input", RECIPE.study.model_input))


def score(model, rows, cache_url) -> dict:
    logits = predict(model, rows, cache_url)
    err, err_mm, sub_mm = [], [], []
    for lg, r in zip(logits, rows.to_dict("records"), strict=True):
        true = targets(r)
        probs = np.exp(lg - lg.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        top = probs.argmax(axis=1)
        err.append(np.abs(top - true))
        err_mm.append(np.abs(top - true) * r["slice_spacing_mm"])
        sub_mm.append(np.abs(sub_slice(probs, top) - true) * r["slice_spacing_mm"])
    e = np.concatenate(err)
    return {"mae_slices": float(e.mean()), "mae_mm": float(np.concatenate(err_mm).mean()),
            "acc_tau1": float((e <= 1).mean()), "top1": float((e == 0).mean()),
            "subslice_mae_mm": float(np.concatenate(sub_mm).mean()),
            "scans": len(logits)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", required=True, help="the recipe's synthetic cohort")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-fraction", type=float, default=0.5)
    ap.add_argument("--gpu", action="store_true", help="train on a GPU (one per variant)")
    ap.add_argument("--variants", nargs="+", default=["recipe", "head_crop", "true_slice"],
                    choices=list(VARIANTS))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sources, labels = synthetic_sources(args.cohort)
    rows = []
    with RaySession() as ray:
        ray.ensure()
        caches: dict[str, tuple[str, object]] = {}
        for name in args.variants:
            cfg = variant_config(name, args.epochs, args.gpu)
            key = repr(asdict(cfg.model_input))
            if key not in caches:
                url = join(args.out, f"cache-{len(caches)}")
                caches[key] = (url, build_cache(sources, labels, url, None, cfg.model_input))
            cache_url, index = caches[key]
            splits = load_or_make_splits(index, args.out, cfg.splits)
            train = splits[(splits["fold"] == 0) & (splits["split"] == "train")]
            keep = train.sample(frac=args.train_fraction, random_state=0)
            splits = splits.drop(train.index.difference(keep.index))
            t0 = time.perf_counter()
            model, _ = run_fold(0, index, splits, cache_url, join(args.out, name), cfg, None)
            val = fold_rows(index, splits, 0, "validation")
            rows.append({"variant": name, **score(model.eval(), val, cache_url),
                         "train_scans": len(fold_rows(index, splits, 0, "train")),
                         "minutes": (time.perf_counter() - t0) / 60})
            logging.info("%s: %s", name, rows[-1])
    head = ("| variant | train scans | val MAE (slices) | val MAE (mm) | sub-slice MAE (mm) | "
            "Acc(tau=1) | Top-1 | minutes |")
    lines = [f"Landmark recipe ablation, fold 0 VALIDATION split, {args.epochs} epochs "
             "(SYNTHETIC data)", "", head, "|" + " --- |" * 8]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['train_scans']} | {r['mae_slices']:.3f} | "
                     f"{r['mae_mm']:.2f} | {r['subslice_mae_mm']:.2f} | {r['acc_tau1']:.3f} | "
                     f"{r['top1']:.3f} | {r['minutes']:.1f} |")
    text = "\n".join(lines) + "\n"
    write_bytes(join(args.out, "ablation.md"), text.encode())
    print(text)


if __name__ == "__main__":
    main()
