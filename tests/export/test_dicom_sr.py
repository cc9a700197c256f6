"""The SR of a series: valid (dciodvfy), and highdicom reads back the table's numbers,
each group tied to its SEG segment, with the model named and SYNTHETIC said."""

from __future__ import annotations

import highdicom as hd
import pydicom

from cohort.anatomy import SEGMENT_LABELS, SEGMENTS
from tests.export.helpers import export
from tests.export.test_dicom_seg import dciodvfy_errors


def test_sr_is_valid_and_reads_back_the_tables_numbers(export_cohort, dciodvfy, tmp_path):
    out, truth = export_cohort
    seg_path, sr_path, row, _, _, _ = export(out, truth, 1, tmp_path)
    assert dciodvfy_errors(dciodvfy, sr_path) == []
    seg = pydicom.dcmread(seg_path)
    sr = hd.sr.srread(sr_path)
    assert sr.SeriesDescription.startswith("SYNTHETIC")
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in groups] == list(SEGMENTS)
    for g, name in zip(groups, SEGMENTS, strict=True):
        ref = g.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert ref.referenced_segment_numbers == [SEGMENT_LABELS[name]]
        m = {x.name.value: x for x in g.get_measurements()}
        assert m["112197"].value == row[f"{name}_mm3"]
        assert m["112197"].unit.value == "mm3"
        assert m["111038"].value == row[f"{name}_plaques"]
        if row[f"{name}_peak_hu"] is None:
            assert "112031" not in m
        else:
            assert m["112031"].value == row[f"{name}_peak_hu"]
    # the landmarks, each with the segment it begins
    m = {x.name.value: x.value for x in groups[SEGMENTS.index("left_cavernous")]
         .get_measurements()}
    assert m["PL-SLICE"] == row["left_petrolingual_slice"]
    assert m["PL-Z"] == row["left_petrolingual_z_mm"]
    m = {x.name.value: x.value for x in groups[SEGMENTS.index("right_supraclinoid")]
         .get_measurements()}
    assert m["AC-SLICE"] == row["right_anterior_clinoid_slice"]
    (total,) = sr.content.get_image_measurement_groups()
    assert total.get_measurements()[0].value == row["total_calcium_mm3"]
    assert total.get_qualitative_evaluations()[0].value.meaning == "ICAC risk group low"
    raw = sr_path.read_bytes()  # the algorithm's TEXT items, in every group
    for text in (b"cohort dst-small", b"sha256:abababababab", b"trained on synthetic phantoms",
                 b"calcium mask segmenter vit-default sha256:0123456789ab",
                 b"SYNTHETIC: not for clinical use"):
        assert text in raw
