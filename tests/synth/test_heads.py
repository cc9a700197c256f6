"""The written cohort: DICOM that pydicom and SimpleITK read, with the geometry and ground
truth the table claims, slice by slice."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import SimpleITK as sitk

from cohort.anatomy import LANDMARK_KINDS, SEGMENT_KINDS, SEGMENT_LABELS, SEGMENTS, SIDES
from cohort.schemas import GROUND_TRUTH
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort, is_complete


@pytest.fixture(scope="module")
def gt(varied_cohort):
    out, _ = varied_cohort
    return pq.read_table(out / "ground_truth.parquet").to_pandas()


def _files(root: Path, rel: str) -> list[Path]:
    return sorted((root / rel).iterdir())


def test_layout_and_schema(varied_cohort, gt):
    out, cfg = varied_cohort
    assert is_complete(str(out))
    table = pq.read_table(out / "ground_truth.parquet")
    assert table.schema.equals(GROUND_TRUTH, check_metadata=False)
    assert table.schema.metadata[b"cohort.synthetic"] == b"true"
    assert gt["synthetic"].all()
    assert gt["patient_id"].nunique() == cfg.patients
    assert gt["series_instance_uid"].is_unique
    # the options of the fixture all occur
    assert {"primary", "localizer"} <= set(gt["series_role"])
    assert set(gt["series_role"]) & {"thick", "bone_kernel"}
    assert (gt["gantry_tilt_deg"] != 0).any()
    assert (gt["study_role"] == "followup").any()
    # what the scanner added and the calcifications that are not ICAC, said per series
    said = {a for row in gt["artefacts"] for a in row.split(",") if a}
    assert {"beam_hardening", "head_holder", "metal", "motion"} <= said
    assert gt["distractors"].notna().all() and (gt["distractors"] != "").any()
    for row in gt.itertuples():
        files = _files(out, row.dicom_dir)
        assert len(files) == row.n_slices
        if row.series_role != "localizer":
            assert (out / row.mask_path).is_file() and (out / row.labels_path).is_file()
            assert row.mask_path == f"masks/{row.series_instance_uid}.nii.gz"


def test_dicom_geometry_slice_by_slice(varied_cohort, gt):
    out, _ = varied_cohort
    for row in gt[gt["series_role"] != "localizer"].itertuples():
        dss = [pydicom.dcmread(f) for f in _files(out, row.dicom_dir)]
        assert {d.SeriesInstanceUID for d in dss} == {row.series_instance_uid}
        assert all(d.Modality == "CT" and d.Rows == row.rows for d in dss)
        ipp = np.array([[float(v) for v in d.ImagePositionPatient] for d in dss])
        order = np.argsort(ipp[:, 2])
        z = ipp[order, 2]
        # regular steps along z, exactly the table's step and count
        np.testing.assert_allclose(np.diff(z), row.slice_step_mm, atol=2e-3)
        iop = np.array([float(v) for v in dss[0].ImageOrientationPatient])
        tilt = np.degrees(np.arcsin(abs(iop[5])))
        assert tilt == pytest.approx(abs(row.gantry_tilt_deg), abs=0.01)
        # the header as the manufacturer writes it: GE with the opposite sign (cohort.geometry)
        sign = -1 if row.manufacturer.startswith("GE") else 1
        assert float(dss[0].GantryDetectorTilt) == pytest.approx(sign * row.gantry_tilt_deg)
        assert float(dss[0].PixelSpacing[0]) == pytest.approx(row.pixel_spacing_mm, rel=1e-5)
        assert float(dss[0].SliceThickness) == pytest.approx(row.slice_thickness_mm)
        # instance numbers run head to feet, so file order is not anatomical order
        inst = np.array([int(d.InstanceNumber) for d in dss])[order]
        assert list(inst) == list(range(len(dss), 0, -1))
        # the truth grid's slice 0 is the lowest slice at the image centre row
        centre_row = (row.rows - 1) / 2
        z_centre = z[0] + centre_row * float(dss[0].PixelSpacing[0]) * iop[5]
        assert row.first_slice_z_mm == pytest.approx(z_centre, abs=1e-3)


def test_simpleitk_reads_series_with_matching_geometry(varied_cohort, gt):
    out, _ = varied_cohort
    for row in gt[(gt["series_role"] != "localizer") & (gt["gantry_tilt_deg"] == 0)].itertuples():
        reader = sitk.ImageSeriesReader()
        names = reader.GetGDCMSeriesFileNames(str(out / row.dicom_dir))
        reader.SetFileNames(names)
        img = reader.Execute()
        assert img.GetSize() == (row.columns, row.rows, row.n_slices)
        assert img.GetSpacing()[2] == pytest.approx(row.slice_step_mm, abs=1e-3)
        assert img.GetOrigin()[2] == pytest.approx(row.first_slice_z_mm, abs=1e-3)
        labels = sitk.ReadImage(str(out / row.labels_path))
        assert labels.GetSize() == img.GetSize()
        np.testing.assert_allclose(labels.GetOrigin(), img.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(labels.GetSpacing(), img.GetSpacing(), atol=1e-4)
        np.testing.assert_allclose(labels.GetDirection(), img.GetDirection(), atol=1e-6)
        # CT numbers are plausible head-CT values: air outside, bone inside
        hu = sitk.GetArrayViewFromImage(img)
        assert hu.min() <= -900 and hu.max() >= 1000


def test_tilted_truth_is_on_the_axial_grid(varied_cohort, gt):
    out, _ = varied_cohort
    tilted = gt[(gt["gantry_tilt_deg"] != 0) & (gt["series_role"] != "localizer")]
    assert len(tilted)
    for row in tilted.itertuples():
        labels = sitk.ReadImage(str(out / row.labels_path))
        d = np.array(labels.GetDirection()).reshape(3, 3)
        np.testing.assert_allclose(d, np.eye(3), atol=1e-9)
        row_step = labels.GetSpacing()[1]
        expected = row.pixel_spacing_mm * np.cos(np.radians(row.gantry_tilt_deg))
        assert row_step == pytest.approx(expected, rel=1e-6)


def test_masks_labels_and_volumes_agree(varied_cohort, gt):
    out, _ = varied_cohort
    for row in gt[gt["series_role"] != "localizer"].itertuples():
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / row.mask_path)))
        labels_img = sitk.ReadImage(str(out / row.labels_path))
        labels = sitk.GetArrayFromImage(labels_img)
        np.testing.assert_array_equal(mask > 0, labels > 0)
        assert set(np.unique(labels)) <= {0, *SEGMENT_LABELS.values()}
        voxel = float(np.prod(labels_img.GetSpacing()))
        for name in SEGMENTS:
            count = np.count_nonzero(labels == SEGMENT_LABELS[name])
            assert count == getattr(row, f"{name}_voxels")
            # the NIfTI header keeps spacing in float32: volumes agree to that precision
            assert count * voxel == pytest.approx(getattr(row, f"{name}_mm3"), rel=1e-6)
        # every labelled voxel sits in the segment its slice says (distal boundary rule)
        for side in SIDES:
            cc, pl, ac = (getattr(row, f"{side}_{k}_slice") for k in LANDMARK_KINDS)
            bounds = [(-10**9, cc), (cc, pl), (pl, ac), (ac, 10**9)]
            for kind, (lo, hi) in zip(SEGMENT_KINDS, bounds, strict=True):
                code = SEGMENT_LABELS[f"{side}_{kind}"]
                ks = np.nonzero(labels == code)[0]
                assert ((ks >= lo) & (ks < hi)).all()


def test_landmarks_in_anatomical_order_and_inside_the_scan(gt):
    img = gt[gt["series_role"] != "localizer"]
    for side in SIDES:
        cc, pl, ac = (img[f"{side}_{k}_slice"] for k in LANDMARK_KINDS)
        assert (cc >= 0).all() and (cc < pl).all() and (pl < ac).all()
        assert (ac < img["n_slices"]).all()
        zc, zp, za = (img[f"{side}_{k}_z_mm"] for k in LANDMARK_KINDS)
        # the slice index is the nearest slice to the landmark's height
        k = np.rint((zc - img["first_slice_z_mm"]) / img["slice_step_mm"]).astype(int)
        np.testing.assert_array_equal(k, cc)


def test_privacy_fields_are_fake_but_present(varied_cohort, gt):
    out, _ = varied_cohort
    row = gt[gt["series_role"] == "primary"].iloc[0]
    ds = pydicom.dcmread(_files(out, row.dicom_dir)[0])
    assert "^" in str(ds.PatientName) and len(ds.PatientBirthDate) == 8
    assert "SYNTHETIC" in ds.StudyDescription and "SYNTHETIC" in ds.ImageComments
    localizers = gt[gt["series_role"] == "localizer"]
    loc = pydicom.dcmread(_files(out, localizers.iloc[0].dicom_dir)[0])
    assert list(loc.ImageType)[2] == "LOCALIZER"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "_SUCCESS.json":
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed_whatever_the_workers(tmp_path):
    cfg = SynthConfig(patients=2, seed=5, matrix=64, thicknesses_mm=(5.0,), workers=1,
                      localizer_p=1.0, second_series_p=1.0)
    generate_cohort(cfg, str(tmp_path / "a"))
    generate_cohort(SynthConfig(**{**cfg.__dict__, "workers": 2}), str(tmp_path / "b"))
    generate_cohort(SynthConfig(**{**cfg.__dict__, "seed": 6}), str(tmp_path / "c"))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


@pytest.mark.parametrize("syntax", ["implicit", "deflate", "rle", "jpeg-ls", "jpeg2000"])
def test_compressed_transfer_syntaxes_decode_to_the_same_pixels(tmp_path, syntax):
    base = dict(patients=1, seed=9, matrix=64, thicknesses_mm=(5.0,), workers=1,
                localizer_p=0.0, second_series_p=0.0, followup_p=0.0)
    generate_cohort(SynthConfig(**base), str(tmp_path / "ref"))
    generate_cohort(SynthConfig(**base, transfer_syntax=syntax), str(tmp_path / syntax))
    ref = sorted((tmp_path / "ref" / "dicom").rglob("*.dcm"))
    got = sorted((tmp_path / syntax / "dicom").rglob("*.dcm"))
    assert len(ref) == len(got) > 10
    for a, b in zip(ref, got, strict=True):
        da, db = pydicom.dcmread(a), pydicom.dcmread(b)
        assert db.file_meta.TransferSyntaxUID != da.file_meta.TransferSyntaxUID
        np.testing.assert_array_equal(da.pixel_array, db.pixel_array)


def test_ray_executor_writes_the_same_cohort(tmp_path, ray_local):
    cfg = SynthConfig(patients=2, seed=5, matrix=48, thicknesses_mm=(5.0,), workers=1,
                      localizer_p=1.0, second_series_p=1.0)
    generate_cohort(cfg, str(tmp_path / "local"))
    generate_cohort(cfg, str(tmp_path / "ray"), executor="ray")
    assert _digest(tmp_path / "local") == _digest(tmp_path / "ray")
