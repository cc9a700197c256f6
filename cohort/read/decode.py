"""One DICOM slice -> its geometry and its CT numbers (HU), with every way it can fail
turned into a `SeriesError` with a code."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.pixels import get_decoder, pixel_array

from cohort.errors import ErrorCode, SeriesError
from cohort.read.quirks import (
    Spliced,
    TopLevel,
    decimal_positions,
    private_pixels,
    reparse_without_private,
)
from cohort.read.stack import SliceGeometry

AIR_HU = -1024.0

#: decoding plugins faster than pydicom's first choice, by transfer syntax (CharLS is ~3x
#: faster than libjpeg on JPEG-LS); used when installed
PREFERRED_PLUGINS = {"1.2.840.10008.1.2.4.80": "pyjpegls", "1.2.840.10008.1.2.4.81": "pyjpegls"}
#: syntaxes GDCM (inside SimpleITK) decodes faster than pydicom's plugins here: JPEG 2000
#: (~1.4x per slice) and JPEG-LS; pydicom (with the plugins above) is the fallback. Files
#: that might crash a decoder belong in `cohort.read.isolate.IsolatedReader` either way.
GDCM_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
                           "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


def _gdcm_stored(data: bytes, slope: float, intercept: float) -> np.ndarray | None:
    """Stored values of a single-frame file decoded by GDCM, or None if GDCM cannot."""
    if slope != 1.0:  # undoing a fractional rescale would round; let pydicom do it
        return None
    with tempfile.NamedTemporaryFile(suffix=".dcm", dir=_SCRATCH) as f:
        f.write(data)
        f.flush()
        try:
            img = sitk.ReadImage(f.name, imageIO="GDCMImageIO")
        except RuntimeError:
            return None
    arr = sitk.GetArrayFromImage(img)
    if arr.ndim != 3 or arr.shape[0] != 1:
        return None
    return np.rint(arr[0] - intercept).astype(np.int32)  # GDCM applied the rescale


@dataclass(frozen=True)
class DecodedSlice:
    """One decoded slice: stored values and how they become HU (applied on demand, straight
    into the series' volume, so no intermediate float copy of every slice is made)."""

    geometry: SliceGeometry | None  # None when the header has no usable position
    stored: np.ndarray  # integer stored values (rows, columns), bits above BitsStored cleared
    slope: float
    intercept: float
    padding: tuple[int, int] | None  # stored values that mean "outside the image"
    series_uid: str | None  # None: the file has no SeriesInstanceUID
    transfer_syntax: str
    instance: int | None
    notes: tuple[str, ...] = ()  # what was read in spite of a problem (`parse`)

    def hu_into(self, out: np.ndarray) -> np.ndarray:
        """Write the slice's CT numbers (float32) into ``out`` and return it."""
        np.multiply(self.stored, np.float32(self.slope), out=out, casting="unsafe")
        out += np.float32(self.intercept)
        if self.padding is not None:
            lo, hi = self.padding
            out[(self.stored >= lo) & (self.stored <= hi)] = AIR_HU
        np.maximum(out, AIR_HU, out=out)  # below-air values lie outside the reconstruction
        return out

    @property
    def hu(self) -> np.ndarray:
        """The slice's CT numbers as a new float32 array."""
        return self.hu_into(np.empty(self.stored.shape, dtype=np.float32))


def parse(data: bytes, uri: str) -> tuple[pydicom.Dataset, bool, tuple[str, ...]]:
    """The whole data set of a file's bytes, whether the file ended early, and notes on
    what was read in spite of a problem: a private element pydicom cannot parse is left out
    (`cohort.read.quirks`) before the file is called truncated or unreadable."""
    try:
        ds, truncated, top = _read(io.BytesIO(data))
        error = None
    except InvalidDicomError as e:
        raise SeriesError(ErrorCode.NOT_DICOM, f"not a DICOM file ({e})", uri=uri) from e
    except RecursionError as e:
        raise SeriesError(ErrorCode.UNREADABLE_HEADER, "the data set nests without end",
                          uri=uri) from e
    except _Failed as e:  # pydicom raises many types on malformed data
        ds, truncated, top, error, failed_at = None, True, e.top, e.error, e.position
    if error is not None or truncated or (
            "PixelData" not in ds and private_pixels(ds) is None):
        def read_at(start: int, n: int) -> bytes:
            return data[start:start + n]

        again = reparse_without_private(read_at, len(data), top, force=False)
        if again is not None:
            with contextlib.suppress(_Failed, RecursionError):
                whole, cut_short, _ = _read(Spliced(read_at, len(data), again.view.cuts))
                return whole, cut_short, (again.note(),)
    if error is not None:
        code = (ErrorCode.TRUNCATED if isinstance(error, EOFError) or failed_at >= len(data)
                else ErrorCode.UNREADABLE_HEADER)
        raise SeriesError(code, f"pydicom cannot parse the file at byte {failed_at} of "
                          f"{len(data)}{top.where()}: {type(error).__name__}: "
                          f"{decimal_positions(str(error))}", uri=uri) from error
    return ds, truncated, ()


class _Failed(Exception):
    """pydicom failed on a data set; carries what it raised, the top-level elements it had
    met and the byte it had reached."""

    def __init__(self, error: Exception, top: TopLevel, position: int):
        super().__init__(str(error))
        self.error, self.top, self.position = error, top, position


def _read(fp) -> tuple[pydicom.Dataset, bool, TopLevel]:
    """The data set in ``fp``, whether it ended early, and its top-level elements."""
    top = TopLevel(fp.tell, stop_at_pixels=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = read_partial(fp, stop_when=top, force=False)
    except (InvalidDicomError, RecursionError):
        raise
    except Exception as e:  # noqa: BLE001 - any parser failure is a property of the file
        raise _Failed(e, top, fp.tell()) from e
    return ds, any("End of file reached" in str(w.message) for w in caught), top


def _padding(ds: pydicom.Dataset, signed: bool) -> tuple[int, int] | None:
    if "PixelPaddingValue" not in ds:
        return None
    lo = int(ds.PixelPaddingValue)
    hi = int(ds.get("PixelPaddingRangeLimit", lo))
    if signed:  # the tag is US or SS; pydicom may have read a signed value as unsigned
        lo = lo - 65536 if lo > 32767 else lo
        hi = hi - 65536 if hi > 32767 else hi
    return min(lo, hi), max(lo, hi)


def stored_to_int(raw: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Stored values as integers, keeping only the low ``bits_stored`` bits (some files carry
    overlay or garbage bits above them) and sign-extending when the data are signed."""
    bits_alloc = raw.dtype.itemsize * 8
    if bits_stored >= bits_alloc:
        if signed and raw.dtype.kind == "u":
            return raw.view(np.dtype(f"i{raw.dtype.itemsize}"))
        return raw
    v = raw.astype(np.int32)
    v &= (1 << bits_stored) - 1
    if signed:
        sign = 1 << (bits_stored - 1)
        v ^= sign
        v -= sign
    return v


def _thickness(ds: pydicom.Dataset) -> float | None:
    """SliceThickness in mm, or None when absent, empty or not a positive number."""
    try:
        value = float(ds.get("SliceThickness") or 0)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def decode(data: bytes, uri: str) -> DecodedSlice:
    """Decode one single-frame, single-sample CT slice to HU.

    Raises:
        SeriesError: NOT_DICOM, TRUNCATED, UNREADABLE_HEADER, NO_PIXEL_DATA,
            UNSUPPORTED_COMPRESSION, COLOR, MULTIFRAME, UNSUPPORTED_TRANSFER_SYNTAX,
            SIZE_MISMATCH or DECODE_FAILED.
    """
    ds, truncated, notes = parse(data, uri)
    series = str(ds.get("SeriesInstanceUID", "")).strip() or None
    if truncated and ("PixelData" not in ds or ds["PixelData"].is_undefined_length):
        raise SeriesError(ErrorCode.TRUNCATED, "the file ends inside its pixel data",
                          series=series, uri=uri)
    if "PixelData" not in ds:
        compressed = private_pixels(ds)
        if compressed:
            raise SeriesError(ErrorCode.UNSUPPORTED_COMPRESSION,
                              f"no PixelData: the pixels are {compressed}, which no decoder "
                              "here reads; export the series again uncompressed",
                              series=series, uri=uri)
        raise SeriesError(ErrorCode.NO_PIXEL_DATA, "no PixelData element", series=series,
                          uri=uri)
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise SeriesError(ErrorCode.COLOR, f"{ds.SamplesPerPixel} samples per pixel "
                          "(a colour image, e.g. a screenshot)", series=series, uri=uri)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise SeriesError(ErrorCode.MULTIFRAME, "enhanced multi-frame objects are not read "
                          "yet; export the series as single-frame slices", series=series,
                          uri=uri)
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is not None and ts.is_compressed:
        try:
            decoder = get_decoder(ts)
        except NotImplementedError as e:
            raise SeriesError(ErrorCode.UNSUPPORTED_TRANSFER_SYNTAX,
                              f"{ts.name} ({ts}) has no decoder in pydicom; convert the "
                              "series to a lossless syntax (e.g. with dcmdjpeg or gdcmconv)",
                              series=series, uri=uri) from e
        if not decoder.is_available:
            raise SeriesError(ErrorCode.UNSUPPORTED_TRANSFER_SYNTAX,
                              f"no decoder for {ts.name} ({ts}); missing: "
                              f"{', '.join(decoder.missing_dependencies)}", series=series,
                              uri=uri)
    rows, cols = int(ds.Rows), int(ds.Columns)
    if ts is None or not ts.is_compressed:
        expected = rows * cols * int(ds.get("BitsAllocated", 16)) // 8
        got = len(ds.PixelData)
        if got < expected:
            raise SeriesError(ErrorCode.TRUNCATED, f"pixel data hold {got} bytes, {rows} x "
                              f"{cols} x {ds.get('BitsAllocated', 16)} bits need {expected}",
                              series=series, uri=uri)
        if got > expected + 1:  # one byte of padding to an even length is allowed
            raise SeriesError(ErrorCode.SIZE_MISMATCH, f"pixel data hold {got} bytes, but "
                              f"{rows} x {cols} x {ds.get('BitsAllocated', 16)} bits make "
                              f"{expected}: Rows/Columns do not match the pixels",
                              series=series, uri=uri)
    bits_alloc = int(ds.get("BitsAllocated", 16))
    little_native = ts is None or ts in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1",
                                         "1.2.840.10008.1.2.1.99")
    try:
        if little_native and bits_alloc in (8, 16):
            # native little-endian pixels are the array itself: skip the generic machinery
            dtype = np.dtype(f"<{'i' if int(ds.get('PixelRepresentation', 0)) else 'u'}"
                             f"{bits_alloc // 8}")
            raw = np.frombuffer(ds.PixelData, dtype=dtype, count=rows * cols).reshape(rows, cols)
        else:
            raw = None
            if str(ts) in GDCM_SYNTAXES:
                raw = _gdcm_stored(data, float(ds.get("RescaleSlope", 1) or 1),
                                   float(ds.get("RescaleIntercept", 0) or 0))
            if raw is None:
                plugin = PREFERRED_PLUGINS.get(str(ts), "")
                if plugin and plugin not in get_decoder(ts).available_plugins:
                    plugin = ""
                raw = pixel_array(ds, decoding_plugin=plugin)
    except ValueError as e:
        msg = decimal_positions(str(e))
        code = (ErrorCode.SIZE_MISMATCH if "length" in msg or "size" in msg
                else ErrorCode.DECODE_FAILED)
        raise SeriesError(code, f"pixel data do not decode: {msg}", series=series,
                          uri=uri) from e
    except NotImplementedError as e:
        raise SeriesError(ErrorCode.UNSUPPORTED_TRANSFER_SYNTAX, str(e), series=series,
                          uri=uri) from e
    except Exception as e:  # decoders raise their own types on corrupt streams
        raise SeriesError(ErrorCode.DECODE_FAILED, f"pixel data do not decode: "
                          f"{type(e).__name__}: {decimal_positions(str(e))}", series=series,
                          uri=uri) from e
    if raw.shape != (rows, cols):
        raise SeriesError(ErrorCode.SIZE_MISMATCH, f"decoded {raw.shape}, header says "
                          f"{rows} x {cols}", series=series, uri=uri)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    v = stored_to_int(raw, int(ds.get("BitsStored", raw.dtype.itemsize * 8)), signed)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    pad = _padding(ds, signed)
    try:
        geometry = SliceGeometry(
            position=tuple(float(x) for x in ds.ImagePositionPatient),
            orientation=tuple(float(x) for x in ds.ImageOrientationPatient),
            rows=rows, columns=cols,
            pixel_spacing=tuple(float(x) for x in ds.PixelSpacing),
            thickness=_thickness(ds))
    except (AttributeError, TypeError, ValueError):
        geometry = None  # fine for one image; a stack needs it (see read_series)
    instance = ds.get("InstanceNumber")
    return DecodedSlice(geometry, v, slope, intercept, pad, series, str(ts) if ts else "",
                        int(instance) if instance not in (None, "") else None, notes)
