"""How the landmark model should see a variable-thickness (stepped) head CT: measured.

    python benchmarks/bench_variable_spacing.py [--patients 16] [--seed 11] [--matrix 256]

Two synthetic cohorts of the same subjects and poses (SYNTHETIC phantoms): one acquired as
regular helical stacks, one as sequential two-block protocols (thin slices through the
posterior fossa, thicker above, half of them gantry-tilted). Each stepped series is read
onto the finest block's spacing (`cohort.read`), and the shipped DST (or ``--model``) is
run on it twice:

* ``volume``: every slice of the read volume, evenly spaced in z as in training;
* ``native``: only the volume slices nearest the acquired ones (thick blocks shorter in
  the sequence than they are in the head).

It prints, per way and for the helical baseline of the same subjects, the mean absolute
landmark error in mm (|predicted z - true z|) and in acquired (native) slices, and the
share of landmarks within one acquired slice. Ratios are against the helical baseline
measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_info import machine  # noqa: E402

from cohort.anatomy import LANDMARKS  # noqa: E402
from cohort.job.checkpoint import shipped_checkpoint  # noqa: E402
from cohort.job.landmarks import LandmarkPredictor  # noqa: E402
from cohort.model.dst import load_checkpoint  # noqa: E402
from cohort.preprocess.model_input import ModelInputConfig, prepare  # noqa: E402
from cohort.read.series import read_series, volume_to_native  # noqa: E402
from cohort.synth.config import SynthConfig  # noqa: E402
from cohort.synth.heads import generate_cohort  # noqa: E402


def errors(root: Path, predictor: LandmarkPredictor, base: ModelInputConfig,
           depth: str) -> pd.DataFrame:
    """One row per (series, landmark): errors in mm and in acquired slices."""
    truth = pd.read_parquet(root / "ground_truth.parquet")
    truth = truth[truth["series_role"] == "primary"]
    cfg = ModelInputConfig(**{**base.__dict__, "depth": depth})
    rows = []
    for t in truth.itertuples(index=False):
        files = sorted(str(p) for p in (root / t.dicom_dir).glob("*.dcm"))
        volume = read_series(files, series=t.series_instance_uid)
        mi = prepare(volume, cfg)
        logits = predictor.predict([mi.array])[0]
        top = logits.argmax(axis=1)
        native = volume_to_native(volume)
        for n, name in enumerate(LANDMARKS):
            z = float(mi.slice_z_mm[top[n]])
            k = int(native[mi.slice_index[top[n]]])
            rows.append({"series": t.series_instance_uid, "landmark": name,
                         "mm": abs(z - getattr(t, f"{name}_z_mm")),
                         "slices": abs(k - getattr(t, f"{name}_slice")),
                         "depth": mi.depth})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=16)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--matrix", type=int, default=256)
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped one)")
    args = ap.parse_args()
    print(machine())
    model_path = args.model or shipped_checkpoint()
    _, meta = load_checkpoint(model_path, map_location="cpu")
    base = ModelInputConfig(**(meta.get("model_input") or {}))
    predictor = LandmarkPredictor(model_path, threads=2, prefer_gpu=False)
    common = dict(patients=args.patients, seed=args.seed, matrix=args.matrix,
                  localizer_p=0.0, second_series_p=0.0, followup_p=0.0, workers=2)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        helical, stepped = Path(tmp, "helical"), Path(tmp, "stepped")
        generate_cohort(SynthConfig(**common, tilt_p=0.0), str(helical))
        generate_cohort(SynthConfig(**common, stepped_p=1.0, tilt_p=0.5), str(stepped))
        results["helical (baseline)"] = errors(helical, predictor, base, "volume")
        for depth in ("volume", "native"):
            results[f"stepped, depth={depth}"] = errors(stepped, predictor, base, depth)
    base_mm = results["helical (baseline)"]["mm"].mean()
    print(f"\nSYNTHETIC: {args.patients} subjects, seed {args.seed}, matrix {args.matrix}, "
          f"model {Path(model_path).name}")
    print(f"{'input':28s} {'depth':>7s} {'mm':>7s} {'slices':>7s} {'<=1 slice':>9s} "
          f"{'mm / baseline':>13s}")
    for name, df in results.items():
        print(f"{name:28s} {df['depth'].median():7.0f} {df['mm'].mean():7.2f} "
              f"{df['slices'].mean():7.2f} {np.mean(df['slices'] <= 1):9.0%} "
              f"{df['mm'].mean() / base_mm:13.2f}")


if __name__ == "__main__":
    main()
