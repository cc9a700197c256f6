"""Decoding the files real scanners write (issue 13), each rebuilt with pydicom
(`cohort.testing.scanner_files`): the HU must be exactly the stored values rescaled, and
what cannot be read must say why, naming the element."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import ExplicitVRBigEndian

from cohort.errors import ErrorCode, SeriesError
from cohort.read.decode import decode
from cohort.read.series import read_series
from cohort.testing.scanner_files import (
    STUDY_UID,
    broken_private_sequence,
    ct_slice,
    elscint_slice,
    encoded,
    expected_hu,
    with_private_element,
)


@pytest.mark.parametrize("signed,bits_stored", [(False, 12), (True, 12), (True, 16),
                                                (False, 16)])
def test_big_endian_decodes_to_the_same_hu_as_little_endian(signed, bits_stored):
    ds = ct_slice(2, seed=5, signed=signed, bits_stored=bits_stored)
    big = decode(encoded(ds, big_endian=True), "be.dcm")
    little = decode(encoded(ds), "le.dcm")
    assert big.transfer_syntax == ExplicitVRBigEndian and big.notes == ()
    np.testing.assert_array_equal(big.hu, expected_hu(ds))
    np.testing.assert_array_equal(big.hu, little.hu)
    assert big.geometry == little.geometry and big.instance == 3


@pytest.mark.parametrize("kind,big_endian,vr", [
    ("too_long", False, "SQ"), ("no_delimiters", False, "SQ"),
    ("too_long", True, "SQ"), ("no_delimiters", True, "SQ"), ("un_implicit", True, "UN")])
def test_a_misparsed_private_element_is_skipped_and_the_pixels_decode(kind, big_endian, vr):
    ds = ct_slice(seed=7)
    data = with_private_element(encoded(ds, big_endian=big_endian),
                                broken_private_sequence(kind, big_endian=big_endian),
                                big_endian=big_endian)
    s = decode(data, "x.dcm")
    np.testing.assert_array_equal(s.hu, expected_hu(ds))
    assert s.series_uid == f"{STUDY_UID}.2"
    assert s.notes == (f"skipped_private_element: (0009,1010) ({vr}) at byte 456; pydicom "
                       "cannot parse its content, the rest of the object was read without it",)


def test_a_file_cut_after_a_broken_private_element_is_truncated_in_decimal_bytes():
    data = with_private_element(encoded(ct_slice()), broken_private_sequence("no_delimiters"))
    cut = data[:-100]
    with pytest.raises(SeriesError) as e:
        decode(cut, "cut.dcm")
    assert e.value.code == ErrorCode.TRUNCATED
    detail = e.value.detail
    assert detail.startswith(f"pydicom cannot parse the file at byte {len(cut)} of {len(cut)}, "
                             "in element (0009,1010) that starts at byte 456: OSError: ")
    assert re.search(r"No tag to read at byte \d+$", detail) and "0x" not in detail


def test_elscint_compressed_pixels_name_the_private_element():
    with pytest.raises(SeriesError) as e:
        decode(encoded(elscint_slice()), "elscint.dcm")
    assert e.value.code == ErrorCode.UNSUPPORTED_COMPRESSION
    assert "private element (07A1,100A) of ELSCINT1, compression PMSCT_RLE1" in str(e.value)


def test_a_series_without_series_uid_reads(tmp_path):
    files = []
    for k in range(20):
        path = tmp_path / f"IM{k:02d}"
        path.write_bytes(encoded(ct_slice(k, series_uid=None, seed=k)))
        files.append(str(path))
    assert decode(Path(files[0]).read_bytes(), files[0]).series_uid is None
    vol = read_series(files)
    assert vol.array.shape == (20, 16, 16) and not vol.series_uid
    for k in (0, 7, 19):
        np.testing.assert_array_equal(vol.array[k], expected_hu(ct_slice(k, seed=k)))


def test_a_big_endian_series_with_a_broken_private_element_reads(tmp_path):
    files = []
    for k in range(20):
        data = with_private_element(encoded(ct_slice(k, seed=k), big_endian=True),
                                    broken_private_sequence("un_implicit", big_endian=True),
                                    big_endian=True)
        path = tmp_path / f"IM{k:02d}"
        path.write_bytes(data)
        files.append(str(path))
    vol = read_series(files)
    assert vol.series_uid == f"{STUDY_UID}.2" and vol.array.shape == (20, 16, 16)
    np.testing.assert_array_equal(vol.array[5], expected_hu(ct_slice(5, seed=5)))
