"""Arrow schemas of every table `cohort` writes, versioned. Plain Arrow types only, so
that DuckDB, pandas and plain pyarrow read them without Ray's extension types."""

from __future__ import annotations

import pyarrow as pa

from cohort.anatomy import LANDMARKS, SEGMENTS

GROUND_TRUTH_VERSION = "1"

#: one row per synthetic series (written by `cohort synth heads`)
GROUND_TRUTH = pa.schema(
    [
        pa.field("synthetic", pa.bool_(), nullable=False),
        pa.field("patient_id", pa.string(), nullable=False),
        pa.field("patient_index", pa.int32(), nullable=False),
        pa.field("study_instance_uid", pa.string(), nullable=False),
        pa.field("study_role", pa.string(), nullable=False),  # baseline | followup
        pa.field("series_instance_uid", pa.string(), nullable=False),
        pa.field("series_number", pa.int32(), nullable=False),
        pa.field("series_role", pa.string(), nullable=False),  # primary|bone_kernel|thick|localizer
        pa.field("dicom_dir", pa.string(), nullable=False),  # relative to the cohort root
        pa.field("mask_path", pa.string()),  # relative; null for localizers
        pa.field("labels_path", pa.string()),
        pa.field("n_slices", pa.int32(), nullable=False),
        pa.field("rows", pa.int32(), nullable=False),
        pa.field("columns", pa.int32(), nullable=False),
        pa.field("pixel_spacing_mm", pa.float64(), nullable=False),
        pa.field("slice_thickness_mm", pa.float64(), nullable=False),
        pa.field("slice_step_mm", pa.float64(), nullable=False),
        pa.field("first_slice_z_mm", pa.float64(), nullable=False),  # z of truth-grid slice 0
        pa.field("gantry_tilt_deg", pa.float64(), nullable=False),
        pa.field("manufacturer", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("kernel", pa.string(), nullable=False),
        pa.field("transfer_syntax", pa.string(), nullable=False),
        pa.field("noise_sd_hu", pa.float64(), nullable=False),
        pa.field("neck_cut", pa.bool_(), nullable=False),
        pa.field("yaw_deg", pa.float64(), nullable=False),
        pa.field("pitch_deg", pa.float64(), nullable=False),
        pa.field("roll_deg", pa.float64(), nullable=False),
    ]
    + [pa.field(f"{name}_slice", pa.int32()) for name in LANDMARKS]
    + [pa.field(f"{name}_z_mm", pa.float64()) for name in LANDMARKS]
    + [pa.field(f"{name}_mm3", pa.float64()) for name in SEGMENTS]
    + [pa.field(f"{name}_voxels", pa.int64()) for name in SEGMENTS]
    + [
        pa.field("total_calcium_mm3", pa.float64()),
        pa.field("n_plaques", pa.int32()),
    ],
    metadata={"cohort.table": "ground_truth", "cohort.version": GROUND_TRUTH_VERSION,
              "cohort.synthetic": "true"},
)
