"""`cohort.read.quirks`: decimal positions, tags, private pixels, the spliced file."""

from __future__ import annotations

import io

import pytest
from pydicom.filereader import read_partial

from cohort.read.quirks import (
    Spliced,
    TopLevel,
    decimal_positions,
    is_private,
    private_pixels,
    reparse_without_private,
    tag_text,
)
from cohort.testing.scanner_files import ct_slice, elscint_slice, encoded


@pytest.mark.parametrize("message,expected", [
    ("No tag to read at file position 75E", "No tag to read at byte 1886"),
    ("Expected sequence item with tag (FFFE,E000) at file position 0x1A2",
     "Expected sequence item with tag (FFFE,E000) at byte 418"),
    ("Expected 4 zero bytes after undefined length delimiter at pos 04a0",
     "Expected 4 zero bytes after undefined length delimiter at byte 1184"),
    ("Expected Item with tag (FFFE,E000) at data position 0x10",
     "Expected Item with tag (FFFE,E000) at byte 16 of the pixel data"),
    # pydicom's "offset" messages are decimal already; other numbers stay as they are
    ("Unexpected tag '(0008,0010)' at offset 1234 when parsing",
     "Unexpected tag '(0008,0010)' at offset 1234 when parsing"),
])
def test_pydicom_positions_become_decimal_bytes(message, expected):
    assert decimal_positions(message) == expected


def test_tags_and_private_groups():
    assert tag_text(0x07A1100A) == "(07A1,100A)" and tag_text(0x00100020) == "(0010,0020)"
    assert is_private(0x00091010) and is_private(0x07A1100A)
    assert not is_private(0x00100020) and not is_private(0x00030010)
    assert not is_private(0xFFFFE000)


def test_private_pixels_are_named_only_where_they_are():
    assert private_pixels(ct_slice()) is None
    assert private_pixels(elscint_slice()) == ("Elscint 'Tamar' compressed pixel data in "
                                               "private element (07A1,100A) of ELSCINT1, "
                                               "compression PMSCT_RLE1")


def test_a_spliced_file_leaves_its_cuts_out():
    data = bytes(range(100))
    f = Spliced(lambda s, n: data[s:s + n], len(data), ((10, 20), (50, 60)))
    assert f.size == 80
    assert f.read(15) == bytes(range(10)) + bytes(range(20, 25))
    assert f.real(15) == 25 and f.real(45) == 65 and f.real(5) == 5
    f.seek(-2, io.SEEK_END)
    assert f.read(8) == bytes([98, 99]) and f.short_read


def test_no_private_culprit_means_no_second_parse():
    data = encoded(ct_slice())[:-600]  # cut inside the header: nothing private to skip
    fp = io.BytesIO(data)
    top = TopLevel(fp.tell)
    read_partial(fp, stop_when=top)
    assert top.pixel is None and top.culprits() == []
    assert reparse_without_private(lambda s, n: data[s:s + n], len(data), top,
                                   force=False) is None
