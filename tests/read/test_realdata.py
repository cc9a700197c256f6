"""Readers against real files written by real scanners and tools (../shared/realdata)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from cohort.errors import ErrorCode, SeriesError
from cohort.read.decode import decode
from cohort.read.series import read_series

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


@pytest.fixture(scope="module")
def realdata() -> Path:
    assert REALDATA.is_dir(), (f"real DICOM test files not found at {REALDATA}; they live in "
                               "../shared/realdata beside the project checkout")
    return REALDATA


def _images(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir() if p.name != "DIRFILE")


def test_philips_axial_brain_series(realdata):
    vol = read_series(_images(realdata / "dcm_qa_ct_philips/S21570/S2010"))
    assert vol.array.shape == (28, 512, 512)
    assert vol.spacing[2] == pytest.approx(5.0)
    assert vol.provenance["tilt_deg"] == 0.0 and not vol.provenance["tilt_corrected"]
    assert vol.array.min() == -1024.0 and 500 < vol.array.max() < 3000


@pytest.mark.parametrize("series,n", [("S2010", 54), ("S3010", 58)])
def test_philips_tilted_series_are_corrected_with_the_header_angle(realdata, series, n):
    files = _images(realdata / "dcm_qa_ct_philips/S21610" / series)
    header_tilt = float(pydicom.dcmread(files[0], stop_before_pixels=True).GantryDetectorTilt)
    assert abs(header_tilt) in (18.5, 16.5)
    vol = read_series(files)
    assert vol.provenance["tilt_deg"] == pytest.approx(header_tilt, abs=0.01)
    assert vol.provenance["tilt_corrected"] is True
    assert vol.array.shape == (n, 512, 512)
    # the corrected grid is axial: orthogonal, slices stacked along z
    d = vol.grid.matrix / np.asarray(vol.spacing)
    np.testing.assert_allclose(d, np.eye(3), atol=1e-6)
    # SimpleITK's own reader keeps the shear as a tilted direction matrix (issue's warning)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    img = reader.Execute()
    assert abs(img.GetDirection()[5]) > 0.2


def test_nine_transfer_syntaxes_decode_to_identical_pixels(realdata):
    files = sorted((realdata / "dcm_qa_ts/In").iterdir())
    assert len(files) == 9
    decoded = [decode(f.read_bytes(), str(f)) for f in files]
    syntaxes = {d.transfer_syntax for d in decoded}
    assert len(syntaxes) >= 7  # JPEG lossless and JPEG-LS appear twice each
    for d in decoded[1:]:
        np.testing.assert_array_equal(d.hu, decoded[0].hu)
    # the image is a Siemens mosaic of 6 x 6 tiles of 64 x 64; dcm2niix's reference volume
    # holds its first 35 tiles (in its own axis order): the same values
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(realdata / "dcm_qa_ts/Ref/1.nii")))
    assert ref.shape == (35, 64, 64)
    tiles = decoded[0].hu.reshape(6, 64, 6, 64).transpose(0, 2, 1, 3).reshape(36, 64, 64)
    np.testing.assert_array_equal(np.sort(ref.ravel()), np.sort(tiles[:35].ravel()))


def test_pydicom_data_files(realdata):
    d = realdata / "pydicom_data"
    j2k = decode((d / "693_J2KR.dcm").read_bytes(), "693_J2KR.dcm")
    unc = decode((d / "693_UNCR.dcm").read_bytes(), "693_UNCR.dcm")
    np.testing.assert_array_equal(j2k.hu, unc.hu)
    assert decode((d / "JPEG-LL.dcm").read_bytes(), "JPEG-LL.dcm").hu.shape == (1024, 256)
    assert decode((d / "explicit_VR-UN.dcm").read_bytes(), "x").hu.shape == (512, 512)
    for name, code in [("eCT_Supplemental.dcm", ErrorCode.MULTIFRAME),
                       ("emri_small_jpeg_2k_lossless_too_short.dcm", ErrorCode.TRUNCATED)]:
        with pytest.raises(SeriesError) as e:
            decode((d / name).read_bytes(), name)
        assert e.value.code == code and name in str(e.value)
    # a CT with an invalid sequence in its header still gives its pixels
    assert decode((d / "bad_sequence.dcm").read_bytes(), "bad").hu.shape == (512, 512)
