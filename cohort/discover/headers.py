"""Reading one object's DICOM header from byte ranges, and classifying what it is.

`read_header` never raises for bad data: every object becomes one row of the OBJECTS
schema (`cohort.schemas`), either an image header or an `ErrorCode` with a message:

- NOT_DICOM: no 'DICM' prefix and nothing that parses as a data set (text, NIfTI, empty);
- DICOMDIR: a media directory; NOT_IMAGE: a DICOM object without pixels (SR, PR, ...);
- NO_PIXEL_DATA: an image object whose PixelData is missing;
- TRUNCATED: the object ends inside its header, or is smaller than its PixelData element
  declares; SIZE_MISMATCH: PixelData is shorter than Rows x Columns x frames needs;
- UNREADABLE_HEADER: the parser failed (or recursed too deep) on a malformed data set;
- IO_ERROR: storage did not deliver the bytes.

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

import pyarrow as pa
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.multival import MultiValue

from cohort.config import DiscoveryConfig
from cohort.discover.listing import ObjectInfo
from cohort.discover.ranged import RangeReader
from cohort.errors import ErrorCode, SeriesError
from cohort.schemas import OBJECTS
from cohort.storage import StorageOptions, filesystem, is_local

logger = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # PixelData, Float, Double
_LONG_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "SQ", "UN", "UC", "UR", "UT", "SV",
                       "UV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _SEQ_END = 0xFFFEE000, 0xFFFEE0DD
_QUOTED = re.compile(r"(['\"]).*?\1")


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
    row.update(uri=obj.uri, size_bytes=int(obj.size), bytes_read=0, range_requests=0)
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
        ds, pixel = _parse(reader, obj.uri)
        _classify(ds, pixel, reader, row, obj.uri)
    except SeriesError as e:
        row.update(error_code=e.code.value, error_detail=e.detail)
    except RecursionError:
        row.update(error_code=ErrorCode.UNREADABLE_HEADER.value,
                   error_detail="the data set nests sequences too deeply to parse "
                                "(RecursionError); the file is malformed")
    except Exception as e:  # noqa: BLE001 - any parser failure is a property of the file
        code = ErrorCode.TRUNCATED if reader.short_read or reader.at_end else \
            ErrorCode.UNREADABLE_HEADER
        where = f" at byte {reader.tell()} of {reader.size}"
        row.update(error_code=code.value,
                   error_detail=f"pydicom cannot parse the header{where}: "
                                f"{type(e).__name__}: {_scrubbed(str(e))[:200]}")
    row.update(bytes_read=reader.bytes_read, range_requests=reader.requests)
    return row


class _Pixel:
    """Where the first pixel element starts, as the parser met it."""

    def __init__(self) -> None:
        self.tag: int | None = None
        self.vr: str | None = None
        self.length: int | None = None

    def stop(self, tag, vr, length) -> bool:
        if int(tag) in _PIXEL_TAGS:
            self.tag, self.vr, self.length = int(tag), vr, int(length)
            return True
        return False


def _parse(reader: RangeReader, uri: str):
    """The data set (without pixels) and where its pixel element is."""
    pixel = _Pixel()
    try:
        ds = read_partial(reader, stop_when=pixel.stop, force=False)
    except InvalidDicomError:
        head = reader.read_at(0, 16)
        if not _looks_like_data_set(head):
            raise SeriesError(ErrorCode.NOT_DICOM,
                              "no DICOM 'DICM' prefix and no data set at the start "
                              f"({_kind_of(head)})", uri=uri) from None
        # a bare data set without preamble and file meta, as some old archives hold
        reader.seek(0)
        reader.short_read = False
        pixel = _Pixel()
        ds = read_partial(reader, stop_when=pixel.stop, force=True)
    return ds, pixel


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


def _classify(ds, pixel: _Pixel, reader: RangeReader, row: dict, uri: str) -> None:
    """Fill ``row`` from ``ds``; raise SeriesError for anything that is not a usable image."""
    meta = getattr(ds, "file_meta", None)
    media_class = _get(meta, "MediaStorageSOPClassUID", _text) if meta is not None else None
    row["transfer_syntax_uid"] = (_get(meta, "TransferSyntaxUID", _text)
                                  if meta is not None else None)
    if media_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise SeriesError(ErrorCode.DICOMDIR, "a DICOMDIR (media directory), not an image; "
                          "its images are listed as objects of their own", uri=uri)
    for column, (keyword, convert) in FIELDS.items():
        row[column] = _get(ds, keyword, convert)
    if row["sop_class_uid"] is None:
        row["sop_class_uid"] = media_class
    if pixel.tag is None:
        if reader.short_read:
            raise SeriesError(ErrorCode.TRUNCATED, f"the object ends inside its header "
                              f"({reader.size} bytes)", uri=uri)
        if row["rows"] and row["columns"]:
            raise SeriesError(ErrorCode.NO_PIXEL_DATA,
                              "an image header (Rows, Columns) without PixelData (or a file "
                              "cut exactly before its pixels)", uri=uri)
        raise SeriesError(ErrorCode.NOT_IMAGE, f"a DICOM object without pixels (SOP class "
                          f"{_sop_name(row['sop_class_uid'])})", uri=uri)
    if reader.short_read:
        raise SeriesError(ErrorCode.TRUNCATED, f"the object ends inside its header "
                          f"({reader.size} bytes)", uri=uri)
    _check_pixel_length(pixel, reader, row, uri, deflated=_is_deflated(row))
    if not row["series_uid"]:
        raise SeriesError(ErrorCode.UNREADABLE_HEADER,
                          "an image without SeriesInstanceUID: it cannot be grouped", uri=uri)


def _check_pixel_length(pixel: _Pixel, reader: RangeReader, row: dict, uri: str, *,
                        deflated: bool) -> None:
    """TRUNCATED / SIZE_MISMATCH from the pixel element's declared length, when cheap."""
    if pixel.length == _UNDEFINED:  # encapsulated (compressed) frames
        if not deflated and reader.fetched(0, reader.size):
            _check_fragments(reader, pixel, uri)
        return
    row["pixel_data_bytes"] = pixel.length
    if not deflated:  # in a deflated file, offsets are in the inflated stream
        header = 12 if (pixel.vr in _LONG_VRS) else 8
        end = reader.tell() + header + pixel.length
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


def _check_fragments(reader: RangeReader, pixel: _Pixel, uri: str) -> None:
    """Walk the encapsulated items of a fully fetched object up to the sequence end."""
    pos = reader.tell() + 12  # encapsulated data is explicit VR little endian
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


def _get(ds, keyword: str, convert):
    """``convert(ds.<keyword>)``, or None when absent, empty or not convertible."""
    try:
        if keyword not in ds:
            return None
        value = ds[keyword].value
        return None if value is None else convert(value)
    except Exception as e:  # noqa: BLE001 - one bad value must not lose the header
        logger.debug("unreadable %s: %s", keyword, e)
        return None


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
    return pa.Table.from_pylist(rows, schema=OBJECTS)


def lost_row(obj: ObjectInfo, reason: str) -> dict:
    """The OBJECTS row of an object whose header read killed its worker twice."""
    row = dict.fromkeys(OBJECTS.names)
    row.update(uri=obj.uri, size_bytes=int(obj.size), bytes_read=0, range_requests=0,
               error_code=ErrorCode.UNREADABLE_HEADER.value,
               error_detail=f"reading this header crashed its worker ({reason}); the file is "
                            "probably malformed: inspect it with pydicom.dcmread")
    return row


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's per-element warnings (invalid VR values are common and harmless
    here: each header is judged by what discovery needs, and problems become rows)."""
    log = logging.getLogger("pydicom")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)
