"""Discovery on DICOM written by real scanners and tools (../shared/realdata, see its
MANIFEST.md): Philips phantom studies with localizers, RGB screenshots, DICOMDIRs and
gantry tilt; one MR image in nine transfer syntaxes; pydicom's odd test files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cohort.config import DiscoveryConfig, IndexConfig
from cohort.discover import build_index
from cohort.errors import ErrorCode


@pytest.fixture(scope="module")
def manifest(realdata) -> tuple[Path, list[dict]]:
    cfg = IndexConfig(discovery=DiscoveryConfig(executor="local"))
    result = build_index(str(realdata), cfg)
    return realdata, result.manifest.to_pylist()


def _rows_under(manifest, folder: str) -> list[dict]:
    root, rows = manifest
    prefix = str(root / folder) + "/"
    return [r for r in rows if r["files"] and r["files"][0].startswith(prefix)]


def _row_of(manifest, folder: str) -> dict:
    """The one series row whose files are the images of ``folder``."""
    rows = [r for r in _rows_under(manifest, folder) if r["kind"] == "series"]
    assert len(rows) == 1, [(r["series_key"], r["n_files"]) for r in rows]
    return rows[0]


def test_every_file_is_in_exactly_one_row(manifest):
    root, rows = manifest
    listed = sorted(str(p) for p in root.rglob("*") if p.is_file())
    accounted = sorted(u for r in rows for u in r["files"] + (r["duplicate_files"] or []))
    assert accounted == listed


def test_philips_s21570_selects_the_axial_5mm_series(manifest):
    s2010 = _row_of(manifest, "dcm_qa_ct_philips/S21570/S2010")
    assert s2010["status"] == "selected" and s2010["error_code"] is None
    assert (s2010["n_files"], s2010["slice_thickness_mm"], s2010["kernel"]) == (28, 5.0, "UB")
    assert s2010["tilt_deg"] == 0 and s2010["coverage_mm"] == pytest.approx(135.0)
    localizer = _row_of(manifest, "dcm_qa_ct_philips/S21570/S1000")
    assert (localizer["status"], localizer["error_code"]) == ("not_selected", ErrorCode.LOCALIZER)
    # the screenshot series holds three stacks: surview copies, and RGB pages of two sizes
    shots = [r for r in _rows_under(manifest, "dcm_qa_ct_philips/S21570/S4010")
             if r["kind"] == "series"]
    assert sorted((r["error_code"], r["n_files"]) for r in shots) == [
        (ErrorCode.COLOR, 1), (ErrorCode.COLOR, 2), (ErrorCode.DERIVED, 3)]
    assert {r["status"] for r in shots} == {"not_selected"}
    assert len({r["series_uid"] for r in shots}) == 1
    assert all(r["selected_series_key"] == s2010["series_key"]
               for r in [localizer, *shots])


def test_philips_s21610_measures_both_gantry_tilts(manifest):
    s2010 = _row_of(manifest, "dcm_qa_ct_philips/S21610/S2010")
    s3010 = _row_of(manifest, "dcm_qa_ct_philips/S21610/S3010")
    # the headers' GantryDetectorTilt agrees with the positions, sign included
    assert s2010["header_tilt_deg"] == -18.5 and s3010["header_tilt_deg"] == 16.5
    assert s2010["tilt_deg"] == pytest.approx(-18.5, abs=0.05)
    assert s3010["tilt_deg"] == pytest.approx(16.5, abs=0.05)
    for row, n in ((s2010, 54), (s3010, 58)):
        assert row["n_files"] == n and row["missing_slices"] == 0
        assert row["tilt_correctable"] and row["needs_resampling"]
        assert row["slice_step_mm"] == pytest.approx(
            2.5 * math.cos(math.radians(row["tilt_deg"])), abs=0.01)
    # same kernel and thickness: the longer coverage wins
    assert s3010["status"] == "selected"
    assert (s2010["status"], s2010["error_code"]) == ("not_selected", "not_preferred")
    assert "more_coverage" in s2010["error_detail"]


def test_dirfiles_are_dicomdirs(manifest):
    root, rows = manifest
    dirfiles = [r for r in rows if r["files"] and r["files"][0].endswith("/DIRFILE")]
    assert len(dirfiles) == 9
    assert {(r["kind"], r["status"], r["error_code"]) for r in dirfiles} == {
        ("object", "not_selected", ErrorCode.DICOMDIR)}


def test_mr_in_nine_transfer_syntaxes_is_one_series_not_ct(manifest):
    row = _row_of(manifest, "dcm_qa_ts/In")
    assert (row["status"], row["error_code"], row["n_files"]) == (
        "not_selected", ErrorCode.NOT_CT, 9)
    assert len(row["transfer_syntax_uids"]) == 7  # two pairs share a syntax
    others = _rows_under(manifest, "dcm_qa_ts/Ref")
    assert len(others) == 18
    assert {r["error_code"] for r in others} == {ErrorCode.NOT_DICOM}


def test_pydicom_files_each_end_in_a_row_with_a_sensible_code(manifest):
    root, rows = manifest
    code_of = {}
    for r in rows:
        for f in r["files"]:
            if "/pydicom_data/" in f:
                code_of[Path(f).name] = (r["status"], r["error_code"])
    assert code_of == {
        "LICENSE": ("not_selected", ErrorCode.NOT_DICOM),
        # an enhanced multi-frame CT
        "eCT_Supplemental.dcm": ("not_selected", ErrorCode.MULTIFRAME),
        # a nuclear-medicine image
        "JPEG-LL.dcm": ("not_selected", ErrorCode.NOT_CT),
        # JPEG 2000 frames cut short: small enough to be fetched whole, so checked here
        # (its series also gets a row: failed, truncated, no usable file)
        "emri_small_jpeg_2k_lossless_too_short.dcm": ("failed", ErrorCode.TRUNCATED),
        # single CT slices: no volume (bad_sequence's broken sequence does not stop the run)
        "bad_sequence.dcm": ("failed", ErrorCode.TOO_FEW_SLICES),
        "explicit_VR-UN.dcm": ("failed", ErrorCode.TOO_FEW_SLICES),
        # one slice in three encodings under one UID: one position, three files
        "693_J2KR.dcm": ("failed", ErrorCode.DUPLICATE_SLICES),
        "693_UNCI.dcm": ("failed", ErrorCode.DUPLICATE_SLICES),
        "693_UNCR.dcm": ("failed", ErrorCode.DUPLICATE_SLICES),
    }


def test_a_series_of_only_broken_files_has_a_row_too(manifest):
    root, rows = manifest
    emri = str(root / "pydicom_data" / "emri_small_jpeg_2k_lossless_too_short.dcm")
    series = [r for r in rows if r["kind"] == "series" and emri in r["excluded_files"]]
    assert [(r["status"], r["error_code"], r["files"], r["modality"]) for r in series] == [
        ("failed", ErrorCode.TRUNCATED, [], "MR")]


def test_headers_only_are_read(realdata):
    cfg = IndexConfig(discovery=DiscoveryConfig(executor="local"))
    result = build_index(str(realdata / "dcm_qa_ct_philips"), cfg)
    objects = result.objects.to_pylist()
    axial = [o for o in objects if o["image_type"] == ["ORIGINAL", "PRIMARY", "AXIAL"]]
    assert len(axial) == 28 + 54 + 58
    assert {(o["bytes_read"], o["range_requests"]) for o in axial} == {(65536, 1)}
    # the surview copies carry 66 KB of private header: one more range of the same size
    long = [o for o in objects if o["image_type"] == ["DERIVED", "SECONDARY", "REF_SURVIEW"]]
    assert len(long) == 5
    assert {(o["bytes_read"], o["range_requests"]) for o in long} == {(131072, 2)}
    assert result.stats.header_bytes_read < 0.2 * result.stats.object_bytes
