"""A DICOM Segmentation (SEG) of one series' calcium, labelled by the eight ICA segments.

The label volume lives on the read volume's grid (`cohort.read.series`): the source slices
for a regular series, the regular axial grid for a gantry-tilted one, which was resampled.
The SEG's frames carry that grid's own plane positions and orientation in the source's
frame of reference, so a viewer places them in patient space whatever the source's
geometry; highdicom adds a per-frame reference to the source image where a frame lies on
one (a regular series) and otherwise references the source series' instances as a whole
(Referenced Series Sequence), as for a tilted series.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from cohort.anatomy import SEGMENT_KINDS, SEGMENT_LABELS, SEGMENTS, SIDES
from cohort.errors import ConfigError
from cohort.export import codes
from cohort.export.provenance import Provenance
from cohort.geometry import Grid

logger = logging.getLogger(__name__)

SEG_SERIES_NUMBER = 9019  # high, so that viewers list it after the scanner's series


def algorithm(prov: Provenance) -> hd.AlgorithmIdentificationSequence:
    """The algorithm that labelled the voxels: the landmark model (segments) and where
    the calcium mask came from."""
    return hd.AlgorithmIdentificationSequence(
        name=f"cohort {prov.model_name}"[:64],
        family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"),
        version=f"{prov.model_checksum} code {prov.code_version}"[:64],
        parameters={"mask_source": prov.mask_source[:64],
                    "trained_on": prov.model_trained_on[:64]})


def segment_descriptions(prov: Provenance) -> list[hd.seg.SegmentDescription]:
    """The eight segments in label order (`cohort.anatomy.SEGMENT_LABELS`)."""
    out = []
    for side in SIDES:
        for kind in SEGMENT_KINDS:
            number = SEGMENT_LABELS[f"{side}_{kind}"]
            out.append(hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=codes.segment_label_text(side, kind),
                segmented_property_category=codes.MORPHOLOGICALLY_ALTERED_STRUCTURE,
                segmented_property_type=codes.CALCIFICATION,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm(prov),
                tracking_id=f"{side}_{kind}",
                tracking_uid=prov.uid("tracking", f"{side}_{kind}"),
                anatomic_regions=[codes.SEGMENT_REGION[kind]],
            ))
    # laterality as the anatomic region's modifier (Anatomic Region Modifier Sequence)
    for d, name in zip(out, SEGMENTS, strict=True):
        side = name.split("_", 1)[0]
        modifier = hd.sr.CodedConcept.from_code(codes.LATERALITY[side])
        d.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [modifier]
    return out


def grid_volume(labels: np.ndarray, grid: Grid, frame_of_reference_uid: str) -> hd.Volume:
    """The label array ``[k, j, i]`` as a highdicom volume in patient space (LPS)."""
    if labels.shape != tuple(grid.shape):
        raise ConfigError(f"label volume of shape {labels.shape} does not match its grid "
                          f"{tuple(grid.shape)}")
    affine = np.eye(4)
    # highdicom's array axes are (frame, row, column): our (k, j, i)
    affine[:3, 0] = grid.slice_step
    affine[:3, 1] = grid.row_step
    affine[:3, 2] = grid.col_step
    affine[:3, 3] = grid.origin
    return hd.Volume(labels.astype(np.uint8), affine, "PATIENT",
                     frame_of_reference_uid=frame_of_reference_uid)


def build_seg(headers: list[Dataset], labels: np.ndarray, grid: Grid, prov: Provenance,
              series_uid: str) -> hd.seg.Segmentation:
    """The SEG of one series.

    Args:
        headers: the source instances' de-identified headers (`cohort.export.headers`).
        labels: segment labels 0..8 (`cohort.anatomy.SEGMENT_LABELS`), ``[k, j, i]`` on
            ``grid`` (the read volume's grid).
        grid: where the labels lie, in the source's frame of reference.
        prov: the models behind the labels.
        series_uid: the source SeriesInstanceUID (fixes the SEG's UIDs).

    Raises:
        ConfigError: no headers, labels off their grid or outside 0..8.
    """
    if not headers:
        raise ConfigError(f"series {series_uid}: no source headers to reference")
    if labels.shape != tuple(grid.shape):
        raise ConfigError(f"series {series_uid}: label volume of shape {labels.shape} does "
                          f"not match its grid {tuple(grid.shape)}")
    top = int(labels.max()) if labels.size else 0
    if labels.min(initial=0) < 0 or top > len(SEGMENTS):
        raise ConfigError(f"series {series_uid}: labels must be 0..{len(SEGMENTS)}, found "
                          f"{int(labels.min())}..{top}")
    if top == 0:
        # no calcium: highdicom keeps every empty frame when all are empty; one slice of
        # empty frames says "looked, none" without megabytes of zeros
        labels, grid = labels[:1], replace(grid, shape=(1, *grid.shape[1:]))
    volume = grid_volume(labels, grid, str(headers[0].FrameOfReferenceUID))
    seg = hd.seg.Segmentation(
        source_images=headers, pixel_array=volume,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(prov),
        series_instance_uid=prov.uid(series_uid, "seg-series"), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=prov.uid(series_uid, "seg"), instance_number=1,
        manufacturer="cohort", manufacturer_model_name=prov.model_name[:64],
        software_versions=prov.code_version[:64], device_serial_number=prov.model_checksum,
        content_description=("SYNTHETIC " if prov.synthetic else "") + "ICA calcium",
        content_label="ICAC", omit_empty_frames=True,
    )
    seg.SeriesDescription = prov.description("ICA calcium SEG")
    return seg
