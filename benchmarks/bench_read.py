"""Series decode throughput: cohort's reader against SimpleITK's ImageSeriesReader and a
plain pydicom loop, on the same synthetic series, in one run.

    python benchmarks/bench_read.py [--slices 150] [--repeats 5] [--syntaxes explicit rle ...]

Prints MB/s of DICOM turned into a HU volume (median of interleaved repeats) and the ratio
of cohort's reader to the faster of the two baselines. The series are SYNTHETIC phantoms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from cohort.read.series import read_series
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort


def sitk_read(files: list[str]) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(Path(files[0]).parent)))
    return sitk.GetArrayFromImage(reader.Execute())


def pydicom_loop(files: list[str]) -> np.ndarray:
    slices = []
    for f in files:
        ds = pydicom.dcmread(f)
        slices.append((float(ds.ImagePositionPatient[2]),
                       ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)))
    slices.sort(key=lambda s: s[0])
    return np.stack([s[1] for s in slices]).astype(np.float32)


def cohort_read(files: list[str]) -> np.ndarray:
    return read_series(files).array


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--thickness", type=float, default=1.25, help="mm (1.25: ~150 slices)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--syntaxes", nargs="+", default=["explicit", "rle", "jpeg-ls", "jpeg2000"])
    args = ap.parse_args()
    readers = {"cohort": cohort_read, "SimpleITK": sitk_read, "pydicom loop": pydicom_loop}
    print("Series decode throughput, SYNTHETIC 512 x 512 head CT, MB of DICOM per second "
          f"(median of {args.repeats})")
    print(f"{'syntax':10s} {'slices':>6s} {'MB':>6s} " + " ".join(f"{n:>13s}" for n in readers)
          + "  cohort / faster baseline")
    with tempfile.TemporaryDirectory() as tmp:
        for syntax in args.syntaxes:
            out = Path(tmp) / syntax
            cfg = SynthConfig(patients=1, seed=3, matrix=512, thicknesses_mm=(args.thickness,),
                              transfer_syntax=syntax, localizer_p=0, second_series_p=0,
                              followup_p=0, tilt_p=0, workers=1)
            generate_cohort(cfg, str(out))
            files = sorted(str(p) for p in (out / "dicom").rglob("*.dcm"))
            mb = sum(Path(f).stat().st_size for f in files) / 1e6
            reference = cohort_read(files)
            # same CT numbers (cohort sets padding and below-air values to -1024 HU)
            assert np.allclose(np.maximum(sitk_read(files), -1024), reference), "readers differ"
            times: dict[str, list[float]] = {n: [] for n in readers}
            for _ in range(args.repeats):  # interleaved, so drift hits every reader alike
                for name, fn in readers.items():
                    t0 = time.perf_counter()
                    fn(files)
                    times[name].append(time.perf_counter() - t0)
            rate = {n: mb / statistics.median(t) for n, t in times.items()}
            ratio = rate["cohort"] / max(rate["SimpleITK"], rate["pydicom loop"])
            print(f"{syntax:10s} {len(files):6d} {mb:6.1f} "
                  + " ".join(f"{rate[n]:13.1f}" for n in readers) + f"  {ratio:.2f}x")


if __name__ == "__main__":
    main()
