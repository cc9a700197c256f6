"""The SEG of a series: valid (dciodvfy), the same labels read back with highdicom, at the
right place in patient space (also for a resampled, gantry-tilted series), de-identified."""

from __future__ import annotations

import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest

from cohort.anatomy import SEGMENT_LABELS
from cohort.errors import ConfigError
from cohort.export.dicom_seg import build_seg
from cohort.export.headers import Pseudonyms, read_headers
from cohort.export.provenance import Provenance
from tests.export.helpers import PATIENT_KEY, STUDY_KEY, export, series_of


def dciodvfy_errors(tool: str, path) -> list[str]:
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if "Error" in line]


def world_labels(points: np.ndarray, values: np.ndarray) -> set:
    """{(x, y, z rounded to 0.01 mm, label)} of labelled voxels."""
    return {(*np.round(p, 2), int(v)) for p, v in zip(points, values, strict=True)}


def grid_points(grid, idx: np.ndarray) -> np.ndarray:
    """World points of ``[k, j, i]`` indices on a cohort grid."""
    k, j, i = idx.T
    return (np.asarray(grid.origin) + np.outer(i, grid.col_step) + np.outer(j, grid.row_step)
            + np.outer(k, grid.slice_step))


@pytest.mark.parametrize("which", [0, 1], ids=["regular", "tilted"])
def test_seg_is_valid_and_reads_back_to_the_same_labels(export_cohort, dciodvfy, tmp_path,
                                                       which):
    out, truth = export_cohort
    seg_path, _, _, volume, labels, _ = export(out, truth, which, tmp_path)
    assert dciodvfy_errors(dciodvfy, seg_path) == []
    seg = hd.seg.segread(seg_path)
    assert seg.number_of_segments == 8
    back = seg.get_volume(combine_segments=True)
    idx = np.argwhere(back.array > 0)
    homog = np.c_[idx, np.ones(len(idx))]
    got = world_labels((back.affine @ homog.T).T[:, :3], back.array[tuple(idx.T)])
    ours = np.argwhere(labels > 0)
    want = world_labels(grid_points(volume.grid, ours), labels[tuple(ours.T)])
    assert len(want) > 20  # the fixture has calcium in several segments
    assert got == want


def test_tilted_seg_overlays_the_source_images(export_cohort, tmp_path):
    """Every calcium voxel of the tilted series' SEG, placed in patient space by the SEG's
    own geometry, falls on calcium in the acquired (tilted, not resampled) source slices."""
    out, truth = export_cohort
    seg_path, _, _, _, labels, files = export(out, truth, 1, tmp_path)
    seg = hd.seg.segread(seg_path)
    back = seg.get_volume(combine_segments=True)
    idx = np.argwhere(back.array > 0)
    points = (back.affine @ np.c_[idx, np.ones(len(idx))].T).T[:, :3]
    hu_at, hu_off = [], []
    slices = [pydicom.dcmread(f) for f in files]
    ipp = np.array([s.ImagePositionPatient for s in slices], dtype=float)
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    dy, dx = (float(v) for v in slices[0].PixelSpacing)
    assert abs(np.degrees(np.arccos(abs(normal[2])))) > 10  # the source really is tilted

    def sample(p):
        s = int(np.argmin(np.abs((p - ipp) @ normal)))
        d = p - ipp[s]
        c, r = int(round(d @ row_dir / dx)), int(round(d @ col_dir / dy))
        im = slices[s]
        return float(im.pixel_array[r, c]) * float(im.RescaleSlope) + float(im.RescaleIntercept)

    for p in points:
        hu_at.append(sample(p))
        hu_off.append(sample(p + np.array([0.0, 0.0, 12.0])))  # 12 mm higher: off the plaque
    assert len(hu_at) == int((labels > 0).sum())
    assert np.median(hu_at) >= 130  # the annotation rule: calcium reads >= 130 HU
    assert np.median(hu_off) < np.median(hu_at) - 100
    # the SEG references the source series (its frames lie on no source slice)
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == truth.iloc[1]["series_instance_uid"]
    assert {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence} == \
        {s.SOPInstanceUID for s in slices}
    assert all(len(f.DerivationImageSequence) == 0 for f in seg.PerFrameFunctionalGroupsSequence)
    assert seg.FrameOfReferenceUID == slices[0].FrameOfReferenceUID


def test_regular_seg_frames_cite_the_source_slice_they_lie_on(export_cohort, tmp_path):
    out, truth = export_cohort
    seg_path, _, _, _, _, files = export(out, truth, 0, tmp_path)
    seg = pydicom.dcmread(seg_path)
    position = {(ds := pydicom.dcmread(f, stop_before_pixels=True)).SOPInstanceUID:
                np.array(ds.ImagePositionPatient, dtype=float) for f in files}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        src = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.allclose(position[src], frame.PlanePositionSequence[0].ImagePositionPatient,
                           atol=1e-3)


def test_seg_carries_the_tables_pseudonyms_and_describes_the_segments(export_cohort,
                                                                      tmp_path):
    out, truth = export_cohort
    seg_path, _, _, _, _, files = export(out, truth, 0, tmp_path)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    raw = seg_path.read_bytes()
    assert str(source.PatientName) and str(source.PatientName).encode() not in raw
    assert source.PatientBirthDate and source.PatientBirthDate.encode() not in raw
    assert source.StudyInstanceUID.encode() not in raw
    seg = pydicom.dcmread(seg_path)
    assert str(seg.PatientName) == f"{PATIENT_KEY}^" and seg.PatientID == PATIENT_KEY
    assert seg.PatientBirthDate == ""
    assert seg.StudyInstanceUID == f"2.25.{int(STUDY_KEY, 16)}"
    assert seg.SeriesDescription.startswith("SYNTHETIC")
    d = {s.SegmentNumber: s for s in seg.SegmentSequence}
    cav = d[SEGMENT_LABELS["left_cavernous"]]
    assert cav.SegmentLabel == "left cavernous ICA calcium"
    assert cav.SegmentedPropertyTypeCodeSequence[0].CodeValue == "18115005"
    region = cav.AnatomicRegionSequence[0]
    assert (region.CodeValue, region.CodingSchemeDesignator) == ("8752000", "SCT")
    assert region.AnatomicRegionModifierSequence[0].CodeValue == "7771000"  # left
    right = d[SEGMENT_LABELS["right_petrous"]].AnatomicRegionSequence[0]
    assert right.CodeValue == "86117002"
    assert right.AnatomicRegionModifierSequence[0].CodeValue == "24028007"  # right
    alg = cav.SegmentationAlgorithmIdentificationSequence[0]
    assert alg.AlgorithmName == "cohort dst-small"
    assert "sha256:abababababab" in alg.AlgorithmVersion
    assert "segmenter vit-default sha256:0123456789ab" in alg.AlgorithmParameters


def test_labels_off_their_grid_are_refused_naming_the_series(export_cohort):
    out, truth = export_cohort
    files, volume, labels, r = series_of(out, truth, 0)
    headers, _ = read_headers(files[:2], Pseudonyms("p", STUDY_KEY))
    prov = Provenance("run", "m", "00" * 32, "synthetic phantoms", "external", "0")
    with pytest.raises(ConfigError, match="1.2.3.4.*shape"):
        build_seg(headers, labels[:-1], volume.grid, prov, "1.2.3.4")
    with pytest.raises(ConfigError, match="1.2.3.4: labels must be 0..8"):
        build_seg(headers, np.full(volume.grid.shape, 9, np.uint8), volume.grid, prov,
                  "1.2.3.4")
