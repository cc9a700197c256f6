"""Where the job's CPU stage (`cohort.job.prepare.prepare_series`) spends its time on one
512 x 512 series, step by step on one core, against the physical floor: reading the
files' bytes.

    python benchmarks/profile_cpu_stage.py [--thickness 1.0] [--repeats 3] [--tilt]

Steps, each timed alone on the same series (median of ``--repeats``), in the stage's order:

* ``bytes``: every file read into memory (the floor: nothing can be faster);
* ``decode``: bytes -> pixel arrays and slice geometry (`cohort.read.series.fetch_and_decode`);
* ``regularise``: sort, check the stack, HU, gaps and tilt (the rest of `read_series`);
* ``hemispheres``: the midline plane (`split_hemispheres`);
* ``model_input``: the DST's 64 x 64 input (`cohort.preprocess.model_input.prepare`);
* ``segmenter_slab``: the in-plane slab the calcium segmenter stage cuts its crop from;
* ``whole``: `prepare_series` as the job calls it (one reader thread, one torch thread).

Prints seconds per step, each step's multiple of the bytes floor, and the whole stage
against the issue's target of 1 s per 512 x 512 x 150 series per core (scaled to 150
slices). The series is a SYNTHETIC phantom.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

TARGET_S_PER_150 = 1.0


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--thickness", type=float, default=1.0, help="mm (1.0: ~150+ slices)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tilt", action="store_true", help="a gantry-tilted series")
    args = ap.parse_args()

    import torch

    from cohort.job.calcium import pack_slab
    from cohort.job.prepare import PrepareConfig, prepare_series
    from cohort.preprocess.arterial_crop import CropConfig, slab_box
    from cohort.preprocess.hemisphere import split_hemispheres
    from cohort.preprocess.model_input import prepare
    from cohort.read.series import ReadConfig, fetch_and_decode, read_series
    from cohort.synth.config import SynthConfig
    from cohort.synth.heads import generate_cohort

    torch.set_num_threads(1)
    read = ReadConfig(io_threads=1)
    config = PrepareConfig(read=read, crop=CropConfig())
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SynthConfig(patients=1, seed=5, matrix=512, thicknesses_mm=(args.thickness,),
                          localizer_p=0, second_series_p=0, followup_p=0,
                          tilt_p=1.0 if args.tilt else 0.0, stepped_p=0.0, workers=1)
        generate_cohort(cfg, str(Path(tmp) / "c"))
        files = sorted(str(p) for p in (Path(tmp) / "c" / "dicom").rglob("*.dcm"))
        n, mb = len(files), sum(Path(f).stat().st_size for f in files) / 1e6

        def read_bytes():
            return [Path(f).read_bytes() for f in files]

        steps: dict[str, float] = {}
        steps["bytes"], _ = _median_time(read_bytes, args.repeats)
        steps["decode"], _ = _median_time(lambda: fetch_and_decode(files, None, 1),
                                          args.repeats)
        t_read, volume = _median_time(lambda: read_series(files, None, read), args.repeats)
        steps["regularise"] = max(0.0, t_read - steps["decode"])
        steps["hemispheres"], split = _median_time(
            lambda: split_hemispheres(volume, config.hemisphere), args.repeats)
        steps["model_input"], _ = _median_time(lambda: prepare(volume, config.model_input),
                                               args.repeats)
        box = slab_box(volume.grid, split.plane.point, split.plane.normal, config.crop)
        steps["segmenter_slab"], _ = _median_time(lambda: pack_slab(volume, box),
                                                  args.repeats)
        steps["whole"], _ = _median_time(
            lambda: prepare_series(files, "s", replace(config, read=read)), args.repeats)

    floor = steps["bytes"]
    print(f"SYNTHETIC 512 x 512 series: {n} slices, {mb:.0f} MB, "
          f"{'tilted' if args.tilt else 'axial'}; one core; median of {args.repeats}")
    print(f"{'step':16s} {'seconds':>8s} {'x bytes floor':>14s}")
    parts = [k for k in steps if k != "whole"]
    for k in parts:
        print(f"{k:16s} {steps[k]:8.3f} {steps[k] / floor:14.1f}")
    rest = steps["whole"] - sum(steps[k] for k in parts)
    print(f"{'(other)':16s} {rest:8.3f} {rest / floor:14.1f}")
    print(f"{'whole stage':16s} {steps['whole']:8.3f} {steps['whole'] / floor:14.1f}")
    per150 = steps["whole"] * 150 / n
    print(f"\nwhole stage per 150 slices: {per150:.2f} s; target {TARGET_S_PER_150:.1f} s "
          f"-> ratio {per150 / TARGET_S_PER_150:.2f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
