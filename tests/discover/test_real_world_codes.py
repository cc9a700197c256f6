"""Error codes that name the real problem (issue 13): each case is a file a real scanner
wrote, rebuilt here with pydicom (`cohort.testing.scanner_files`), read as an OBJECTS row
and, where it matters, indexed into a manifest."""

from __future__ import annotations

import io
import logging
import re
import warnings
from pathlib import Path

import pyarrow as pa
import pydicom
import pytest
from fsspec.implementations.local import LocalFileSystem
from pydicom.uid import ExplicitVRBigEndian

from cohort.config import DiscoveryConfig, IndexConfig
from cohort.discover import build_index
from cohort.discover.headers import quiet_pydicom, read_header, read_headers
from cohort.discover.listing import ObjectInfo
from cohort.discover.manifest import object_row
from cohort.errors import ErrorCode
from cohort.schemas import MANIFEST, OBJECTS
from cohort.testing.scanner_files import (
    BROKEN_KINDS,
    STUDY_UID,
    broken_private_sequence,
    ct_slice,
    elscint_slice,
    encoded,
    with_private_element,
)

FS = LocalFileSystem()
LOCAL = IndexConfig(discovery=DiscoveryConfig(executor="local", files_per_task=64))


def _row(path: Path, data: bytes | None = None, **cfg) -> dict:
    if data is not None:
        path.write_bytes(data)
    with quiet_pydicom():  # as read_headers reads them
        return read_header(FS, ObjectInfo(str(path), str(path), path.stat().st_size),
                           DiscoveryConfig(**cfg))


def _write_series(folder: Path, data: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"IM{k:04d}" for k in range(len(data))]
    for path, d in zip(paths, data, strict=True):
        path.write_bytes(d)
    return paths


def _plain_pydicom_loses_the_pixels(data: bytes) -> bool:
    """True when pydicom alone raises on ``data`` or reads no complete PixelData."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except Exception:  # noqa: BLE001 - that is the point
            return True
    return "PixelData" not in ds or len(ds.PixelData) != 16 * 16 * 2


# --- 1. Explicit VR Big Endian --------------------------------------------------------


def test_a_big_endian_slice_is_a_usable_image(tmp_path):
    data = encoded(ct_slice(3, seed=1), big_endian=True)
    row = _row(tmp_path / "be", data)
    assert row["error_code"] is None, row["error_detail"]
    assert row["transfer_syntax_uid"] == ExplicitVRBigEndian
    assert (row["rows"], row["columns"], row["bits_allocated"]) == (16, 16, 16)
    assert row["image_position"] == [-30.0, -30.0, 15.0]
    assert row["instance_number"] == 4 and row["series_number"] == 2
    assert row["pixel_data_bytes"] == 512 and row["notes"] == []


def test_a_big_endian_slice_with_an_implicit_un_sequence_is_not_truncated(tmp_path):
    """The standard encodes an undefined-length UN element as implicit VR little endian;
    pydicom reads it big endian, runs to the end of the file and fails there (this made a
    complete file 'truncated at byte N of N')."""
    data = with_private_element(encoded(ct_slice(seed=1), big_endian=True),
                                broken_private_sequence("un_implicit", big_endian=True),
                                big_endian=True)
    assert _plain_pydicom_loses_the_pixels(data)
    row = _row(tmp_path / "be-un", data)
    assert row["error_code"] is None, row["error_detail"]
    assert row["pixel_data_bytes"] == 512 and row["transfer_syntax_uid"] == ExplicitVRBigEndian
    assert row["notes"] == ["skipped_private_element: (0009,1010) (UN) at byte 456; pydicom "
                            "cannot parse its content, the rest of the object was read "
                            "without it"]


# --- 2. a vendor's private sequence pydicom misparses -----------------------------------


@pytest.mark.parametrize("big_endian", [False, True], ids=["little", "big"])
@pytest.mark.parametrize("kind", ["too_long", "no_delimiters"])
def test_a_misparsed_private_sequence_is_skipped_and_named(tmp_path, kind, big_endian):
    data = with_private_element(encoded(ct_slice(seed=1), big_endian=big_endian),
                                broken_private_sequence(kind, big_endian=big_endian),
                                big_endian=big_endian)
    assert _plain_pydicom_loses_the_pixels(data)
    row = _row(tmp_path / kind, data)
    assert row["error_code"] is None, row["error_detail"]
    assert row["series_uid"] == f"{STUDY_UID}.2" and row["patient_id"] == "P13"
    assert row["pixel_data_bytes"] == 512 and row["image_position"] == [-30.0, -30.0, 0.0]
    assert len(row["notes"]) == 1
    assert row["notes"][0].startswith("skipped_private_element: (0009,1010) (SQ) at byte 456;")


def test_a_misparsed_private_sequence_is_found_past_the_first_block(tmp_path):
    data = with_private_element(encoded(ct_slice(seed=1)),
                                broken_private_sequence("no_delimiters"))
    row = _row(tmp_path / "x", data, header_block_bytes=512)
    assert row["error_code"] is None and row["notes"][0].startswith(
        "skipped_private_element: (0009,1010)")
    assert row["bytes_read"] == len(data)


def test_a_file_cut_short_after_a_broken_private_sequence_stays_truncated(tmp_path):
    """Skipping the element is tried, but no sound pixel data follows: still truncated,
    with the element it broke in named and every offset in decimal."""
    whole = with_private_element(encoded(ct_slice(seed=1)),
                                 broken_private_sequence("no_delimiters"))
    data = whole[:-100]
    row = _row(tmp_path / "cut", data)
    assert row["error_code"] == ErrorCode.TRUNCATED
    assert row["notes"] == []
    detail = row["error_detail"]
    assert f"at byte {len(data)} of {len(data)}" in detail
    assert "in element (0009,1010) that starts at byte 456" in detail
    # pydicom says "No tag to read at file position <hex>": here in decimal, one base only
    assert re.search(r"No tag to read at byte \d+$", detail), detail
    assert "0x" not in detail and "position" not in detail


# --- 3. integer values too large for 32 bits ------------------------------------------


def test_an_instance_number_beyond_32_bits_is_kept(tmp_path):
    ds = ct_slice()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.InstanceNumber = "1160501010100"  # as a scanner wrote it: 13 characters, IS has 12
        ds.SeriesNumber = "999999999999"
        data = encoded(ds)
    row = _row(tmp_path / "big", data)
    assert row["error_code"] is None and row["notes"] == []
    assert (row["instance_number"], row["series_number"]) == (1160501010100, 999999999999)


def test_a_value_beyond_64_bits_is_a_note_naming_the_tag_not_a_failed_batch(tmp_path):
    good = tmp_path / "good"
    good.write_bytes(encoded(ct_slice()))
    ds = ct_slice(1)
    odd = tmp_path / "odd"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds["InstanceNumber"].value = "123456789012345678901"  # not legal IS, but written
        odd.write_bytes(encoded(ds))
    objects = [ObjectInfo(str(p), str(p), p.stat().st_size) for p in (good, odd)]
    table = read_headers((str(tmp_path), None, DiscoveryConfig()), objects)
    assert table.schema == OBJECTS
    rows = table.to_pylist()
    assert [r["error_code"] for r in rows] == [None, None]
    assert rows[0]["instance_number"] == 1 and rows[1]["instance_number"] is None
    (note,) = rows[1]["notes"]  # pydicom reads such an IS through a float: digits differ
    assert re.fullmatch(r"out_of_range: InstanceNumber \(0020,0013\) is 1234567890123456\d{5}, "
                        r"beyond the int64 column instance_number; left empty", note), note


def test_every_integer_column_of_objects_holds_any_is_value():
    for name in ("series_number", "instance_number", "number_of_frames"):
        assert OBJECTS.field(name).type == pa.int64(), name


def test_large_numbers_index_quietly_and_the_manifest_says_what_did_not_fit(tmp_path, caplog):
    data = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(20):
            ds = ct_slice(k, seed=k)
            ds.SeriesNumber = "999999999999"
            ds.InstanceNumber = str(1160501010100 + k)
            data.append(encoded(ds))
    _write_series(tmp_path / "S1", data)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = build_index(str(tmp_path), LOCAL)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    objects = result.objects.to_pylist()
    assert sorted(o["instance_number"] for o in objects) == [1160501010100 + k
                                                              for k in range(20)]
    assert {o["series_number"] for o in objects} == {999999999999}
    (row,) = result.manifest.to_pylist()
    assert (row["kind"], row["status"], row["n_files"]) == ("series", "selected", 20)
    if MANIFEST.field("series_number").type == pa.int64():
        assert row["series_number"] == 999999999999
    else:  # a 32-bit column: left empty, and said so, rather than failing the manifest
        assert row["series_number"] is None
        assert ("out_of_range: SeriesNumber (0020,0011) is 999999999999, beyond the int32 "
                "column series_number; left empty") in row["notes"]


# --- 4. pixels in Elscint's private compressed element ---------------------------------


def test_elscint_tamar_pixels_are_unsupported_compression_naming_the_tag(tmp_path):
    row = _row(tmp_path / "elscint", encoded(elscint_slice()))
    assert row["error_code"] == ErrorCode.UNSUPPORTED_COMPRESSION
    assert "private element (07A1,100A) of ELSCINT1" in row["error_detail"]
    assert "PMSCT_RLE1" in row["error_detail"]
    assert "no_pixel_data" not in row["error_detail"] and "cut" not in row["error_detail"]
    assert row["series_uid"] == f"{STUDY_UID}.2"  # the header is read all the same
    assert object_row(row)["status"] == "failed"


# --- 5. one rule: an image missing its pixels, or no image -----------------------------


def _no_pixels(sop_class: str | None, *, rows: bool) -> bytes:
    ds = ct_slice()
    del ds.PixelData
    if not rows:
        del ds.Rows, ds.Columns
    if sop_class is None:
        del ds.SOPClassUID
        del ds.file_meta.MediaStorageSOPClassUID
    else:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=sop_class is not None,
                     implicit_vr=False, little_endian=True)
    return buf.getvalue()


@pytest.mark.parametrize("sop_class,rows,code,why", [
    # an Image Storage SOP class decides, with or without Rows and Columns
    ("1.2.840.10008.5.1.4.1.1.2", True, ErrorCode.NO_PIXEL_DATA, "SOP class CT Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.2", False, ErrorCode.NO_PIXEL_DATA, "SOP class CT Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.7", False, ErrorCode.NO_PIXEL_DATA,
     "SOP class Secondary Capture Image Storage"),
    # a known SOP class that is no image decides too, Rows or not (spectroscopy has them)
    ("1.2.840.10008.5.1.4.1.1.4.2", True, ErrorCode.NOT_IMAGE, "SOP class MR Spectroscopy"),
    ("1.2.840.10008.5.1.4.1.1.88.11", False, ErrorCode.NOT_IMAGE, "SOP class Basic Text SR"),
    # a private (unknown) or missing SOP class: Rows and Columns decide
    ("1.3.12.2.1107.5.9.1", True, ErrorCode.NO_PIXEL_DATA, "Rows and Columns, SOP class"),
    ("1.3.12.2.1107.5.9.1", False, ErrorCode.NOT_IMAGE, "no Rows and Columns"),
    (None, True, ErrorCode.NO_PIXEL_DATA, "Rows and Columns, no SOP class"),
    (None, False, ErrorCode.NOT_IMAGE, "SOP class missing, no Rows and Columns"),
])
def test_one_rule_decides_no_pixel_data_or_not_image(tmp_path, sop_class, rows, code, why):
    row = _row(tmp_path / "x", _no_pixels(sop_class, rows=rows))
    assert row["error_code"] == code, row["error_detail"]
    assert why in row["error_detail"]
    status = object_row(row)["status"]
    assert status == ("failed" if code == ErrorCode.NO_PIXEL_DATA else "not_selected")


def test_the_rule_is_written_in_the_module_docstring():
    from cohort.discover import headers

    doc = " ".join(headers.__doc__.split())
    assert ("it is an image that lost its pixels (NO_PIXEL_DATA, failed) when its SOP class "
            "is an Image Storage class") in doc
    assert "when it has Rows and Columns; anything else is an object that is no image" in doc


# --- 7. no SeriesInstanceUID ----------------------------------------------------------


def test_an_image_without_series_uid_is_usable_with_a_note(tmp_path):
    row = _row(tmp_path / "x", encoded(ct_slice(series_uid=None)))
    assert row["error_code"] is None and row["series_uid"] is None
    assert row["notes"] == ["no_series_uid: the image has no SeriesInstanceUID; it is grouped "
                            "with the images of its StudyInstanceUID, SeriesNumber and folder"]


def test_a_series_without_uid_gets_a_key_of_its_own_and_is_selected(tmp_path):
    for folder, number in (("A", 2), ("B", 2), ("C", 3)):
        _write_series(tmp_path / folder, [encoded(ct_slice(k, series_uid=None,
                                                           series_number=number))
                                          for k in range(20)])
    result = build_index(str(tmp_path), LOCAL)
    rows = sorted(result.manifest.to_pylist(), key=lambda r: r["files"][0])
    assert [r["kind"] for r in rows] == ["series"] * 3  # no object rows: nothing failed
    keys = [r["series_key"] for r in rows]
    assert len(set(keys)) == 3  # same study and number, other folder: another series
    for r, number in zip(rows, (2, 2, 3), strict=True):
        assert r["series_uid"] is None and r["n_files"] == 20 and r["n_slices"] == 20
        assert re.fullmatch(rf"nouid-{re.escape(STUDY_UID)}-{number}-[0-9a-f]{{12}}",
                            r["series_key"])
        assert r["error_code"] in (None, "not_preferred")
        assert any(n.startswith("no_series_uid:") and r["series_key"] in n
                   for n in r["notes"])
    assert sum(r["status"] == "selected" for r in rows) == 1  # one study
    objects = result.objects.to_pylist()
    assert {o["series_key"] for o in objects} == set(keys)
    assert all(o["notes"][0].startswith("no_series_uid:") for o in objects)


def test_a_series_key_without_uid_is_stable_and_names_no_folder(tmp_path):
    from cohort.discover.grouping import fallback_key

    row = {"uri": "s3://archive/DOE^JANE/CT/IM1", "study_uid": "1.2.3", "series_number": 4}
    key = fallback_key(row)
    assert key == fallback_key({**row, "uri": "s3://archive/DOE^JANE/CT/IM2"})
    assert key != fallback_key({**row, "uri": "s3://archive/ROE^RICHARD/CT/IM1"})
    assert key.startswith("nouid-1.2.3-4-") and "DOE" not in key
    assert re.fullmatch(r"[0-9A-Za-z._-]+", key)  # usable as a file name as it is


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_broken_private_sequences_index_as_one_usable_series(tmp_path, kind):
    big = kind == "un_implicit"
    data = [with_private_element(encoded(ct_slice(k, seed=k), big_endian=big),
                                 broken_private_sequence(kind, big_endian=big),
                                 big_endian=big) for k in range(20)]
    _write_series(tmp_path / "S", data)
    result = build_index(str(tmp_path), LOCAL)
    (row,) = result.manifest.to_pylist()
    assert (row["kind"], row["status"], row["n_files"]) == ("series", "selected", 20)
    notes = [o["notes"] for o in result.objects.to_pylist()]
    if kind == "un_implicit":  # only big endian trips pydicom on it
        assert all(n[0].startswith("skipped_private_element: (0009,1010) (UN)") for n in notes)
    else:
        assert all(n[0].startswith("skipped_private_element: (0009,1010) (SQ)") for n in notes)
