"""One synthetic series in memory (no files): what the docs scripts and benchmarks look at.

`generate_patient` draws a patient the same way and writes it as DICOM; this draws one
primary series of subject ``index`` of cohort ``seed`` with a chosen slice thickness, so that
a figure or a table can compare thicknesses on the same heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cohort.geometry import Grid
from cohort.synth.acquisition import Protocol, sample_protocol, thick_variant
from cohort.synth.phantom import Phantom, build_phantom
from cohort.synth.render import Placement
from cohort.synth.scan import (
    ScanTruth,
    acquisition_grid,
    finish_image,
    placement_of,
    render_scan,
    sample_artefacts,
    sample_coverage,
    scan_truth,
    subsamples,
)
from cohort.synth.subject import sample_pose, sample_subject


@dataclass(frozen=True)
class SyntheticSeries:
    phantom: Phantom
    placement: Placement
    grid: Grid
    protocol: Protocol
    clean: np.ndarray  # noise-free CT numbers [k, j, i], slice 0 the lowest
    image: np.ndarray  # with the kernel's sharpness and noise
    truth: ScanTruth


def synthesize_series(seed: int, index: int, *, matrix: int = 512, thickness_mm: float = 1.0,
                      calcium_free_p: float = 0.2, neck_cut_p: float = 0.0,
                      render_scale: int = 2, metal_p: float = 0.15, motion_p: float = 0.05,
                      holder_p: float = 0.9) -> SyntheticSeries:
    """Subject ``index`` of cohort ``seed``, scanned axially with a soft kernel."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 0]))
    subject = sample_subject(rng, index, calcium_free_p, metal_p)
    srng = np.random.default_rng(np.random.SeedSequence([seed, index, 11]))
    phantom = build_phantom(subject, texture_seed=int(
        np.random.default_rng(np.random.SeedSequence([seed, index, 2])).integers(2**31)))
    placement = placement_of(sample_pose(srng), table_z=float(srng.uniform(-180.0, 40.0)))
    coverage = sample_coverage(srng, phantom, neck_cut_p)
    p = sample_protocol(srng, matrix=matrix, thickness_choices=(1.0,), spacing_range=(0.4, 0.5),
                        tilt_p=0.0, transfer_syntax="explicit")
    if thickness_mm != p.slice_thickness_mm:
        p = thick_variant(p, thickness_mm)
    grid = acquisition_grid(phantom, placement, coverage, p)
    artefacts = sample_artefacts(srng, p, holder_p=holder_p, motion_p=motion_p)
    clean, occ = render_scan(phantom, placement, grid, p, render_scale, artefacts)
    truth = scan_truth(phantom, placement, grid, subsamples(p.slice_thickness_mm), occ)
    return SyntheticSeries(phantom, placement, grid, p, clean, finish_image(clean, p, srng), truth)
