"""Small CT slices written with pydicom, with what real scanners' files do that trips a
reader: big-endian encoding, vendor private sequences pydicom misparses, pixels in Elscint's
private compressed element, no SeriesInstanceUID. Each is built here from scratch (no copy
of anyone's file); the faults that pydicom will not write are spliced in as raw bytes.

    ds = ct_slice(3, seed=1)                        # slice 3 of a 16 x 16 series
    data = encoded(ds, big_endian=True)             # Explicit VR Big Endian
    data = with_private_element(data, broken_private_sequence("no_delimiters"))
"""

from __future__ import annotations

import copy
import struct
from io import BytesIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRBigEndian, ExplicitVRLittleEndian

STUDY_UID = "1.2.826.0.1.3680043.99.13"
SERIES_UID = STUDY_UID + ".2"
MATRIX = 16
PIXEL_MM = 4.0
#: kinds of `broken_private_sequence`
BROKEN_KINDS = ("too_long", "no_delimiters", "un_implicit")
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "SQ", "UN", "UC", "UR", "UT", "SV", "UV"}


def ct_slice(k: int = 0, *, series_uid: str | None = SERIES_UID, study_uid: str = STUDY_UID,
             series_number: int = 2, step_mm: float = 5.0, signed: bool = False,
             bits_stored: int = 12, seed: int = 0) -> Dataset:
    """Slice ``k`` (from the feet) of an axial 16 x 16 CT series: CT Image Storage, explicit
    VR little endian, 16-bit stored values drawn from ``seed + k``, rescale -1024. Its first
    element of group 0010 is PatientID (`with_private_element` inserts before it)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = f"{study_uid}.{series_number}.{k + 1}"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.PatientID = "P13"
    ds.SliceThickness = step_mm
    ds.ConvolutionKernel = "H31s"
    ds.StudyInstanceUID = study_uid
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [-30.0, -30.0, k * step_mm]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = MATRIX
    ds.PixelSpacing = [PIXEL_MM, PIXEL_MM]
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    rng = np.random.default_rng(seed + k)
    lo, hi = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1)) if signed else (0, 2**bits_stored)
    stored = rng.integers(lo, hi, (MATRIX, MATRIX)).astype("<i2" if signed else "<u2")
    ds.PixelData = stored.tobytes()
    return ds


def expected_hu(ds: Dataset) -> np.ndarray:
    """The CT numbers of a `ct_slice` (float32), air (-1024) as the floor."""
    stored = np.frombuffer(ds.PixelData, "<i2" if ds.PixelRepresentation else "<u2")
    hu = stored.reshape(ds.Rows, ds.Columns).astype(np.float32) * float(ds.RescaleSlope)
    return np.maximum(hu + float(ds.RescaleIntercept), -1024.0)


def encoded(ds: Dataset, *, big_endian: bool = False) -> bytes:
    """``ds`` as a DICOM file; ``big_endian``: Explicit VR Big Endian (1.2.840.10008.1.2.2),
    its 16-bit pixels byte-swapped (pydicom writes OW values as given)."""
    ds = copy.deepcopy(ds)
    if big_endian:
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        if "PixelData" in ds:
            ds.PixelData = np.frombuffer(ds.PixelData, "<u2").astype(">u2").tobytes()
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def with_private_element(data: bytes, raw: bytes, *, big_endian: bool = False) -> bytes:
    """``data`` (a `ct_slice` file) with the raw element bytes ``raw`` inserted before its
    first element of group 0010 (PatientID), where private group 0009 belongs."""
    anchor = struct.pack(">HH" if big_endian else "<HH", 0x0010, 0x0020) + b"LO"
    assert data.count(anchor) == 1, "not a ct_slice file"
    i = data.index(anchor)
    return data[:i] + raw + data[i:]


def broken_private_sequence(kind: str, *, big_endian: bool = False) -> bytes:
    """Raw bytes of private creator (0009,0010) "ACME 1.0" and a private sequence
    (0009,1010) that pydicom misparses, holding one item with BodyPartExamined "HEAD":

    - ``too_long``: the sequence declares 64 bytes more than its item holds;
    - ``no_delimiters``: undefined lengths, and neither item nor sequence delimiter;
    - ``un_implicit``: VR UN with undefined length, its item in implicit VR little endian
      as the standard wants; pydicom reads it in the file's byte order, which in a
      big-endian file is wrong.
    """
    o = ">" if big_endian else "<"
    creator = _element(0x00090010, "LO", b"ACME 1.0", o)
    if kind == "un_implicit":
        content = (struct.pack("<HHL", 0xFFFE, 0xE000, _UNDEFINED)
                   + struct.pack("<HHL", 0x0018, 0x0015, 4) + b"HEAD"
                   + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
                   + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))
        return creator + _element(0x00091010, "UN", content, o, length=_UNDEFINED)
    body = _element(0x00180015, "CS", b"HEAD", o)
    if kind == "too_long":
        item = struct.pack(f"{o}HHL", 0xFFFE, 0xE000, len(body)) + body
        return creator + _element(0x00091010, "SQ", item, o, length=len(item) + 64)
    if kind == "no_delimiters":
        item = struct.pack(f"{o}HHL", 0xFFFE, 0xE000, _UNDEFINED) + body
        return creator + _element(0x00091010, "SQ", item, o, length=_UNDEFINED)
    raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(BROKEN_KINDS)}")


def elscint_slice(k: int = 0, **kwargs) -> Dataset:
    """A `ct_slice` whose pixels are in Elscint's private compressed element (07A1,100A) of
    creator ELSCINT1, compression type (07A1,1011) PMSCT_RLE1, and without PixelData."""
    ds = ct_slice(k, **kwargs)
    del ds.PixelData
    block = ds.private_block(0x07A1, "ELSCINT1", create=True)
    block.add_new(0x0A, "OB", bytes([0xA5, 0x10, 0x00, 0x5A, 0x00, 0x04]) * 20)
    block.add_new(0x11, "CS", "PMSCT_RLE1")
    return ds


def _element(tag: int, vr: str, value: bytes, order: str, length: int | None = None) -> bytes:
    n = len(value) if length is None else length
    group, element = tag >> 16, tag & 0xFFFF
    if vr in _LONG_VRS:
        return struct.pack(f"{order}HH2sHL", group, element, vr.encode(), 0, n) + value
    return struct.pack(f"{order}HH2sH", group, element, vr.encode(), n) + value
