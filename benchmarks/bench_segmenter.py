"""What the calcium segmenter costs: per scan against the DST, and the job's scans per
minute with the segmenter stage against without it, in one run.

    python benchmarks/bench_segmenter.py [--series 8] [--matrix 512] [--cpus 2]

A SYNTHETIC cohort (one primary series per patient) is generated into a temporary folder.

1. Per scan, in this process, one thread: each series is prepared once (the CPU stage with
   the segmenter's slab), then the DST stage (`LandmarkPredictor`, one-row batch, with its
   mirrored pass) and the segmenter stage (`CalciumSegmenterStage`: the crop window by
   window) are timed on it. Also multiply-accumulates: the DST's at its input, the
   segmenter's per window times the windows of each crop.
2. The job (`run_cohort`) on a fresh local Ray with --cpus CPUs, on the same series: with
   --no-segmenter (landmarks only, the baseline), then with the segmenter.

Prints seconds and GMAC per scan of both models and their ratio, crop sizes, and the job's
scans per minute with / without the segmenter.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from machine_info import machine

from cohort.job.calcium import CalciumSegmenterStage
from cohort.job.checkpoint import describe, shipped_checkpoint
from cohort.job.landmarks import LandmarkPredictor
from cohort.job.packing import unpack
from cohort.job.prepare import PrepareConfig, prepare_series
from cohort.job.segmenter_checkpoint import describe_segmenter, shipped_segmenter
from cohort.job.stages import STAGE_DEFAULTS
from cohort.model.compute import count_macs
from cohort.model.zoo import load_checkpoint
from cohort.pipeline import RunConfig, run_cohort
from cohort.preprocess.model_input import ModelInputConfig
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort
from cohort.write.identity import IdentityConfig


def per_scan(cohort: Path, series: int) -> pd.DataFrame:
    """Seconds and GMAC of the DST and the segmenter on each series (see module)."""
    torch.set_num_threads(1)
    dst = describe(None)
    seg = describe_segmenter(None)
    prepare = PrepareConfig(model_input=ModelInputConfig(**dst.model_input), crop=seg.crop)
    landmarks = LandmarkPredictor(None, threads=1, prefer_gpu=False)
    segmenter = CalciumSegmenterStage(None, threads=1, prefer_gpu=False)
    net, _ = load_checkpoint(shipped_segmenter())
    window_gmac = count_macs(net, torch.zeros(1, 1, *net.cfg.window)) / 1e9
    dnet, _ = load_checkpoint(shipped_checkpoint())
    truth = pd.read_parquet(cohort / "ground_truth.parquet")
    truth = truth[truth["series_role"] == "primary"].head(series)
    rows = []
    for r in truth.itertuples():
        files = sorted(str(p) for p in (cohort / r.dicom_dir).iterdir())
        row = {**STAGE_DEFAULTS, "status": "ok", "series_key": r.series_instance_uid,
               "series_uid": r.series_instance_uid, "files": files}
        row.update(prepare_series(files, r.series_instance_uid, prepare))
        t0 = time.perf_counter()
        got = landmarks(pd.DataFrame([row])).iloc[0].to_dict()
        t1 = time.perf_counter()
        out = segmenter(pd.DataFrame([got])).iloc[0].to_dict()
        t2 = time.perf_counter()
        box = out["segmenter_crop"]
        shape = (box[3] - box[2], box[5] - box[4], box[1] - box[0])
        windows = int(np.prod([max(1, int(np.ceil((s - w) / (w * 0.75))) + 1) if s > w else 1
                               for s, w in zip(shape, net.cfg.window, strict=True)]))
        mi = unpack(row["model_input"])["x"]  # the DST's input; mirrored pass: twice
        passes = 2 if landmarks.decoding.mirror else 1
        dst_gmac = passes * count_macs(dnet, torch.as_tensor(mi[None, None].astype(
            np.float32))) / 1e9
        rows.append({"series": r.series_instance_uid[-8:], "thickness_mm": r.slice_thickness_mm,
                     "crop": "x".join(map(str, shape)), "windows": windows,
                     "dst_s": t1 - t0, "segmenter_s": t2 - t1, "dst_gmac": dst_gmac,
                     "segmenter_gmac": windows * window_gmac})
    return pd.DataFrame(rows)


def job_rate(dicom: Path, out: Path, cpus: int, segment: bool) -> float:
    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        report = run_cohort(str(dicom), str(out), replace(
            RunConfig(qc="none", identity=IdentityConfig(salt="bench")), segment=segment))
    finally:
        ray.shutdown()
    return report.scans_per_minute


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", type=int, default=8)
    p.add_argument("--matrix", type=int, default=512)
    p.add_argument("--cpus", type=int, default=2)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cohort"
        generate_cohort(SynthConfig(patients=args.series, seed=77, matrix=args.matrix,
                                    localizer_p=0, second_series_p=0, followup_p=0,
                                    workers=1), str(root))
        df = per_scan(root, args.series)
        print("SYNTHETIC cohort; per scan, one thread:")
        print(df.round(3).to_string(index=False))
        dst_s, seg_s = df["dst_s"].mean(), df["segmenter_s"].mean()
        print(f"mean seconds per scan: DST {dst_s:.3f}, segmenter {seg_s:.3f} "
              f"(ratio segmenter / DST {seg_s / dst_s:.2f})")
        print(f"mean GMAC per scan: DST {df['dst_gmac'].mean():.2f}, segmenter "
              f"{df['segmenter_gmac'].mean():.2f} (ratio "
              f"{df['segmenter_gmac'].mean() / df['dst_gmac'].mean():.2f})")
        without = job_rate(root / "dicom", Path(tmp) / "without", args.cpus, segment=False)
        with_seg = job_rate(root / "dicom", Path(tmp) / "with", args.cpus, segment=True)
        print(f"job on {args.cpus} CPUs, {args.series} series: {without:.1f} scans/min "
              f"without the segmenter, {with_seg:.1f} with it (ratio with / without "
              f"{with_seg / without:.2f})")


if __name__ == "__main__":
    main()
