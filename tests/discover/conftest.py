"""Fixtures for discovery: a small synthetic cohort, hand-made series with known faults,
and the real-world DICOM files in ../shared/realdata."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pydicom
import pytest
from pydicom.uid import generate_uid

from cohort.geometry import Grid
from cohort.synth.acquisition import Protocol
from cohort.synth.config import SynthConfig
from cohort.synth.dicom_writer import SeriesIdentity, encode_series
from cohort.synth.heads import generate_cohort

#: a cohort with every role: primary, bone kernel, thick, localizer, tilt, follow-up
SMALL_COHORT = SynthConfig(patients=6, seed=3, matrix=48, thicknesses_mm=(2.5, 5.0), tilt_p=0.5,
                           localizer_p=0.7, second_series_p=0.8, followup_p=0.5, workers=1)


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SMALL_COHORT written to a folder (about 2 s)."""
    out = tmp_path_factory.mktemp("discover") / "cohort"
    generate_cohort(SMALL_COHORT, str(out))
    return out


def repo_root() -> Path:
    """The folder holding pyproject.toml, above this file."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    raise RuntimeError(f"no pyproject.toml above {__file__}")


@pytest.fixture(scope="session")
def realdata() -> Path:
    """../shared/realdata beside the repository (or $COHORT_REALDATA); missing is a failure."""
    folder = Path(os.environ.get("COHORT_REALDATA") or repo_root().parent / "shared" / "realdata")
    folder = folder.resolve()
    if not (folder / "MANIFEST.md").is_file():
        pytest.fail(f"the real DICOM test files are missing: expected {folder}/MANIFEST.md "
                    "(the shared folder ../shared/realdata beside the repository, or set "
                    "COHORT_REALDATA to where it is)")
    return folder


# --- an archive spread over several inputs ---------------------------------------------

def relative_series(table: pa.Table, roots: list) -> list[dict]:
    """The series rows of a manifest (key, status, code, files), each file named relative
    to the input (of ``roots``, paths or URLs) it lies under."""

    def rel(uri: str) -> str:
        for root in roots:
            if uri.startswith(str(root) + "/"):
                return uri[len(str(root)) + 1:]
        raise AssertionError(f"{uri} lies under none of {roots}")

    rows = [r for r in table.to_pylist() if r["kind"] == "series"]
    return sorted(({"series_key": r["series_key"], "status": r["status"],
                    "error_code": r["error_code"], "n_files": r["n_files"],
                    "files": [rel(f) for f in r["files"]]} for r in rows),
                  key=lambda r: r["series_key"])


# --- hand-made series ------------------------------------------------------------------

PROTOCOL = Protocol(
    manufacturer="SIEMENS", model="SOMATOM test", kernel="H31s", bone_kernel=False,
    slice_thickness_mm=5.0, pixel_spacing_mm=4.0, matrix=16, tilt_deg=0.0, noise_sd_hu=0.0,
    signed=False, bits_stored=12, padding_value=None, rescale_intercept=-1024.0,
    transfer_syntax="explicit", kvp=120.0, exposure_mas=200.0)


def identity(series_uid: str, study_uid: str, number: int = 2, patient: str = "P1"
             ) -> SeriesIdentity:
    return SeriesIdentity(
        patient_name="DOE^JANE", patient_id=patient, birth_date="19500101", sex="F",
        age_years=70, study_uid=study_uid, study_date="20200101", study_time="120000",
        accession="A1", study_description="TEST", series_uid=series_uid,
        series_number=number, series_description="TEST SERIES",
        frame_of_reference_uid=study_uid + ".1")


def series_bytes(n: int, *, series_uid: str, study_uid: str, number: int = 2,
                 step: float = 5.0, z0: float = 0.0, coronal: bool = False,
                 kernel: str = "H31s", patient: str = "P1") -> list[bytes]:
    """``n`` encoded 16 x 16 slices of one series, bottom slice first."""
    px = PROTOCOL.pixel_spacing_mm
    if coronal:  # rows run down -z, slices step along y
        grid = Grid((-30.0, z0, 30.0), (px, 0.0, 0.0), (0.0, 0.0, -px), (0.0, step, 0.0),
                    (n, 16, 16))
    else:
        grid = Grid((-30.0, -30.0, z0), (px, 0.0, 0.0), (0.0, px, 0.0), (0.0, 0.0, step),
                    (n, 16, 16))
    p = replace(PROTOCOL, kernel=kernel, slice_thickness_mm=step)
    hu = np.zeros((n, 16, 16), np.float32)
    sops = [generate_uid() for _ in range(n)]
    return encode_series(hu, grid, p, identity(series_uid, study_uid, number, patient), sops)


def write_series(folder: Path, data: list[bytes], prefix: str = "I") -> list[Path]:
    """One file per slice, named like a Philips export: no extension (I10, I20, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, b in enumerate(data):
        path = folder / f"{prefix}{(k + 1) * 10}"
        path.write_bytes(b)
        paths.append(path)
    return paths


def edited(data: bytes, **changes) -> bytes:
    """``data`` (one DICOM file) with header elements changed, written back."""
    from io import BytesIO

    ds = pydicom.dcmread(BytesIO(data))
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_dicomdir(path: Path, file_set_id: str) -> None:
    """An (empty) DICOMDIR media directory file at ``path``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.FileSetID = file_set_id
    ds.DirectoryRecordSequence = []
    ds.save_as(path, enforce_file_format=True)
