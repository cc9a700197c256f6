"""Make docs/report-example/: the `cohort report` of a SYNTHETIC run, kept small for the
repository (figures at 80 dpi, six QC pictures 800 pixels wide), a screenshot of the whole
page (not committed) and preview.png, its first screen for the README.

The committed example is the report of a run of the shipped checkpoints on the unseen
seed-2027 cohort (31 series of 24 patients, follow-ups, localizers and second series;
`cohort synth heads --seed 2027`, then `cohort run` with the shipped DST and segmenter).

Run:  .venv/bin/python docs/make_report_example.py RUN_OUTPUT [--out docs/report-example]
      (the screenshot needs Debian's `chromium`)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile

from cohort.report import ReportConfig, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = ReportConfig(dpi=80, qc_width_px=800, max_gallery=6, synthetic_data=True)


def screenshot(page: str, png: str, preview: str, *, width: int = 1400,
               height: int = 12000) -> None:
    """The page as headless Chromium draws it, cut below its last content, and its top
    (header, banner, headline numbers, flow diagram) at 60% as ``preview``."""
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", f"--user-data-dir={profile}",
                        f"--screenshot={png}", f"--window-size={width},{height}",
                        f"file://{os.path.abspath(page)}"], check=True, capture_output=True,
                       timeout=300)
    image = Image.open(png).convert("RGB")
    grey = np.asarray(image.convert("L"))
    used = np.nonzero((grey != grey[-1, 0]).any(axis=1))[0]
    image = image.crop((0, 0, width, int(used.max()) + 24))
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(png, optimize=True)
    top = image.crop((0, 0, width, min(image.height, 1420)))
    top = top.resize((int(top.width * 0.6), int(top.height * 0.6)), Image.Resampling.LANCZOS)
    top.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(preview, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_output", help="the --out of a finished SYNTHETIC `cohort run`")
    ap.add_argument("--out", default=os.path.join(HERE, "report-example"))
    ap.add_argument("--screenshot", default=os.path.join(tempfile.gettempdir(),
                                                         "report-example.png"),
                    help="the whole page as a PNG (default: %(default)s)")
    args = ap.parse_args()
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    page = write_report(args.run_output, config=EXAMPLE, report_url=args.out)
    print(f"report: {page}")
    if shutil.which("chromium"):
        preview = os.path.join(args.out, "preview.png")
        screenshot(page, args.screenshot, preview)
        print(f"screenshot: {args.screenshot}; preview: {preview}")


if __name__ == "__main__":
    main()
