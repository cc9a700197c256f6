"""A few lines a person can read about a synthetic cohort that was just written."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from cohort.anatomy import SEGMENT_KINDS, SIDES
from cohort.storage import join

#: the scanner artefacts the ground truth names, in the order they are reported
ARTEFACT_NAMES = ("beam_hardening", "head_holder", "metal", "motion")


def describe_cohort(table: pa.Table, out_url: str, seconds: float) -> str:
    """Counts by series role, acquisition variety and calcium, for the console."""
    df = table.to_pandas()
    roles = df["series_role"].value_counts().to_dict()
    image = df[df["series_role"] != "localizer"]
    primary = df[df["series_role"] == "primary"]
    lines = [
        f"SYNTHETIC head-CT cohort (phantoms, not patient data) written to {out_url}",
        f"  {df['patient_id'].nunique()} patients, {df['study_instance_uid'].nunique()} studies, "
        f"{len(df)} series ({', '.join(f'{n} {r}' for r, n in sorted(roles.items()))}) "
        f"in {seconds:.1f} s",
    ]
    if len(image):
        lines.append(
            f"  slices per series {image['n_slices'].min()}-{image['n_slices'].max()}, "
            f"thickness {image['slice_thickness_mm'].min():g}-"
            f"{image['slice_thickness_mm'].max():g} mm, "
            f"{int((image['gantry_tilt_deg'] != 0).sum())} gantry-tilted, "
            f"{int(image['neck_cut'].sum())} with the neck cut off, "
            f"scanners: {', '.join(sorted(image['manufacturer'].unique()))}")
        if "artefacts" in image:
            counts = image["artefacts"].fillna("").str.split(",").explode().value_counts()
            said = [f"{counts[a]} {a.replace('_', ' ')}" for a in ARTEFACT_NAMES if a in counts]
            lines.append(f"  artefacts (series): {', '.join(said) if said else 'none'}")
    if len(primary):
        calcified = int((primary["total_calcium_mm3"] > 0).sum())
        seg_totals = []
        for kind in SEGMENT_KINDS:
            total = sum(float(pc.sum(pa.array(primary[f"{s}_{kind}_mm3"])).as_py() or 0)
                        for s in SIDES)
            seg_totals.append(f"{kind} {total:.0f}")
        lines.append(f"  calcium in {calcified}/{len(primary)} primary series; total mm^3 by "
                     f"segment: {', '.join(seg_totals)}")
    lines.append(f"  ground truth: {join(out_url, 'ground_truth.parquet')}; DICOM under "
                 f"{join(out_url, 'dicom')}; masks and labels under {join(out_url, 'masks')} "
                 f"and {join(out_url, 'labels')}")
    return "\n".join(lines)
