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
        # a stepped (sequential, two-block) protocol: n_slices counts acquired slices and
        # *_slice indexes them; masks, labels, first_slice_z_mm, slice_step_mm and *_voxels
        # live on the truth grid of truth_grid_slices slices (the grid the reader produces)
        pa.field("variable_spacing", pa.bool_()),
        pa.field("upper_slice_thickness_mm", pa.float64()),  # the upper block's; null: one
        pa.field("truth_grid_slices", pa.int32()),
        # what the scanner added (comma-separated: beam_hardening, metal, motion,
        # head_holder) and the physiological calcifications a threshold would also take
        pa.field("artefacts", pa.string()),
        pa.field("distractors", pa.string()),
    ],
    metadata={"cohort.table": "ground_truth", "cohort.version": GROUND_TRUTH_VERSION,
              "cohort.synthetic": "true"},
)

MANIFEST_VERSION = "1"

#: one row per listed object (file): what its header says, or why it could not be read
#: (written by `cohort index` as objects.parquet beside the manifest)
OBJECTS = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("bytes_read", pa.int64(), nullable=False),  # fetched to read the header
        pa.field("range_requests", pa.int32(), nullable=False),
        pa.field("error_code", pa.string()),  # cohort.errors.ErrorCode; null: a usable image
        pa.field("error_detail", pa.string()),
        pa.field("series_key", pa.string()),  # the manifest row that holds this image
        pa.field("sop_class_uid", pa.string()),
        pa.field("sop_instance_uid", pa.string()),
        pa.field("transfer_syntax_uid", pa.string()),
        pa.field("patient_id", pa.string()),
        pa.field("study_uid", pa.string()),
        pa.field("series_uid", pa.string()),
        # IS values: up to 12 characters, so any legal value fits 64 bits (not 32)
        pa.field("series_number", pa.int64()),
        pa.field("instance_number", pa.int64()),
        pa.field("modality", pa.string()),
        pa.field("image_type", pa.list_(pa.string())),
        pa.field("manufacturer", pa.string()),
        pa.field("model", pa.string()),
        pa.field("kernel", pa.string()),  # first value of ConvolutionKernel
        pa.field("series_description", pa.string()),
        pa.field("study_date", pa.string()),
        pa.field("rows", pa.int32()),
        pa.field("columns", pa.int32()),
        pa.field("samples_per_pixel", pa.int32()),
        pa.field("number_of_frames", pa.int64()),  # IS as well
        pa.field("photometric", pa.string()),
        pa.field("bits_allocated", pa.int32()),
        pa.field("pixel_spacing_mm", pa.list_(pa.float64())),  # (between rows, between columns)
        pa.field("slice_thickness_mm", pa.float64()),
        pa.field("image_position", pa.list_(pa.float64())),  # ImagePositionPatient, mm
        pa.field("image_orientation", pa.list_(pa.float64())),  # ImageOrientationPatient
        pa.field("gantry_tilt_deg", pa.float64()),  # GantryDetectorTilt as written
        pa.field("pixel_data_bytes", pa.int64()),  # declared length; null: encapsulated
        # what was read in spite of a problem, each "code: detail" (cohort.discover.headers):
        # skipped_private_element, no_series_uid, out_of_range, unreadable_value
        pa.field("notes", pa.list_(pa.string())),
    ],
    metadata={"cohort.table": "objects", "cohort.version": MANIFEST_VERSION},
)

#: one block of a variable-thickness stack (cohort.read.stack.SpacingBlock); z is world z of
#: its first and last slice positions, spacing is along the slice normal
SPACING_BLOCK = pa.struct([
    pa.field("first_slice", pa.int32()), pa.field("n_slices", pa.int32()),
    pa.field("first_z_mm", pa.float64()), pa.field("last_z_mm", pa.float64()),
    pa.field("spacing_mm", pa.float64()), pa.field("thickness_mm", pa.float64()),
])

#: one row per input series (one per stack when a SeriesInstanceUID holds several), and one
#: row per object that is not a usable image (kind = "object"); written by `cohort index`.
#: status: selected | not_selected | failed; error_code says why for every row not selected.
MANIFEST = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),  # series | object
        pa.field("status", pa.string(), nullable=False),  # selected | not_selected | failed
        pa.field("error_code", pa.string()),  # ErrorCode value or "not_preferred"; null: selected
        pa.field("error_detail", pa.string()),  # why, naming what was preferred or what failed
        pa.field("series_key", pa.string()),  # unique per series row: UID, or UID#k for stacks
        pa.field("selected_series_key", pa.string()),  # what its study selected, if anything
        pa.field("patient_id", pa.string()),
        pa.field("study_uid", pa.string()),
        pa.field("series_uid", pa.string()),
        pa.field("stack_index", pa.int32()),  # 1.. when the UID holds several stacks, else 1
        pa.field("n_stacks", pa.int32()),  # stacks under this SeriesInstanceUID
        pa.field("series_number", pa.int64()),  # IS: up to 12 digits
        pa.field("series_description", pa.string()),
        pa.field("study_date", pa.string()),
        pa.field("modality", pa.string()),
        pa.field("sop_class_uid", pa.string()),
        pa.field("image_type", pa.list_(pa.string())),
        pa.field("manufacturer", pa.string()),
        pa.field("model", pa.string()),
        pa.field("kernel", pa.string()),
        pa.field("kernel_class", pa.string()),  # soft | bone | unknown
        pa.field("transfer_syntax_uids", pa.list_(pa.string())),
        pa.field("samples_per_pixel", pa.int32()),
        pa.field("number_of_frames", pa.int64()),
        pa.field("rows", pa.int32()),
        pa.field("columns", pa.int32()),
        pa.field("pixel_spacing_mm", pa.list_(pa.float64())),
        pa.field("slice_thickness_mm", pa.float64()),
        pa.field("orientation", pa.list_(pa.float64())),  # ImageOrientationPatient
        pa.field("n_files", pa.int32(), nullable=False),
        pa.field("n_bytes", pa.int64(), nullable=False),  # sum of the objects' sizes
        pa.field("header_bytes_read", pa.int64(), nullable=False),
        # feet to head when the geometry check passed, else by InstanceNumber
        pa.field("files", pa.list_(pa.string()), nullable=False),
        pa.field("duplicate_files", pa.list_(pa.string())),  # same position as a kept file
        pa.field("excluded_files", pa.list_(pa.string())),  # this series' unusable objects
        pa.field("n_slices", pa.int32()),  # distinct positions (files minus duplicates)
        pa.field("slice_step_mm", pa.float64()),  # along the plane normal
        pa.field("coverage_mm", pa.float64()),  # z extent of the positions
        pa.field("missing_slices", pa.int32()),
        pa.field("duplicate_slices", pa.int32()),
        pa.field("uneven_spacing", pa.bool_()),
        pa.field("tilt_deg", pa.float64()),  # gantry tilt measured from positions, signed
        pa.field("header_tilt_deg", pa.float64()),  # GantryDetectorTilt (may be absent/wrong)
        pa.field("tilt_correctable", pa.bool_()),  # the reader resamples it to a regular grid
        pa.field("needs_resampling", pa.bool_()),  # tilt, gaps or uneven steps
        pa.field("notes", pa.list_(pa.string())),
        # contiguous blocks of different slice thickness (a sequential head protocol): read
        # on the finest block's spacing; spacing_blocks lists them feet to head
        pa.field("variable_spacing", pa.bool_()),
        pa.field("spacing_blocks", pa.list_(SPACING_BLOCK)),
        # slice step > 1.5 x thickness: part of the depth never imaged (a note says how much)
        pa.field("sparse_slices", pa.bool_()),
    ],
    metadata={"cohort.table": "manifest", "cohort.version": MANIFEST_VERSION},
)

RUN_VERSION = "1"

#: one row per input series of a `cohort run` (status ok | skipped | error), under
#: ``<out>/runs/<run_id>/series/``. Landmark slices count acquired (native) slices from the
#: most inferior one; z is world z (mm) of the landmark. For a regular stack the native
#: slices are the read volume's (after tilt correction); for a variable-thickness stack the
#: volume is on the finest block's spacing and the landmarks table gives both.
SERIES = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("series_key", pa.string(), nullable=False),  # manifest key: UID or UID#k
        pa.field("series_uid", pa.string()),
        pa.field("study_key", pa.string()),  # keyed hash of StudyInstanceUID (or as is)
        pa.field("patient_key", pa.string()),  # keyed hash of PatientID (or as is)
        # the folder (prefix) of the files: only with --keep-ids (paths often hold patient IDs)
        pa.field("source_uri", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # ok | skipped | error
        pa.field("error_code", pa.string()),  # ErrorCode value, or the manifest's reason
        pa.field("error_detail", pa.string()),
        pa.field("study_date", pa.string()),
        pa.field("manufacturer", pa.string()),
        pa.field("scanner_model", pa.string()),
        pa.field("kernel", pa.string()),
        pa.field("n_files", pa.int32()),
        pa.field("n_slices", pa.int32()),  # slices of the read volume
        pa.field("rows", pa.int32()),
        pa.field("columns", pa.int32()),
        pa.field("pixel_spacing_mm", pa.float64()),
        pa.field("slice_step_mm", pa.float64()),
        pa.field("slice_thickness_mm", pa.float64()),
        pa.field("tilt_deg", pa.float64()),
        pa.field("tilt_corrected", pa.bool_()),
        pa.field("variable_spacing", pa.bool_()),  # contiguous blocks of different thickness
        pa.field("midline_used", pa.string()),  # paper | symmetric plane
        pa.field("midline_offset_mm", pa.float64()),
        pa.field("midline_angle_deg", pa.float64()),
        pa.field("model_decimation", pa.int32()),  # 1 unless the series was deeper than max_len
    ]
    + [pa.field(f"{name}_slice", pa.int32()) for name in LANDMARKS]
    + [pa.field(f"{name}_z_mm", pa.float64()) for name in LANDMARKS]
    # the model's confidence in the landmark: for current checkpoints the probability that
    # the true slice is within one slice of it (older ones: of the reported slice itself)
    + [pa.field(f"{name}_prob", pa.float64()) for name in LANDMARKS]
    + [pa.field(f"{name}_mm3", pa.float64()) for name in SEGMENTS]
    + [pa.field(f"{name}_voxels", pa.int64()) for name in SEGMENTS]
    + [pa.field(f"{name}_plaques", pa.int32()) for name in SEGMENTS]
    + [pa.field(f"{name}_peak_hu", pa.float64()) for name in SEGMENTS]
    # the calcium segmenter's interval of each volume (calibrated probabilities: the
    # voxels at or above 1 - (1 - level)/2, and at or above (1 - level)/2); null for masks
    + [pa.field(f"{name}_mm3_low", pa.float64()) for name in SEGMENTS]
    + [pa.field(f"{name}_mm3_high", pa.float64()) for name in SEGMENTS]
    + [
        pa.field("total_calcium_mm3_low", pa.float64()),
        pa.field("total_calcium_mm3_high", pa.float64()),
        pa.field("calcium_interval_level", pa.float64()),  # e.g. 0.9
        # where the calcium mask came from: "external" (--masks) or "segmenter <name>
        # sha256:<12 hex>"; null when no mask was made
        pa.field("mask_source", pa.string()),
        # predicted calcium voxels on an inner face of the segmenter's crop (flagged)
        pa.field("crop_edge_voxels", pa.int64()),
        pa.field("calcium_mask", pa.string()),  # relative NIfTI of the mask (--write-masks)
        pa.field("seconds_segment", pa.float64()),
        pa.field("volumes_computed", pa.bool_()),  # false without a calcium mask
        pa.field("total_calcium_mm3", pa.float64()),
        pa.field("total_calcium_voxels", pa.int64()),
        pa.field("n_plaques", pa.int32()),
        pa.field("risk_group", pa.string()),
        pa.field("risk_scheme", pa.string()),  # the cut-offs that made risk_group
        pa.field("qc_flags", pa.list_(pa.string())),
        pa.field("low_confidence_landmarks", pa.list_(pa.string())),
        # a landmark probability below it is low confidence; from the model's checkpoint
        # (fitted on its validation split), the configuration, or the 0.5 fallback
        pa.field("confidence_threshold", pa.float64()),
        pa.field("confidence_threshold_source", pa.string()),  # model | config | fallback
        pa.field("qc_picture", pa.string()),  # relative to the run folder, when drawn
        pa.field("label_map", pa.string()),  # relative NIfTI of segment labels, when written
        pa.field("model_name", pa.string()),
        pa.field("model_sha256", pa.string()),
        pa.field("model_trained_on", pa.string()),  # e.g. "synthetic phantoms"
        pa.field("code_version", pa.string()),
        pa.field("seconds_prepare", pa.float64()),
        pa.field("seconds_inference", pa.float64()),
        pa.field("seconds_quantify", pa.float64()),
    ],
    metadata={"cohort.table": "series", "cohort.version": RUN_VERSION},
)

#: the six landmarks of every ok series, one row each
LANDMARK_ROWS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("series_key", pa.string(), nullable=False),
        pa.field("series_uid", pa.string()),
        pa.field("patient_key", pa.string()),
        pa.field("landmark", pa.string(), nullable=False),
        pa.field("side", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("slice", pa.int32()),  # acquired (native) slice, from the most inferior
        pa.field("volume_slice", pa.int32()),  # slice of the read volume (label maps, QC)
        pa.field("z_mm", pa.float64()),
        pa.field("probability", pa.float64()),
        pa.field("low_confidence", pa.bool_()),
    ],
    metadata={"cohort.table": "landmarks", "cohort.version": RUN_VERSION},
)

#: the eight segments of every ok series with volumes, one row each
SEGMENT_ROWS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("series_key", pa.string(), nullable=False),
        pa.field("series_uid", pa.string()),
        pa.field("patient_key", pa.string()),
        pa.field("segment", pa.string(), nullable=False),
        pa.field("side", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("volume_mm3", pa.float64()),
        pa.field("voxels", pa.int64()),
        pa.field("plaques", pa.int32()),
        pa.field("peak_hu", pa.float64()),
        pa.field("volume_mm3_low", pa.float64()),  # the segmenter's interval; null for masks
        pa.field("volume_mm3_high", pa.float64()),
        pa.field("mask_source", pa.string()),
        pa.field("risk_group", pa.string()),  # the series' group, repeated for easy GROUP BY
    ],
    metadata={"cohort.table": "segments", "cohort.version": RUN_VERSION},
)
