"""What one stack of images is: its series-level attributes, whether its type can be
analysed at all (CT, axial, original, grey-scale, single-frame, not a localizer), and its
geometry measured by `cohort.read.stack.check_stack` from every slice's header.

`describe_stack` returns the stack's manifest row. Its ``status`` is "failed" or
"not_selected" when the stack cannot be analysed, and None for a candidate: selection
(`cohort.discover.selection`) decides between the candidates of a study.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from cohort.config import SelectionConfig
from cohort.discover.grouping import Stack
from cohort.discover.manifest import NOT_SELECTED_OBJECT_CODES
from cohort.errors import ErrorCode, SeriesError
from cohort.geometry import header_tilt_convention
from cohort.read.stack import SliceGeometry, StackRules, check_stack, signed_tilt_deg
from cohort.schemas import MANIFEST

logger = logging.getLogger(__name__)

#: SOP classes whose objects hold many frames with per-frame geometry
ENHANCED_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
})
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # (multi-frame) secondary capture
LOCALIZER_WORDS = frozenset({"LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW"})
#: geometry codes that leave a stack analysable but make it a poor choice, not a failure
_NOT_SELECTED_GEOMETRY = frozenset({ErrorCode.NOT_AXIAL.value})


def describe_stack(stack: Stack, rules: StackRules, selection: SelectionConfig,
                   excluded: list[dict] = ()) -> dict:
    """The manifest row of ``stack`` (status None for a selection candidate).

    Args:
        stack: the stack's image headers (OBJECTS rows).
        rules: geometry tolerances for `check_stack`.
        selection: which images can be analysed at all.
        excluded: unusable objects (truncated, ...) of the same series, listed for reference.
    """
    files = list(stack.files)
    row = dict.fromkeys(MANIFEST.names)
    row.update(
        kind="series", series_key=stack.key, series_uid=stack.series_uid,
        stack_index=stack.index, n_stacks=stack.n_stacks,
        n_files=len(files), n_bytes=sum(f["size_bytes"] for f in files),
        header_bytes_read=sum(f["bytes_read"] for f in files),
        excluded_files=[f["uri"] for f in excluded], duplicate_files=[], notes=[],
        transfer_syntax_uids=sorted({f["transfer_syntax_uid"] for f in files
                                     if f["transfer_syntax_uid"]}),
        number_of_frames=max((f["number_of_frames"] or 1 for f in files), default=1),
    )
    for column in ("patient_id", "study_uid", "series_number", "series_description",
                   "study_date", "modality", "sop_class_uid", "manufacturer", "model",
                   "kernel", "samples_per_pixel", "rows", "columns", "slice_thickness_mm"):
        row[column] = _mode(f[column] for f in files)
    for column, source in (("image_type", "image_type"), ("pixel_spacing_mm", "pixel_spacing_mm"),
                           ("orientation", "image_orientation")):
        value = _mode(tuple(f[source]) if f[source] else None for f in files)
        row[column] = list(value) if value else None
    row["header_tilt_deg"] = _mode(f["gantry_tilt_deg"] for f in files)
    if excluded:
        row["notes"].append(f"{len(excluded)} unusable file(s) of this series left out "
                            "(see their own rows)")

    files_in_order = _measure_geometry(row, files, rules)
    row["files"] = [f["uri"] for f in files_in_order]
    rule = type_rule(row, files, selection)
    if rule is not None:  # what the images are says more than their geometry
        if row["status"] == "failed":
            row["notes"].append(f"geometry: [{row['error_code']}] {row['error_detail']}")
            row["tilt_correctable"] = None
        row.update(status="not_selected", error_code=rule[0].value, error_detail=rule[1])
    elif row["error_code"] in _NOT_SELECTED_GEOMETRY:  # a valid stack, just not axial
        row["status"] = "not_selected"
    return row


def describe_unusable_series(series_uid: str, files: list[dict]) -> dict:
    """The manifest row of a series none of whose objects is a usable image: "failed" with
    the most common file code (or "not_selected" when they are not images at all, e.g. a
    structured-report series). Its objects keep their own rows; ``files`` stays empty."""
    codes = Counter(f["error_code"] for f in files)
    code = _mode(f["error_code"] for f in files)
    row = dict.fromkeys(MANIFEST.names)
    row.update(
        kind="series", series_key=series_uid, series_uid=series_uid, stack_index=1, n_stacks=1,
        status="not_selected" if code in NOT_SELECTED_OBJECT_CODES else "failed",
        error_code=code, n_files=0, n_bytes=0, header_bytes_read=0, files=[],
        duplicate_files=[], excluded_files=[f["uri"] for f in files], notes=[],
        error_detail=f"none of its {len(files)} object(s) is a usable image ("
                     + ", ".join(f"{c} {n}" for c, n in sorted(codes.items()))
                     + "); see their own rows",
    )
    for column in ("patient_id", "study_uid", "series_number", "series_description",
                   "study_date", "modality", "sop_class_uid", "manufacturer", "model", "kernel"):
        row[column] = _mode(f[column] for f in files)
    return row


def type_rule(row: dict, files: list[dict], cfg: SelectionConfig
              ) -> tuple[ErrorCode, str] | None:
    """Why the images of a stack cannot be analysed at all, or None."""
    modality = (row["modality"] or "").upper()
    if modality not in {m.upper() for m in cfg.modalities}:
        return ErrorCode.NOT_CT, (f"Modality {row['modality'] or 'missing'}; only "
                                  f"{', '.join(cfg.modalities)} series are analysed")
    if row["number_of_frames"] > 1 or any(f["sop_class_uid"] in ENHANCED_SOP_CLASSES
                                          for f in files):
        return ErrorCode.MULTIFRAME, (f"enhanced multi-frame object(s) with "
                                      f"{row['number_of_frames']} frames; only one file per "
                                      "slice is read (convert with dcm2niix or emf2sf)")
    photometric = {f["photometric"] for f in files if f["photometric"]}
    if (row["samples_per_pixel"] or 1) > 1 or any(not p.startswith("MONOCHROME")
                                                  for p in photometric):
        return ErrorCode.COLOR, (f"colour images ({row['samples_per_pixel']} samples per pixel, "
                                 f"{', '.join(sorted(photometric)) or 'no photometric'}): "
                                 "screenshots or reports, not CT numbers")
    words = set(row["image_type"] or ())
    if words & LOCALIZER_WORDS:
        return ErrorCode.LOCALIZER, (f"a localizer (ImageType {'/'.join(row['image_type'])}), "
                                     "not a cross-sectional series")
    if not cfg.allow_derived:
        image_type = row["image_type"] or []
        secondary = (row["sop_class_uid"] or "").startswith(SECONDARY_CAPTURE_PREFIX)
        if secondary or image_type[:1] == ["DERIVED"] or image_type[1:2] == ["SECONDARY"]:
            return ErrorCode.DERIVED, (
                f"derived or secondary images (ImageType {'/'.join(image_type) or 'missing'}"
                f"{', secondary capture' if secondary else ''}); allow_derived admits them")
    return None


def _measure_geometry(row: dict, files: list[dict], rules: StackRules) -> list[dict]:
    """Run `check_stack` and fill the geometry columns of ``row``; the files in anatomical
    order (feet to head) when it passes, else by InstanceNumber. A failure sets
    status "failed" with the check's code."""
    by_instance = sorted(files, key=lambda f: (f["instance_number"] is None,
                                               f["instance_number"] or 0, f["uri"]))
    lacking = [f for f in files if not (f["image_position"] and f["image_orientation"]
                                        and f["pixel_spacing_mm"] and f["rows"]
                                        and f["columns"])]
    if lacking:
        row.update(status="failed", error_code=ErrorCode.INCONSISTENT_GEOMETRY.value,
                   error_detail=f"{len(lacking)} of {len(files)} images lack "
                                "ImagePositionPatient, ImageOrientationPatient, PixelSpacing "
                                f"or Rows/Columns (e.g. {lacking[0]['uri']}); the stack's "
                                "geometry cannot be checked")
        return by_instance
    slices = [SliceGeometry(tuple(f["image_position"]), tuple(f["image_orientation"]),
                            int(f["rows"]), int(f["columns"]), tuple(f["pixel_spacing_mm"]),
                            f["slice_thickness_mm"])
              for f in files]
    try:
        geometry = check_stack(slices, rules, series=row["series_key"])
    except SeriesError as e:
        row.update(status="failed", error_code=e.code.value, error_detail=e.detail,
                   tilt_correctable=False)
        return by_instance
    kept = [files[i] for i in geometry.order]
    z = [f["image_position"][2] for f in kept]
    row.update(
        n_slices=len(kept), slice_step_mm=float(geometry.step_mm),
        coverage_mm=float(max(z) - min(z)), missing_slices=int(geometry.missing_slices),
        duplicate_slices=len(geometry.duplicates), uneven_spacing=bool(geometry.uneven),
        tilt_deg=float(signed_tilt_deg(geometry)), tilt_correctable=True,
        needs_resampling=bool(geometry.needs_resampling),
        duplicate_files=[files[i]["uri"] for i in geometry.duplicates],
        variable_spacing=geometry.variable_spacing,
        sparse_slices=geometry.sparse is not None,
        spacing_blocks=[b.as_dict() for b in geometry.blocks] or None,
    )
    row["notes"].extend(geometry.notes)
    note = tilt_note(row["header_tilt_deg"], row["tilt_deg"], row["manufacturer"])
    if note:
        row["notes"].append(note)
    return kept


def tilt_note(header_deg: float | None, measured_deg: float, manufacturer: str | None
              ) -> str | None:
    """What a user comparing with the scanner console needs to know when GantryDetectorTilt
    (kept as written) and the tilt measured from the positions (cohort's sign,
    `cohort.geometry`) differ; None when they agree."""
    if header_deg is None:
        return None
    if abs(abs(header_deg) - abs(measured_deg)) > 1.0:
        return (f"GantryDetectorTilt says {header_deg:g} deg, the slice positions give "
                f"{measured_deg:.2f} deg; the positions are used")
    if abs(measured_deg) < 1.0 or np.sign(header_deg) == np.sign(measured_deg):
        return None
    convention = header_tilt_convention(manufacturer)
    why = (f"the known convention of {manufacturer}, which writes the opposite sign"
           if convention == -1 else
           f"not a convention we know for {manufacturer or 'this manufacturer'}: check the "
           "scanner's documentation" if convention is None else
           f"unexpected: {manufacturer} usually writes the measured sign; check the headers")
    return (f"GantryDetectorTilt {header_deg:+g} deg as written; measured {measured_deg:+.1f} "
            "deg (negative: the front edge of each slice is higher): opposite signs, " + why)


def _mode(values):
    """The most common non-None value (ties: the smallest), or None."""
    counts = Counter(v for v in values if v is not None)
    if not counts:
        return None
    top = max(counts.values())
    return min((v for v, c in counts.items() if c == top), key=repr)
