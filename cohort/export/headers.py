"""The source headers a SEG or SR is built from, de-identified by construction.

highdicom copies the patient and study modules of the source images into what it builds.
So the SEG and SR never see the source's own headers: they see copies holding only what
they need (an allow-list: geometry, UIDs, the CT image's pixel description), with the
patient named by the run's pseudonymous key, no birth date, no sex, no accession number,
no referring physician. The study is the source's StudyInstanceUID with ``--keep-ids``;
with a salt it is a UID made from the run's study key (``2.25.<key as integer>``), so that
SEG and SR carry the identifiers the run's tables carry and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset

from cohort.errors import ConfigError

#: what is copied from each source instance (everything else is left behind)
KEPT = (
    "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
    "Modality", "StudyDate", "StudyTime", "SeriesNumber", "InstanceNumber",
    "Rows", "Columns", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient",
    "SliceThickness", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "ImageType",
)


@dataclass(frozen=True)
class Pseudonyms:
    """The identifiers of a series as the run's tables write them."""

    patient_key: str | None  # the tables' patient_key
    study_key: str | None  # the tables' study_key (a keyed hash, or the UID with keep_ids)
    keep_ids: bool = False

    def study_uid(self, source_study_uid: str) -> str:
        """The StudyInstanceUID of the exports (see module)."""
        if self.keep_ids:
            return source_study_uid
        if not self.study_key:
            raise ConfigError("a salted export needs the series' study_key (the run's "
                              "pseudonym of StudyInstanceUID); none was given")
        try:
            return f"2.25.{int(self.study_key, 16)}"
        except ValueError as e:
            raise ConfigError(f"study_key {self.study_key!r} is not a keyed hash (hex); "
                              "pass keep_ids=True when identifiers are kept") from e


def is_synthetic(header: Dataset) -> bool:
    """Whether a source header says it is a synthetic phantom (`cohort.synth`)."""
    text = " ".join(str(header.get(k, "")) for k in ("ImageComments", "InstitutionName",
                                                     "StudyDescription"))
    return "synthetic" in text.lower()


def reference_header(source: Dataset, ids: Pseudonyms) -> Dataset:
    """A de-identified copy of one source header (see module)."""
    out = Dataset()
    for keyword in KEPT:
        if keyword in source:
            setattr(out, keyword, source.data_element(keyword).value)
    out.StudyInstanceUID = ids.study_uid(str(source.StudyInstanceUID))
    out.PatientName = f"{ids.patient_key or 'ANONYMOUS'}^"  # one component: family name
    out.PatientID = ids.patient_key or ""
    out.PatientBirthDate = ""
    out.PatientSex = ""
    out.AccessionNumber = ""
    out.ReferringPhysicianName = ""
    out.StudyID = ""
    return out


def read_headers(paths: list, ids: Pseudonyms, open_file=None) -> tuple[list[Dataset], bool]:
    """De-identified headers of a series' files (pixel data not read), and whether the
    source says it is synthetic.

    Args:
        paths: the series' files (local paths, or URLs with ``open_file``).
        ids: the run's pseudonyms of the series.
        open_file: a callable giving a binary file object for a path (object storage).
    """
    headers, synthetic = [], False
    for path in paths:
        if open_file is None:
            ds = dcmread(path, stop_before_pixels=True)
        else:
            with open_file(path) as f:
                ds = dcmread(f, stop_before_pixels=True)
        synthetic = synthetic or is_synthetic(ds)
        headers.append(reference_header(ds, ids))
    return headers, synthetic
