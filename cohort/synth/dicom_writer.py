"""Write synthetic CT volumes as DICOM series, one file per slice, as a PACS export does.

Slices are numbered head to feet (InstanceNumber 1 is the top slice), as many scanners do,
so that no reader can mistake instance order for anatomical order.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from cohort import __version__
from cohort.geometry import Grid, header_tilt_convention
from cohort.synth.acquisition import Protocol

TRANSFER_SYNTAX_UIDS = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "deflate": DeflatedExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg-ls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless,
}
SYNTHETIC_NOTE = "SYNTHETIC PHANTOM - cohort generator - not patient data"


@dataclass(frozen=True)
class SeriesIdentity:
    """Who and what a series is: the identifiers a PACS export carries (all fake)."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    age_years: int
    study_uid: str
    study_date: str
    study_time: str
    accession: str
    study_description: str
    series_uid: str
    series_number: int
    series_description: str
    frame_of_reference_uid: str
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL")


def _base_dataset(ident: SeriesIdentity, p: Protocol, sop_uid: str, ts_uid) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ts_uid
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"COHORT_{__version__}"[:16]
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(ident.image_type)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ident.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ident.study_time
    ds.AccessionNumber = ident.accession
    ds.Modality = "CT"
    ds.Manufacturer = p.manufacturer
    ds.ManufacturerModelName = p.model
    ds.InstitutionName = "cohort synthetic phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = ident.study_description
    ds.SeriesDescription = ident.series_description
    ds.ImageComments = SYNTHETIC_NOTE
    ds.PatientName = ident.patient_name
    ds.PatientID = ident.patient_id
    ds.PatientBirthDate = ident.birth_date
    ds.PatientSex = ident.sex
    ds.PatientAge = f"{ident.age_years:03d}Y"
    ds.BodyPartExamined = "HEAD"
    ds.KVP = f"{p.kvp:g}"
    ds.Exposure = int(p.exposure_mas)
    ds.ConvolutionKernel = p.kernel
    # the header's sign as the manufacturer writes it (cohort.geometry: GE is the opposite
    # of the measured tilt); Protocol.tilt_deg has the measured sign
    ds.GantryDetectorTilt = f"{(header_tilt_convention(p.manufacturer) or 1) * p.tilt_deg:g}"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = ident.study_uid
    ds.SeriesInstanceUID = ident.series_uid
    ds.StudyID = ident.accession[-8:]
    ds.SeriesNumber = ident.series_number
    ds.FrameOfReferenceUID = ident.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = p.bits_stored
    ds.HighBit = p.bits_stored - 1
    ds.PixelRepresentation = 1 if p.signed else 0
    ds.RescaleIntercept = f"{p.rescale_intercept:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "80"
    if p.padding_value is not None:
        ds.PixelPaddingValue = p.padding_value
    return ds


def stored_values(hu: np.ndarray, p: Protocol, fov_circle: np.ndarray | None) -> np.ndarray:
    """CT numbers -> stored pixel values (rounded, clipped to the representable range)."""
    lo, hi = ((-(2 ** (p.bits_stored - 1)), 2 ** (p.bits_stored - 1) - 1) if p.signed
              else (0, 2**p.bits_stored - 1))
    v = np.clip(hu - np.float32(p.rescale_intercept), lo, hi)
    v = np.rint(v, out=v).astype(np.int16 if p.signed else np.uint16)
    if p.padding_value is not None and fov_circle is not None:
        v[..., ~fov_circle] = p.padding_value
    return v


def encode_series(hu: np.ndarray, grid: Grid, p: Protocol, ident: SeriesIdentity,
                  sop_uids: list[str], instances: list[int] | None = None) -> list[bytes]:
    """One encoded DICOM file (bytes) per slice, slice k at ``grid.slice_positions()[k]``.

    ``instances``: the InstanceNumber of each slice (default: head to feet, 1 at the top);
    a series written in several blocks numbers its slices across all of them.
    """
    nk, nj, ni = hu.shape
    fov_circle = None
    if p.padding_value is not None:  # scanners that pad outside the reconstruction circle
        yy, xx = np.mgrid[:nj, :ni]
        fov_circle = (xx - (ni - 1) / 2) ** 2 + (yy - (nj - 1) / 2) ** 2 <= (min(ni, nj) / 2) ** 2
    ts_uid = TRANSFER_SYNTAX_UIDS[p.transfer_syntax]
    col = np.asarray(grid.col_step, float)
    row = np.asarray(grid.row_step, float)
    iop = [*(col / np.linalg.norm(col)), *(row / np.linalg.norm(row))]
    positions = grid.slice_positions()
    out = []
    # One dataset, updated per slice: building ~70 elements anew for every file would cost
    # more than encoding its pixels.
    ds = _base_dataset(ident, p, sop_uids[0], ts_uid)
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
    ds.SliceThickness = f"{p.slice_thickness_mm:g}"
    ds.PixelSpacing = [f"{np.linalg.norm(row):.10g}", f"{np.linalg.norm(col):.10g}"]
    ds.Rows, ds.Columns = nj, ni
    for k in range(nk):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uids[k]
        ds.InstanceNumber = nk - k if instances is None else instances[k]  # head to feet
        ds.ImagePositionPatient = [f"{v:.4f}" for v in positions[k]]
        ds.SliceLocation = f"{positions[k][2]:.4f}"
        arr = stored_values(hu[k], p, fov_circle)
        if ts_uid.is_compressed:
            ds.compress(ts_uid, arr, generate_instance_uid=False)
        else:
            ds.PixelData = arr.tobytes()
        out.append(_to_bytes(ds, ts_uid))
    return out


def encode_localizer(image: np.ndarray, origin, row_dir, col_dir, spacing_rc,
                     p: Protocol, ident: SeriesIdentity, sop_uid: str) -> bytes:
    """A projection scout image: ImageType ORIGINAL/PRIMARY/LOCALIZER, one file."""
    ds = _base_dataset(ident, p, sop_uid, ExplicitVRLittleEndian)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [f"{v:.4f}" for v in origin]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [f"{spacing_rc[0]:.6g}", f"{spacing_rc[1]:.6g}"]
    ds.SliceThickness = ""
    ds.Rows, ds.Columns = image.shape
    ds.PixelData = stored_values(image, p, None).tobytes()
    return _to_bytes(ds, ExplicitVRLittleEndian)


def _to_bytes(ds: Dataset, ts_uid) -> bytes:  # noqa: ARG001 - syntax is in file_meta
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()
