"""Reading one object's DICOM header from byte ranges, and classifying what it is.

`read_header` never raises for bad data: every object becomes one row of the OBJECTS
schema (`cohort.schemas`), either an image header or an `ErrorCode` with a message:

- NOT_DICOM: no 'DICM' prefix and nothing that parses as a data set (text, NIfTI, empty);
- DICOMDIR: a media directory;
- NO_PIXEL_DATA or NOT_IMAGE, for an object without a pixel element, by one rule: it is an
  image that lost its pixels (NO_PIXEL_DATA, failed) when its SOP class is an Image Storage
  class (CT Image Storage, Secondary Capture Image Storage, ...) or, when its SOP class is
  missing or unknown (private), when it has Rows and Columns; anything else is an object
  that is no image (NOT_IMAGE, not selected: reports, presentation states, raw data,
  spectroscopy);
- UNSUPPORTED_COMPRESSION: the pixels are in a vendor's private compressed element instead
  of PixelData (Elscint "Tamar" compression in (07A1,xx0A)); the message names the element;
- TRUNCATED: the object ends inside its header, or is smaller than its PixelData element
  declares; SIZE_MISMATCH: PixelData is shorter than Rows x Columns x frames needs;
- UNREADABLE_HEADER: the parser failed (or recursed too deep) on a malformed data set;
- IO_ERROR: storage did not deliver the bytes.

Before an object is called truncated or unreadable, a private element the parser went
wrong in is skipped and the object parsed again (`cohort.read.quirks`); when that reaches
sound pixel data the image is usable. The row's ``notes`` say what was read in spite of a
problem, each starting with a short code:

- ``skipped_private_element``: which element (gggg,eeee) was left out, at which byte;
- ``no_series_uid``: the image has no SeriesInstanceUID (discovery groups it by
  StudyInstanceUID, SeriesNumber and folder, `cohort.discover.grouping`);
- ``out_of_range`` / ``unreadable_value``: a header value (named by keyword and tag) that
  does not fit its column or cannot be read; the column is left empty.

Byte offsets in messages are decimal, pydicom's hexadecimal positions included.

Only the header is read (pydicom stops before the pixels), through `RangeReader`. Damage
inside compressed (encapsulated) pixel data of large objects is left to the reader: here it
is detected only when the whole object was fetched anyway (small files).
"""

from __future__ import annotations

import contextlib
import logging
import re
import struct
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pyarrow as pa
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.multival import MultiValue

from cohort.config import DiscoveryConfig
from cohort.discover.listing import ObjectInfo
from cohort.discover.ranged import RangeReader
from cohort.errors import ErrorCode, SeriesError
from cohort.read.quirks import (
    Element,
    TopLevel,
    decimal_positions,
    private_pixels,
    reparse_without_private,
    tag_text,
)
from cohort.schemas import OBJECTS
from cohort.storage import StorageOptions, filesystem, is_local

logger = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
_UNDEFINED = 0xFFFFFFFF
_ITEM, _SEQ_END = 0xFFFEE000, 0xFFFEE0DD
_QUOTED = re.compile(r"(['\"]).*?\1")
_INT_BOUNDS = {pa.int32(): (-(2**31), 2**31 - 1), pa.int64(): (-(2**63), 2**63 - 1)}


def _text(v) -> str | None:
    if isinstance(v, MultiValue | list | tuple):
        v = v[0] if len(v) else None
    s = None if v is None else str(v).strip()
    return s or None


def _int(v) -> int | None:
    if isinstance(v, MultiValue | list | tuple):
        v = v[0] if len(v) else None
    return None if v is None or v == "" else int(v)


def _float(v) -> float | None:
    if isinstance(v, MultiValue | list | tuple):
        v = v[0] if len(v) else None
    return None if v is None or v == "" else float(v)


def _floats(n: int):
    def convert(v) -> list[float] | None:
        values = list(v) if isinstance(v, MultiValue | list | tuple) else [v]
        if len(values) != n or any(x is None or x == "" for x in values):
            return None
        return [float(x) for x in values]
    return convert


def _words(v) -> list[str] | None:
    values = list(v) if isinstance(v, MultiValue | list | tuple) else [v]
    words = [str(x).strip().upper() for x in values if x is not None]
    return words or None


#: OBJECTS column -> (DICOM keyword, converter). Names and birth dates are never read.
FIELDS = {
    "sop_class_uid": ("SOPClassUID", _text),
    "sop_instance_uid": ("SOPInstanceUID", _text),
    "patient_id": ("PatientID", _text),
    "study_uid": ("StudyInstanceUID", _text),
    "series_uid": ("SeriesInstanceUID", _text),
    "series_number": ("SeriesNumber", _int),
    "instance_number": ("InstanceNumber", _int),
    "modality": ("Modality", _text),
    "image_type": ("ImageType", _words),
    "manufacturer": ("Manufacturer", _text),
    "model": ("ManufacturerModelName", _text),
    "kernel": ("ConvolutionKernel", _text),
    "series_description": ("SeriesDescription", _text),
    "study_date": ("StudyDate", _text),
    "rows": ("Rows", _int),
    "columns": ("Columns", _int),
    "samples_per_pixel": ("SamplesPerPixel", _int),
    "number_of_frames": ("NumberOfFrames", _int),
    "photometric": ("PhotometricInterpretation", _text),
    "bits_allocated": ("BitsAllocated", _int),
    "pixel_spacing_mm": ("PixelSpacing", _floats(2)),
    "slice_thickness_mm": ("SliceThickness", _float),
    "image_position": ("ImagePositionPatient", _floats(3)),
    "image_orientation": ("ImageOrientationPatient", _floats(6)),
    "gantry_tilt_deg": ("GantryDetectorTilt", _float),
}


def read_header(fs, obj: ObjectInfo, cfg: DiscoveryConfig | None = None, *,
                first: bytes | BaseException | None = None) -> dict:
    """One OBJECTS row for ``obj``: its header fields, or the code of what is wrong.

    ``first`` is the object's first block when it was fetched already (or the error that
    fetching it raised).
    """
    cfg = cfg or DiscoveryConfig()
    row = dict.fromkeys(OBJECTS.names)
    row.update(uri=obj.uri, size_bytes=int(obj.size), bytes_read=0, range_requests=0,
               notes=[])
    if isinstance(first, BaseException):
        row.update(error_code=ErrorCode.IO_ERROR.value, range_requests=1,
                   error_detail=f"storage did not deliver the object: {type(first).__name__}: "
                                f"{_scrubbed(str(first))[:200]}")
        return row
    reader = RangeReader(fs, obj.path, obj.size, first_block=cfg.header_block_bytes,
                         max_bytes=cfg.max_header_bytes, uri=obj.uri, prefetched=first)
    try:
        if obj.size == 0:
            raise SeriesError(ErrorCode.NOT_DICOM, "empty object (0 bytes)", uri=obj.uri)
        ds, top = _read(reader, obj.uri, row["notes"], cfg.max_header_bytes)
        _classify(ds, top, reader, row, obj.uri)
    except SeriesError as e:
        row.update(error_code=e.code.value, error_detail=e.detail)
    except RecursionError:
        row.update(error_code=ErrorCode.UNREADABLE_HEADER.value,
                   error_detail="the data set nests sequences too deeply to parse "
                                "(RecursionError); the file is malformed")
    except Exception as e:  # noqa: BLE001 - a value pydicom cannot convert is the file's
        row.update(error_code=ErrorCode.UNREADABLE_HEADER.value,
                   error_detail=f"pydicom cannot read the header: {type(e).__name__}: "
                                f"{decimal_positions(_scrubbed(str(e)))[:200]}")
    row["notes"] += fit_integers(row, OBJECTS)
    row.update(bytes_read=reader.bytes_read, range_requests=reader.requests)
    return row


def _read(reader: RangeReader, uri: str, notes: list[str], max_bytes: int
          ) -> tuple[pydicom.Dataset, TopLevel]:
    """The data set (without pixels) and its top-level elements, parsed again without a
    private element the first parse went wrong in when that gives sound pixel data."""
    ds, top, force, error = _parse(reader, uri)
    if error is not None or (top.pixel is None and _may_hide_pixels(ds, reader)):
        again = reparse_without_private(reader.peek, reader.size, top, force=force,
                                        limit=min(reader.size, max_bytes))
        if again is not None:
            notes.append(again.note())
            pixel = again.top.pixel  # at its offset in the object, not in the view
            again.top.pixel = replace(pixel, start=again.view.real(pixel.start))
            reader.seek(again.top.pixel.start)
            reader.short_read = False
            return again.dataset, again.top
    if isinstance(error, SeriesError):
        raise error
    if error is not None:
        code = ErrorCode.TRUNCATED if reader.short_read or reader.at_end else \
            ErrorCode.UNREADABLE_HEADER
        raise SeriesError(code, f"pydicom cannot parse the header at byte {reader.tell()} of "
                          f"{reader.size}{top.where()}: {type(error).__name__}: "
                          f"{decimal_positions(_scrubbed(str(error)))[:200]}", uri=uri)
    return ds, top


def _parse(reader: RangeReader, uri: str
           ) -> tuple[pydicom.Dataset | None, TopLevel, bool, Exception | None]:
    """The data set (without pixels), its top-level elements, whether it was read as a
    bare data set, and what the parser raised (None when it did not)."""
    for force in (False, True):
        top = TopLevel(reader.tell)
        try:
            return read_partial(reader, stop_when=top, force=force), top, force, None
        except InvalidDicomError:
            head = reader.read_at(0, 16)
            if force or not _looks_like_data_set(head):
                raise SeriesError(ErrorCode.NOT_DICOM,
                                  "no DICOM 'DICM' prefix and no data set at the start "
                                  f"({_kind_of(head)})", uri=uri) from None
            # a bare data set without preamble and file meta, as some old archives hold
            reader.seek(0)
            reader.short_read = False
        except RecursionError:
            raise
        except SeriesError as e:  # the reader's: past max_header_bytes, or storage failed
            if e.code == ErrorCode.IO_ERROR:
                raise
            return None, top, force, e
        except Exception as e:  # noqa: BLE001 - any parser failure is a property of the file
            return None, top, force, e
    raise AssertionError("unreachable: the forced parse does not raise InvalidDicomError")


def _may_hide_pixels(ds, reader: RangeReader) -> bool:
    """True when a parse that found no pixel element may have lost them to a private
    element: it ran out of bytes, or the object is an image without vendor pixels."""
    if reader.short_read:
        return True
    meta = getattr(ds, "file_meta", None)
    sop_class = _get(ds, "SOPClassUID", _text) or (
        _get(meta, "MediaStorageSOPClassUID", _text) if meta is not None else None)
    return private_pixels(ds) is None and is_image(sop_class, _get(ds, "Rows", _int),
                                                   _get(ds, "Columns", _int))[0]


def _kind_of(head: bytes) -> str:
    """What the first bytes look like, without quoting them (they may be anything)."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip data"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return "text" if head and printable == len(head) else "binary data"


def _scrubbed(message: str) -> str:
    """``message`` with quoted values blanked: a parser's message may quote a header value
    (a name, a birth date), and the manifest must not carry them."""
    return _QUOTED.sub(r"\1...\1", message)


def _looks_like_data_set(head: bytes) -> bool:
    """True when ``head`` starts like a bare little-endian data set (group 0002 or 0008)."""
    if len(head) < 8:
        return False
    group, element = struct.unpack("<HH", head[:4])
    return group in (0x0002, 0x0008) and element < 0x2000


def is_image(sop_class: str | None, rows: int | None, columns: int | None
             ) -> tuple[bool, str]:
    """Whether an object is an image (so that missing pixels are a fault), and why: its SOP
    class decides when pydicom knows it (an Image Storage class), else Rows and Columns."""
    name = _sop_name(sop_class) if sop_class else None
    if sop_class and name != sop_class:  # a SOP class pydicom knows
        return "Image Storage" in name, f"SOP class {name}"
    if rows and columns:
        return True, (f"Rows and Columns, SOP class {sop_class or 'missing'} (not one "
                      "pydicom knows)" if sop_class else "Rows and Columns, no SOP class")
    return False, f"SOP class {sop_class or 'missing'}, no Rows and Columns"


def _classify(ds, top: TopLevel, reader: RangeReader, row: dict, uri: str) -> None:
    """Fill ``row`` from ``ds``; raise SeriesError for anything that is not a usable image."""
    meta = getattr(ds, "file_meta", None)
    media_class = _get(meta, "MediaStorageSOPClassUID", _text) if meta is not None else None
    row["transfer_syntax_uid"] = (_get(meta, "TransferSyntaxUID", _text)
                                  if meta is not None else None)
    if media_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise SeriesError(ErrorCode.DICOMDIR, "a DICOMDIR (media directory), not an image; "
                          "its images are listed as objects of their own", uri=uri)
    for column, (keyword, convert) in FIELDS.items():
        row[column] = _get(ds, keyword, convert, row["notes"])
    if row["sop_class_uid"] is None:
        row["sop_class_uid"] = media_class
    pixel = top.pixel
    if pixel is None:
        compressed = private_pixels(ds)
        if compressed:
            raise SeriesError(ErrorCode.UNSUPPORTED_COMPRESSION,
                              f"no PixelData: the pixels are {compressed}, a vendor's own "
                              "encoding that no open decoder here reads; export the series "
                              "again uncompressed (or in a standard transfer syntax) from "
                              "the vendor's workstation or PACS", uri=uri)
        if reader.short_read:
            raise SeriesError(ErrorCode.TRUNCATED, f"the object ends inside its header "
                              f"({reader.size} bytes{top.where()})", uri=uri)
        image, why = is_image(row["sop_class_uid"], row["rows"], row["columns"])
        if image:
            raise SeriesError(ErrorCode.NO_PIXEL_DATA,
                              f"an image ({why}) without PixelData (or a file cut exactly "
                              "before its pixels)", uri=uri)
        raise SeriesError(ErrorCode.NOT_IMAGE, f"a DICOM object without pixels ({why})",
                          uri=uri)
    if reader.short_read:
        raise SeriesError(ErrorCode.TRUNCATED, f"the object ends inside its header "
                          f"({reader.size} bytes{top.where()})", uri=uri)
    _check_pixel_length(pixel, reader, row, uri, deflated=_is_deflated(row))
    if not row["series_uid"]:
        row["notes"].append("no_series_uid: the image has no SeriesInstanceUID; it is grouped "
                            "with the images of its StudyInstanceUID, SeriesNumber and folder")


def _check_pixel_length(pixel: Element, reader: RangeReader, row: dict, uri: str, *,
                        deflated: bool) -> None:
    """TRUNCATED / SIZE_MISMATCH from the pixel element's declared length, when cheap."""
    if pixel.length == _UNDEFINED:  # encapsulated (compressed) frames
        if not deflated and reader.fetched(0, reader.size):
            _check_fragments(reader, pixel, uri)
        return
    row["pixel_data_bytes"] = pixel.length
    if not deflated:  # in a deflated file, offsets are in the inflated stream
        end = pixel.start + pixel.header + pixel.length
        if end > reader.size:
            raise SeriesError(ErrorCode.TRUNCATED,
                              f"the object is {reader.size} bytes but its pixel data declares "
                              f"{pixel.length} bytes ending at byte {end}; the file was cut "
                              "short (copy it again from the source)", uri=uri)
    rows, cols = row["rows"] or 0, row["columns"] or 0
    bits = row["bits_allocated"] or 0
    if pixel.tag == 0x7FE00010 and rows and cols and bits:
        frames = max(1, row["number_of_frames"] or 1)
        need = (rows * cols * (row["samples_per_pixel"] or 1) * frames * bits + 7) // 8
        if pixel.length < need:
            raise SeriesError(ErrorCode.SIZE_MISMATCH,
                              f"PixelData holds {pixel.length} bytes, {rows} x {cols} x "
                              f"{frames} frame(s) at {bits} bits need {need}", uri=uri)


def _check_fragments(reader: RangeReader, pixel: Element, uri: str) -> None:
    """Walk the encapsulated items of a fully fetched object up to the sequence end."""
    pos = pixel.start + 12  # encapsulated data is explicit VR little endian
    while True:
        head = reader.read_at(pos, 8)
        if len(head) < 8:
            raise SeriesError(ErrorCode.TRUNCATED,
                              f"the compressed pixel data stops at byte {reader.size} before "
                              "its sequence delimiter; the file was cut short", uri=uri)
        group, element, length = struct.unpack("<HHL", head)
        tag = group << 16 | element
        if tag == _SEQ_END:
            return
        if tag != _ITEM:
            return  # not what a walk can follow; leave it to the decoder
        pos += 8 + length


def _is_deflated(row: dict) -> bool:
    return row.get("transfer_syntax_uid") == pydicom.uid.DeflatedExplicitVRLittleEndian


def _get(ds, keyword: str, convert, notes: list[str] | None = None):
    """``convert(ds.<keyword>)``, or None when absent, empty or not convertible (then noted
    in ``notes``, when given)."""
    try:
        if keyword not in ds:
            return None
        value = ds[keyword].value
        return None if value is None else convert(value)
    except Exception as e:  # noqa: BLE001 - one bad value must not lose the header
        logger.debug("unreadable %s: %s", keyword, e)
        if notes is not None:
            notes.append(f"unreadable_value: {keyword} {_tag_of(keyword)} cannot be read "
                         f"({type(e).__name__}: {_scrubbed(str(e))[:80]}); left empty")
        return None


def _tag_of(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return tag_text(tag) if tag is not None else ""


def fit_integers(row: dict, schema: pa.Schema) -> list[str]:
    """Empty the integer columns of ``row`` whose value does not fit ``schema``'s type, and
    say which (keyword and tag) in notes: one odd value must not fail a table."""
    keywords = {column: keyword for column, (keyword, _) in FIELDS.items()}
    notes = []
    for field in schema:
        value = row.get(field.name)
        bounds = _INT_BOUNDS.get(field.type)
        if bounds is None or not isinstance(value, int) or bounds[0] <= value <= bounds[1]:
            continue
        row[field.name] = None
        keyword = keywords.get(field.name)
        what = f"{keyword} {_tag_of(keyword)}" if keyword else field.name
        notes.append(f"out_of_range: {what} is {value}, beyond the {field.type} column "
                     f"{field.name}; left empty")
    return notes


def _sop_name(uid: str | None) -> str:
    if not uid:
        return "unknown"
    try:
        return f"{pydicom.uid.UID(uid).name} {uid}" if pydicom.uid.UID(uid).name != uid else uid
    except Exception:  # noqa: BLE001
        return uid


def read_headers(context: tuple[str, StorageOptions | None, DiscoveryConfig],
                 objects: Sequence[ObjectInfo]) -> pa.Table:
    """OBJECTS rows for a batch of ``objects``, in input order; ``context`` is
    ``(input url, storage options, config)``.

    Runs as one task: the filesystem is made here (on the worker). On object stores the
    first blocks of all objects are fetched concurrently (``cfg.io_threads`` at a time) in
    one gather; local files are read one after the other (the parser is the cost there).
    """
    url, options, cfg = context
    fs, _ = filesystem(url, options)
    objects = list(objects)
    with quiet_pydicom():
        if getattr(fs, "async_impl", False) and len(objects) > 1:
            # object stores: every first block in one concurrent gather, then parse
            firsts = fs.cat_ranges([o.path for o in objects], 0,
                                   [min(o.size, cfg.header_block_bytes) for o in objects],
                                   batch_size=cfg.io_threads, on_error="return")
            rows = [read_header(fs, o, cfg, first=b) for o, b in zip(objects, firsts,
                                                                      strict=True)]
        elif cfg.io_threads <= 1 or len(objects) <= 1 or is_local(url):
            rows = [read_header(fs, o, cfg) for o in objects]
        else:  # other remote filesystems: fetch in threads
            with ThreadPoolExecutor(min(cfg.io_threads, len(objects))) as pool:
                rows = list(pool.map(lambda o: read_header(fs, o, cfg), objects))
    try:
        return pa.Table.from_pylist(rows, schema=OBJECTS)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        # a value no check above foresaw: that object's row says so, the batch goes on
        return pa.Table.from_pylist([_storable(r) for r in rows], schema=OBJECTS)


def _storable(row: dict) -> dict:
    """``row``, or its PROCESSING_FAILED row when a value does not fit OBJECTS."""
    try:
        pa.Table.from_pylist([row], schema=OBJECTS)
        return row
    except (pa.ArrowException, OverflowError, TypeError, ValueError) as e:
        bad = dict.fromkeys(OBJECTS.names)
        bad.update({k: row[k] for k in ("uri", "size_bytes", "bytes_read", "range_requests")},
                   notes=[], error_code=ErrorCode.PROCESSING_FAILED.value,
                   error_detail=f"a header value does not fit the objects table "
                                f"({type(e).__name__}: {_scrubbed(str(e))[:200]}); please "
                                "report this file")
        return bad


def lost_row(obj: ObjectInfo, reason: str) -> dict:
    """The OBJECTS row of an object whose header read killed its worker twice."""
    row = dict.fromkeys(OBJECTS.names)
    row.update(uri=obj.uri, size_bytes=int(obj.size), bytes_read=0, range_requests=0,
               notes=[], error_code=ErrorCode.UNREADABLE_HEADER.value,
               error_detail=f"reading this header crashed its worker ({reason}); the file is "
                            "probably malformed: inspect it with pydicom.dcmread")
    return row


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's per-element warnings and errors (invalid VR values are common and
    harmless here: each header is judged by what discovery needs, and problems become rows
    and notes, not console lines)."""
    log = logging.getLogger("pydicom")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)
