"""Reading series: geometry from every slice, corrections recorded, every fault a code."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from cohort.errors import ErrorCode, SeriesError
from cohort.read.isolate import IsolatedReader
from cohort.read.nifti import read_nifti
from cohort.read.series import ReadConfig, read_series
from cohort.read.volume import Volume
from cohort.testing import faults


def _series_files(root: Path, rel: str) -> list[str]:
    return sorted(str(p) for p in (root / rel).iterdir())


@pytest.fixture(scope="module")
def gt(varied_cohort):
    out, _ = varied_cohort
    return pq.read_table(out / "ground_truth.parquet").to_pandas()


def test_every_synthetic_series_reads_onto_its_truth_grid(varied_cohort, gt):
    out, _ = varied_cohort
    for row in gt[gt["series_role"] != "localizer"].itertuples():
        vol = read_series(_series_files(out, row.dicom_dir))
        labels = sitk.ReadImage(str(out / row.labels_path))
        assert vol.array.shape == sitk.GetArrayViewFromImage(labels).shape
        np.testing.assert_allclose(vol.grid.origin, labels.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(vol.spacing, labels.GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(vol.grid.matrix / vol.spacing).ravel(),
                                   labels.GetDirection(), atol=1e-6)
        assert vol.provenance["tilt_deg"] == pytest.approx(row.gantry_tilt_deg, abs=0.02)
        assert vol.provenance["tilt_corrected"] == (row.gantry_tilt_deg != 0)
        assert vol.series_uid == row.series_instance_uid
        assert vol.array.dtype == np.float32 and vol.array.min() >= -1024


def test_tilt_corrected_volume_matches_the_untilted_one(tmp_path):
    """The same head, scanned with and without gantry tilt: after correction the tilted
    scan agrees voxel-wise with the untilted truth within interpolation error."""
    from dataclasses import replace

    from cohort.synth.acquisition import sample_protocol
    from cohort.synth.dicom_writer import SeriesIdentity, encode_series
    from cohort.synth.phantom import build_phantom
    from cohort.synth.render import render_anatomy
    from cohort.synth.scan import Coverage, acquisition_grid, placement_of
    from cohort.synth.subject import Pose, sample_subject

    rng = np.random.default_rng(3)
    phantom = build_phantom(sample_subject(rng, 0, 1.0), texture_seed=3)
    placement = placement_of(Pose(2.0, -3.0, 1.0, (0.0, 0.0, 0.0)), table_z=0.0)
    p = sample_protocol(rng, matrix=128, thickness_choices=(1.25,), spacing_range=(0.45, 0.45),
                        tilt_p=0.0, transfer_syntax="explicit")
    p = replace(p, tilt_deg=20.0, padding_value=None)
    coverage = Coverage(-60.0, 5.0, False)
    tilted = acquisition_grid(phantom, placement, coverage, p)
    hu = render_anatomy(phantom, placement, tilted, scale=1, n_sub=1)
    ident = SeriesIdentity("X^Y", "P1", "19500101", "F", 70, "1.2.3", "20200101", "120000",
                           "A1", "d", "1.2.3.4", 2, "s", "1.2.3.5")
    files = encode_series(hu, tilted, p, ident, [f"1.2.3.4.{k}" for k in range(tilted.shape[0])])
    for k, data in enumerate(files):
        (tmp_path / f"{k:04d}.dcm").write_bytes(data)
    vol = read_series(sorted(str(f) for f in tmp_path.iterdir()))
    assert vol.provenance["tilt_corrected"] and vol.provenance["tilt_deg"] == pytest.approx(20.0)
    truth = render_anatomy(phantom, placement, tilted.axial_equivalent(), scale=1, n_sub=1)
    assert vol.grid == pytest.approx(tilted.axial_equivalent()) or np.allclose(
        vol.grid.matrix, tilted.axial_equivalent().matrix, atol=1e-6)
    covered = vol.array > -1024  # voxels the tilted acquisition reached
    assert covered.mean() > 0.4
    err = np.abs(vol.array - truth)[covered & (truth > -1000)]
    naive = np.abs(hu - truth)[covered & (truth > -1000)]  # sheared stack taken as axial
    assert np.median(err) < 5.0 and np.percentile(err, 90) < 60.0
    assert np.median(naive) > 4 * np.median(err) + 5


# --- faults injected into a real series ----------------------------------------------


@pytest.fixture
def series_dir(varied_cohort, gt, tmp_path) -> Path:
    """A copy of one untilted 5 mm primary series to damage."""
    out, _ = varied_cohort
    rows = gt[(gt["series_role"] == "primary") & (gt["gantry_tilt_deg"] == 0)]
    row = rows.sort_values("n_slices").iloc[-1]
    dst = tmp_path / "series"
    shutil.copytree(out / row.dicom_dir, dst)
    return dst


def _sorted_by_z(d: Path) -> list[Path]:
    files = list(d.iterdir())
    return sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True)
                                             .ImagePositionPatient[2]))


def _edit(path: Path, **attrs) -> None:
    ds = pydicom.dcmread(path)
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.save_as(path)


def test_a_missing_slice_is_interpolated_and_recorded(series_dir):
    whole = read_series(sorted(map(str, series_dir.iterdir())))
    files = _sorted_by_z(series_dir)
    files[10].unlink()
    vol = read_series(sorted(map(str, series_dir.iterdir())))
    assert vol.provenance["missing_slices_filled"] == 1
    assert vol.array.shape == whole.array.shape
    np.testing.assert_array_equal(vol.array[9], whole.array[9])
    expected = (whole.array[9] + whole.array[11]) / 2
    np.testing.assert_allclose(vol.array[10], expected, atol=1e-3)


def test_a_wide_gap_fails_with_missing_slices(series_dir):
    for f in _sorted_by_z(series_dir)[10:15]:
        f.unlink()
    with pytest.raises(SeriesError) as e:
        read_series(sorted(map(str, series_dir.iterdir())))
    assert e.value.code == ErrorCode.MISSING_SLICES and "5 slices missing" in str(e.value)


def test_a_duplicate_slice_is_dropped(series_dir):
    f = _sorted_by_z(series_dir)[7]
    copy = series_dir / "copy.dcm"
    shutil.copy(f, copy)
    _edit(copy, SOPInstanceUID=generate_uid())
    vol = read_series(sorted(map(str, series_dir.iterdir())))
    assert vol.provenance["duplicates_dropped"] == 1


def test_uneven_spacing_is_resampled(series_dir):
    f = _sorted_by_z(series_dir)[12]
    ds = pydicom.dcmread(f)
    step = float(ds.SliceThickness)
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.4 * step
    ds.save_as(f)
    vol = read_series(sorted(map(str, series_dir.iterdir())))
    assert vol.provenance["uneven_resampled"] is True


@pytest.mark.parametrize("edit,code", [
    (dict(ImageOrientationPatient=[0, 1, 0, 0, 0, -1]), ErrorCode.MIXED_ORIENTATION),
    (dict(Rows=64), ErrorCode.SIZE_MISMATCH),
])
def test_geometry_faults_have_codes(series_dir, edit, code):
    _edit(_sorted_by_z(series_dir)[3], **edit)
    with pytest.raises(SeriesError) as e:
        read_series(sorted(map(str, series_dir.iterdir())))
    assert e.value.code == code


def test_a_sagittal_stack_is_not_axial(series_dir):
    for i, f in enumerate(_sorted_by_z(series_dir)):
        _edit(f, ImageOrientationPatient=[0, 1, 0, 0, 0, -1],
              ImagePositionPatient=[float(i) * 5, 0, 0])
    with pytest.raises(SeriesError) as e:
        read_series(sorted(map(str, series_dir.iterdir())))
    assert e.value.code == ErrorCode.NOT_AXIAL


def test_too_few_slices(series_dir):
    files = _sorted_by_z(series_dir)[:3]
    with pytest.raises(SeriesError) as e:
        read_series([str(f) for f in files])
    assert e.value.code == ErrorCode.TOO_FEW_SLICES


def test_broken_files_name_themselves(series_dir):
    files = _sorted_by_z(series_dir)
    data = files[5].read_bytes()
    files[5].write_bytes(data[: len(data) - 5000])  # cut inside the pixel data
    with pytest.raises(SeriesError) as e:
        read_series([str(f) for f in files])
    assert e.value.code in (ErrorCode.SIZE_MISMATCH, ErrorCode.TRUNCATED)
    assert str(files[5]) in str(e.value)
    files[5].write_text("this is a text file, not DICOM")
    with pytest.raises(SeriesError) as e:
        read_series([str(f) for f in files])
    assert e.value.code == ErrorCode.NOT_DICOM


def test_unsupported_transfer_syntax(series_dir):
    f = _sorted_by_z(series_dir)[0]
    ds = pydicom.dcmread(f)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 100])
    ds["PixelData"].VR = "OB"
    ds.save_as(f, enforce_file_format=True)
    with pytest.raises(SeriesError) as e:
        read_series([str(f)] + [str(x) for x in _sorted_by_z(series_dir)[1:]])
    assert e.value.code == ErrorCode.UNSUPPORTED_TRANSFER_SYNTAX
    assert "MPEG2" in str(e.value)


def test_oversized_series_are_refused(series_dir):
    with pytest.raises(SeriesError) as e:
        read_series(sorted(map(str, series_dir.iterdir())), config=ReadConfig(max_voxels=1000))
    assert e.value.code == ErrorCode.OVERSIZED


# --- process isolation ----------------------------------------------------------------


def test_isolated_reader_survives_crashes_hangs_and_recursion(series_dir):
    with IsolatedReader(timeout_s=5.0) as reader:
        assert reader.call(faults.echo, 41) == 41
        with pytest.raises(SeriesError) as e:
            reader.call(faults.crash, series="1.2.3")
        assert e.value.code == ErrorCode.DECODER_CRASHED and "SIGSEGV" in str(e.value)
        assert "1.2.3" in str(e.value)
        with pytest.raises(SeriesError) as e:
            reader.call(faults.recurse)
        assert e.value.code == ErrorCode.UNREADABLE_HEADER
        reader.timeout_s = 1.0
        with pytest.raises(SeriesError) as e:
            reader.call(faults.hang)
        assert e.value.code == ErrorCode.TIMEOUT
        reader.timeout_s = 60.0
        vol = reader.read_series(sorted(map(str, series_dir.iterdir())))
        assert isinstance(vol, Volume) and vol.array.ndim == 3
        (series_dir / "junk").write_text("junk")
        with pytest.raises(SeriesError) as e:
            reader.read_series(sorted(map(str, series_dir.iterdir())))
        assert e.value.code == ErrorCode.NOT_DICOM


# --- NIfTI and SimpleITK round trips ----------------------------------------------------


def test_nifti_input_and_sitk_round_trip(varied_cohort, gt, tmp_path):
    out, _ = varied_cohort
    row = gt[gt["series_role"] == "primary"].iloc[0]
    vol = read_series(_series_files(out, row.dicom_dir))
    path = tmp_path / "v.nii.gz"
    sitk.WriteImage(vol.to_sitk(), str(path))
    back = read_nifti(str(path))
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.grid.origin, vol.grid.origin, atol=1e-4)
    np.testing.assert_allclose(back.grid.matrix, vol.grid.matrix, atol=1e-5)
    (tmp_path / "bad.nii.gz").write_bytes(b"not nifti")
    with pytest.raises(SeriesError) as e:
        read_nifti(str(tmp_path / "bad.nii.gz"))
    assert e.value.code == ErrorCode.INVALID_NIFTI
    # cut short (an interrupted copy): SimpleITK alone would fill the rest and say nothing
    data = path.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 3])
    with pytest.raises(SeriesError) as e:
        read_nifti((tmp_path / "cut.nii.gz").as_uri())
    assert e.value.code == ErrorCode.INVALID_NIFTI and "cut short" in str(e.value)


def test_a_feet_first_image_is_flipped_so_slice_0_is_lowest():
    arr = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    img = sitk.GetImageFromArray(arr)
    img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))
    img.SetOrigin((0, 0, 100))
    img.SetSpacing((1, 1, 2))
    vol = Volume.from_sitk(img)
    np.testing.assert_array_equal(vol.array, arr[::-1])
    assert vol.slice_z_mm().tolist() == [94.0, 96.0, 98.0, 100.0]


def test_a_series_on_s3_costs_one_request_per_slice(series_dir, s3_server):
    """Each slice of a series is one GET on a real S3 server: no HEAD before it (s3fs's
    cat_file asks for the size first, doubling the requests and the CPU per slice), and
    the volume is the one read from the local folder."""
    from cohort.storage import filesystem

    options = s3_server.storage_options()
    bucket = s3_server.make_bucket("one-request-per-slice")
    files = sorted(series_dir.iterdir())
    fs, _ = filesystem(bucket, options)
    for f in files:
        fs.pipe_file(f"{bucket.removeprefix('s3://')}/series/{f.name}", f.read_bytes())
    uris = [f"{bucket}/series/{f.name}" for f in files]
    calls: list[str] = []
    fs.s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    try:
        on_s3 = read_series(uris, options, ReadConfig(io_threads=4))
    finally:
        fs.s3.meta.events.unregister("before-call.s3")
    assert calls.count("GetObject") == len(files)
    assert "HeadObject" not in calls, calls
    local = read_series([str(f) for f in files])
    np.testing.assert_array_equal(on_s3.array, local.array)
