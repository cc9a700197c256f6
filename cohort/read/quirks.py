"""What real scanners write that trips a DICOM parser, and how cohort reads it anyway.

- A vendor's private element whose content pydicom misparses (a private sequence with a
  wrong length or without its delimiters; an undefined-length UN element in a big-endian
  file, whose content the standard encodes as implicit VR little endian) makes the parse
  run on to the end of the file, so that a complete object looks truncated.
  `reparse_without_private` finds where the next element really starts and parses the
  object again without the private element; callers say which element was left out.
- Pixels kept in a vendor's private compressed element instead of PixelData (Elscint's
  "Tamar" compression in (07A1,xx0A) of creator ELSCINT1): `private_pixels` names them.
- pydicom's messages give file positions in hexadecimal ("at file position 75E"):
  `decimal_positions` rewrites them in decimal, the one base of every offset cohort reports.

Offsets are bytes from the start of the object. Only the parse is repaired, never the file.
"""

from __future__ import annotations

import functools
import io
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
from pydicom.datadict import get_entry
from pydicom.dataset import Dataset
from pydicom.filereader import read_partial
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # PixelData, Float, Double
UNDEFINED = 0xFFFFFFFF
#: (private creator, group, element offset in its block, what the element holds): pixels
#: vendors keep in a private element, compressed their own way, in place of PixelData
PRIVATE_PIXELS = (
    ("ELSCINT1", 0x07A1, 0x0A, "Elscint 'Tamar' compressed pixel data", 0x11),
)
_VR_WORDS = np.array(sorted(struct.unpack("<H", str(vr).encode())[0] for vr in STANDARD_VR),
                     dtype=np.uint16)
_DEFLATED = b"1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian, in the file meta
_HEX_POSITION = re.compile(r"\b(file |data )?(?:position|pos)\s+(?:0x)?([0-9A-Fa-f]+)\b")

ReadAt = Callable[[int, int], bytes]  # (start, n) -> up to n bytes of the object from start


def tag_text(tag: int) -> str:
    """``tag`` as DICOM writes it: (gggg,eeee)."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def is_private(tag: int) -> bool:
    """True for a private element: odd group above 0008 (0001-0007 and FFFF are not
    allowed)."""
    group = tag >> 16
    return group % 2 == 1 and 0x0008 < group < 0xFFFF


def decimal_positions(message: str) -> str:
    """``message`` with pydicom's hexadecimal file positions written in decimal bytes."""
    def byte(m: re.Match) -> str:
        n = int(m[2], 16)
        return f"byte {n} of the pixel data" if m[1] == "data " else f"byte {n}"
    return _HEX_POSITION.sub(byte, message)


@dataclass(frozen=True)
class Element:
    """Where one top-level data element sits in the parsed stream."""

    tag: int
    vr: str | None  # None: read as implicit VR
    length: int  # as declared; UNDEFINED for an undefined length
    start: int  # offset of its tag
    header: int  # bytes of tag, VR and length

    @property
    def end(self) -> int | None:
        """Offset after its value, when its length is defined."""
        return None if self.length == UNDEFINED else self.start + self.header + self.length


class TopLevel:
    """A ``stop_when`` callback for `pydicom.filereader.read_partial` that remembers the
    top-level elements of the data set (pydicom calls it for those only, once it has read an
    element's tag, VR and length) and stops at the pixel data when ``stop_at_pixels``.

    An element is junk when its tag is below the one before, is an item tag, has a VR the
    standard does not have (or none after elements that had one), or is a public tag the
    dictionary does not know: the parser has lost its place, and what it met after that
    says nothing.

    Attributes:
        pixel: the first pixel element (PixelData, Float or Double Float Pixel Data).
        last: the last sound element before the pixel data (where a failed parse was).
        last_private: the last sound private element before the pixel data.
        ordered: no junk was met.
    """

    def __init__(self, tell: Callable[[], int], *, stop_at_pixels: bool = True) -> None:
        self._tell = tell
        self._stop = stop_at_pixels
        self._previous: Element | None = None
        self.pixel: Element | None = None
        self.last: Element | None = None
        self.last_private: Element | None = None
        self.ordered = True

    def __call__(self, tag, vr, length) -> bool:
        header = 12 if vr in EXPLICIT_VR_LENGTH_32 else 8
        el = Element(int(tag), vr, int(length), self._tell() - header, header)
        if self.ordered and _junk(el, self._previous):
            self.ordered = False
        if el.tag in PIXEL_TAGS:
            if self.pixel is None:
                self.pixel = el
            if self._stop:
                return True
        if self.ordered:
            self._previous = el
            if self.pixel is None:
                self.last = el
                if is_private(el.tag):
                    self.last_private = el
        return False

    def where(self) -> str:
        """Where a failed parse was, naming the element it was reading ("" when none)."""
        if self.last is None:
            return ""
        return f", in element {tag_text(self.last.tag)} that starts at byte {self.last.start}"

    def culprits(self) -> list[Element]:
        """The private elements a failed parse most likely went wrong in: the one it was
        reading, else the last private one before it (a sequence that swallowed the rest)."""
        found = [e for e in (self.last, self.last_private) if e is not None and is_private(e.tag)]
        return found[:1] if len(found) == 2 and found[0] == found[1] else found


def _junk(el: Element, previous: Element | None) -> bool:
    # pydicom calls twice for the first element when its VR encoding is unexpected: equal
    # tags are not out of order
    if previous is not None and (el.tag < previous.tag or (previous.vr and not el.vr)):
        return True  # out of order, or explicit VR turned implicit (bytes that are no VR)
    group = el.tag >> 16
    if group == 0xFFFE or (el.vr is not None and el.vr not in STANDARD_VR):
        return True
    return group % 2 == 0 and el.tag & 0xFFFF != 0 and not _known(el.tag)


@functools.lru_cache(maxsize=4096)
def _known(tag: int) -> bool:
    """True for a public tag pydicom's dictionary has (repeating groups included)."""
    try:
        get_entry(tag)
    except KeyError:
        return False
    return True


class Spliced(io.RawIOBase):
    """A read-only file over an object of ``size`` bytes, served by ``read_at``, with the
    byte ranges ``cuts`` ([start, stop) in object offsets) left out. Records short reads as
    `cohort.discover.ranged.RangeReader` does."""

    def __init__(self, read_at: ReadAt, size: int, cuts: tuple[tuple[int, int], ...] = ()):
        super().__init__()
        self._read_at = read_at
        self._object_size = int(size)
        self.cuts = tuple(sorted(cuts))
        self.size = self._object_size - sum(stop - start for start, stop in self.cuts)
        self._pos = 0
        self.short_read = False

    def real(self, pos: int) -> int:
        """The object offset of position ``pos`` of this file."""
        for start, stop in self.cuts:
            if pos >= start:
                pos += stop - start
        return pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = max(0, self.size - self._pos)
        parts, want = [], min(n, max(0, self.size - self._pos))
        while want > 0:
            real = self.real(self._pos)
            stop = min([s for s, _ in self.cuts if s > real] + [self._object_size])
            chunk = self._read_at(real, min(want, stop - real))
            if not chunk:
                break
            parts.append(chunk)
            self._pos += len(chunk)
            want -= len(chunk)
        data = b"".join(parts)
        if len(data) < n and not (not data and n in (1, 8)):  # see RangeReader.read
            self.short_read = True
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


@dataclass(frozen=True)
class Reparsed:
    """An object parsed again without one or more private elements."""

    dataset: Dataset
    top: TopLevel  # positions in ``view``
    view: Spliced
    skipped: tuple[Element, ...]  # the elements left out, at their object offsets

    def note(self) -> str:
        """What was left out, for a row's notes."""
        tags = ", ".join(f"{tag_text(e.tag)} ({e.vr or 'implicit VR'}) at byte {e.start}"
                         for e in self.skipped)
        return (f"skipped_private_element: {tags}; pydicom cannot parse its content, the "
                "rest of the object was read without it")


def reparse_without_private(read_at: ReadAt, size: int, failed: TopLevel, *, force: bool,
                            limit: int | None = None, attempts: int = 48) -> Reparsed | None:
    """The header of an object parsed again (up to its pixel data) without the private
    element its first parse (``failed``) went wrong in, or None when no such parse is sound.

    A parse is sound when pydicom reads every element it meets in full, in ascending tag
    order, up to a pixel element whose declared length fits in the object. To read the
    pixels too, parse ``Spliced(read_at, size, result.view.cuts)`` whole.

    Args:
        read_at: serves the object's bytes; size: its size.
        failed: the top-level elements of the failed parse.
        force: parse as `read_partial` did the first time (a bare data set).
        limit: look for the next element before this offset only (default: the end).
        attempts: at most this many parses are tried.
    """
    if _DEFLATED in read_at(0, min(size, 4096)):  # offsets are in the inflated stream
        return None
    budget = [attempts]
    return _reparse(read_at, size, (), (), failed, force, min(size, limit or size), budget,
                    depth=2)


def _reparse(read_at, size, cuts, skipped, failed, force, limit, budget, depth
             ) -> Reparsed | None:
    before = Spliced(read_at, size, cuts)
    for culprit in failed.culprits():
        el = replace(culprit, start=before.real(culprit.start))
        if any(start <= el.start < stop for start, stop in cuts):
            continue
        for resume in _resume_points(read_at, size, el, limit):
            if budget[0] <= 0:
                return None
            budget[0] -= 1
            view = Spliced(read_at, size, (*cuts, (el.start, resume)))
            ds, top = _attempt(view, force)
            if ds is not None and _sound(view, top):
                return Reparsed(ds, top, view, (*skipped, el))
            later = [c for c in top.culprits() if view.real(c.start) >= resume]
            if depth > 1 and later:  # resumed well, and the next private element is bad too
                found = _reparse(read_at, size, view.cuts, (*skipped, el), top, force,
                                 limit, budget, depth - 1)
                if found is not None:
                    return found
    return None


def _attempt(view: Spliced, force: bool) -> tuple[Dataset | None, TopLevel]:
    top = TopLevel(view.tell)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = read_partial(view, stop_when=top, force=force)
    except Exception:  # noqa: BLE001 - a failed attempt; the next may succeed
        return None, top
    if any("End of file" in str(w.message) for w in caught):
        view.short_read = True
    return ds, top


def _sound(view: Spliced, top: TopLevel) -> bool:
    if view.short_read or not top.ordered or top.pixel is None:
        return False
    end = top.pixel.end  # the cuts lie before the pixels: a fit here is a fit in the object
    return end is None or end <= view.size


def _resume_points(read_at: ReadAt, size: int, el: Element, limit: int) -> Iterator[int]:
    """Offsets after ``el`` where a data element that can follow it plausibly starts: its
    declared end first, then every candidate in the bytes after its header, in order."""
    head = read_at(el.start, 4)
    if len(head) < 4:
        return
    little = struct.unpack("<HH", head) == (el.tag >> 16, el.tag & 0xFFFF)
    explicit = el.vr is not None
    start = el.start + el.header
    if el.end is not None and el.end < size and _plausible(read_at, size, el.end, el.tag,
                                                           little, explicit):
        yield el.end
    if limit - start < 8:
        return
    buf = read_at(start, limit - start)
    for q in _candidates(buf, start, el.tag, little, explicit):
        if q != el.end and _plausible(read_at, size, q, el.tag, little, explicit, buf, start):
            yield q


def _candidates(buf: bytes, base: int, after: int, little: bool, explicit: bool) -> list[int]:
    """Offsets in ``buf`` (from object offset ``base``) whose first four bytes are a tag
    above ``after`` and up to the pixel data (and, in explicit VR, followed by a VR)."""
    order = "<" if little else ">"
    found: list[np.ndarray] = []
    for parity in (0, 1):
        count = (len(buf) - parity) // 2
        if count < 4:
            continue
        words = np.frombuffer(buf, dtype=f"{order}u2", offset=parity, count=count)
        group = words[:-3].astype(np.uint32)
        tag = (group << 16) | words[1:-2]
        ok = (tag > after) & (group >= 0x0008) & (group <= 0x7FE0)
        if explicit:
            raw = np.frombuffer(buf, dtype="<u2", offset=parity, count=count)
            ok &= np.isin(raw[2:-1], _VR_WORDS)
        found.append(base + parity + 2 * np.flatnonzero(ok))
    return sorted(int(q) for q in np.concatenate(found)) if found else []


def _plausible(read_at: ReadAt, size: int, q: int, after: int, little: bool, explicit: bool,
               buf: bytes | None = None, base: int = 0) -> bool:
    """True when an element that may follow tag ``after`` starts at offset ``q``: a known
    public tag or a private one, and a length that fits in the object."""
    head = buf[q - base:q - base + 12] if buf is not None else read_at(q, 12)
    if len(head) < 8:
        return False
    order = "<" if little else ">"
    group, element = struct.unpack(f"{order}HH", head[:4])
    tag = group << 16 | element
    if tag <= after or group == 0xFFFE:
        return False
    if group % 2:
        if not (0x10 <= element <= 0xFF or element >= 0x1000):
            return False
    elif element != 0 and not _known(tag):
        return False
    if explicit:
        vr = head[4:6].decode("ascii", "replace")
        if vr in EXPLICIT_VR_LENGTH_32:
            if len(head) < 12:
                return False
            length, header = struct.unpack(f"{order}L", head[8:12])[0], 12
        else:
            length, header = struct.unpack(f"{order}H", head[6:8])[0], 8
    else:
        length, header = struct.unpack(f"{order}L", head[4:8])[0], 8
    return length == UNDEFINED or q + header + length <= size


def private_pixels(ds: Dataset) -> str | None:
    """A phrase naming the private element that holds ``ds``'s pixels (and the compression,
    when the object names it), or None."""
    for creator, group, offset, what, kind_offset in PRIVATE_PIXELS:
        for block in range(0x10, 0x100):
            if _value(ds, group << 16 | block).upper() != creator:
                continue
            tag = group << 16 | block << 8 | offset
            if tag not in ds:
                continue
            kind = re.sub(r"[^0-9A-Za-z_]", "", _value(ds, tag & 0xFFFFFF00 | kind_offset))
            return (f"{what} in private element {tag_text(tag)} of {creator}"
                    + (f", compression {kind}" if kind else ""))
    return None


def _value(ds: Dataset, tag: int) -> str:
    """The text of element ``tag`` of ``ds``, "" when absent or not readable as text."""
    try:
        value = ds[tag].value if tag in ds else ""
    except Exception:  # noqa: BLE001 - a malformed private value is no pixel element
        return ""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value or "").strip(" \0")
