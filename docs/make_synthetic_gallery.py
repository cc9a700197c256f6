"""Make docs/synthetic_gallery.png: six SYNTHETIC heads as a radiologist would page them.

One row per subject (cohort seed 21, subjects 0-5, 1 mm slices, 512 x 512, soft kernel, the
generator's default artefacts): axial slices at the three landmark levels (carotid canal,
petrolingual, anterior clinoid; the mean of the two sides) in a bone window (W 2500 / L 500)
and a brain window (W 80 / L 40), then a coronal and a sagittal reformat through the sella
(W 200 / L 40). Calcium of the ground truth is not drawn: judge the image as it is.

Run:  .venv/bin/python docs/make_synthetic_gallery.py [--out docs/synthetic_gallery.png]
"""

from __future__ import annotations

import argparse
import logging
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cohort.anatomy import LANDMARK_KINDS, SIDES  # noqa: E402
from cohort.synth.series import synthesize_series  # noqa: E402

logger = logging.getLogger("make_synthetic_gallery")
HERE = os.path.dirname(os.path.abspath(__file__))
WINDOWS = {"bone": (500.0, 2500.0), "brain": (40.0, 80.0), "reformat": (40.0, 200.0)}
LEVEL_NAMES = {"carotid_canal": "canal", "petrolingual": "petrolingual",
               "anterior_clinoid": "clinoid"}


def _window(img: np.ndarray, name: str) -> np.ndarray:
    level, width = WINDOWS[name]
    return np.clip((img - (level - width / 2)) / width, 0.0, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "synthetic_gallery.png"))
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--matrix", type=int, default=512)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    columns = [(kind, w) for kind in LANDMARK_KINDS for w in ("bone", "brain")]
    n_cols = len(columns) + 2
    fig, axes = plt.subplots(args.subjects, n_cols, figsize=(2.0 * n_cols, 2.2 * args.subjects),
                             facecolor="black", gridspec_kw=dict(wspace=0.02, hspace=0.06))
    for row in range(args.subjects):
        s = synthesize_series(args.seed, row, matrix=args.matrix, thickness_mm=1.0,
                              calcium_free_p=0.0)
        img, grid = s.image, s.grid
        nk, nj, ni = img.shape
        # crop to the head (and its holder) with a margin: the field of view is mostly air
        inside = np.flatnonzero((img[nk // 2] > -500).any(axis=0))
        rows_in = np.flatnonzero((img[nk // 2] > -500).any(axis=1))
        c0, c1 = max(inside.min() - 8, 0), min(inside.max() + 8, ni)
        r0, r1 = max(rows_in.min() - 8, 0), min(rows_in.max() + 40, nj)
        for col, (kind, window) in enumerate(columns):
            k = int(round(np.mean([s.truth.landmark_slices[f"{side}_{kind}"] for side in SIDES])))
            ax = axes[row, col]
            ax.imshow(_window(img[k, r0:r1, c0:c1], window), cmap="gray", vmin=0, vmax=1)
            if row == 0:
                ax.set_title(f"{LEVEL_NAMES[kind]}, {window}", color="white", fontsize=8)
        # reformats through the sella (the head frame's origin)
        sella = grid.index(s.placement.to_world(s.phantom.to_head(np.zeros(3))[0]))
        i0, j0 = (int(np.clip(round(float(sella[d])), 0, n - 1)) for d, n in ((0, ni), (1, nj)))
        aspect = grid.spacing[2] / grid.spacing[0]
        for col, (name, plane) in enumerate((("coronal", img[:, j0, c0:c1]),
                                             ("sagittal", img[:, r0:r1, i0])),
                                            start=len(columns)):
            ax = axes[row, col]
            ax.imshow(_window(plane[::-1], "reformat"), cmap="gray", vmin=0, vmax=1,
                      aspect=aspect)
            if row == 0:
                ax.set_title(name, color="white", fontsize=8)
        p = s.protocol
        axes[row, 0].text(2, 2, f"subject {row}: {p.manufacturer.split()[0]} {p.kernel}, "
                          f"{p.kvp:g} kV, {p.exposure_mas:.0f} mAs, age "
                          f"{s.phantom.subject.age_years:.0f}", color="yellow", fontsize=6,
                          va="top")
        logger.info("subject %d: %d slices, artefacts %s", row, nk,
                    ", ".join(["beam_hardening"] + (["metal"] if s.phantom.subject.dental_fillings
                                                    else [])))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.suptitle(f"SYNTHETIC head CTs (phantoms, not patient data): cohort seed {args.seed}, "
                 f"1 mm, {args.matrix} x {args.matrix}; axial at the landmark levels, bone and "
                 "brain windows; reformats through the sella", color="white", fontsize=10)
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=0.95)
    fig.savefig(args.out, dpi=110, facecolor="black")
    logger.info("wrote %s (%.0f KB)", args.out, os.path.getsize(args.out) / 1024)


if __name__ == "__main__":
    main()
