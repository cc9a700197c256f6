"""`cohort run --dicom-seg --dicomweb`: the job writes a SEG and SR per series with volumes
and pushes them to a real Orthanc; an unreachable server fails after the run published."""

from __future__ import annotations

import pydicom
import pytest

from cohort.errors import ConfigError
from cohort.export.dicomweb import PASSWORD_ENV, USER_ENV, DicomWebError
from cohort.pipeline import RunConfig, run_cohort
from cohort.write.identity import IdentityConfig
from tests.export.test_dicomweb import orthanc  # noqa: F401  (the fixture)


def test_run_writes_and_pushes_seg_and_sr(export_cohort, tiny_checkpoint, ray_local,
                                          orthanc, tmp_path, monkeypatch):  # noqa: F811
    from cohort.testing.orthanc import PASSWORD, USER

    out, truth = export_cohort
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    config = RunConfig(model=str(tiny_checkpoint), masks=str(out / "masks"), qc="none",
                       dicom_seg=True, dicomweb=orthanc.dicomweb,
                       identity=IdentityConfig(salt="test-salt"))
    report = run_cohort(str(out / "dicom"), str(tmp_path / "res"), config)
    assert report.counts["ok"] == 2
    segs = sorted((tmp_path / "res" / "runs" / report.run_id / "dicom").glob("*/seg.dcm"))
    assert len(segs) == 2
    from cohort.export.dicomweb import DicomWebConfig, client

    web = client(DicomWebConfig(orthanc.dicomweb))
    for seg_path in segs:
        seg = pydicom.dcmread(seg_path)
        assert "SYNTHETIC" in seg.SeriesDescription
        found = web.search_for_instances(study_instance_uid=seg.StudyInstanceUID)
        assert seg.SOPInstanceUID in {i["00080018"]["Value"][0] for i in found}
        assert (seg_path.parent / "sr.dcm").exists()


def test_dicomweb_needs_dicom_seg():
    with pytest.raises(ConfigError, match="--dicomweb .* add --dicom-seg"):
        RunConfig(masks="m", dicomweb="http://x/dicom-web")


@pytest.mark.slow
def test_unreachable_server_fails_after_publishing(export_cohort, tiny_checkpoint, ray_local,
                                                   tmp_path):
    out, _ = export_cohort
    config = RunConfig(model=str(tiny_checkpoint), masks=str(out / "masks"), qc="none",
                       dicom_seg=True, dicomweb="http://127.0.0.1:9/dicom-web",
                       identity=IdentityConfig(salt="test-salt"))
    with pytest.raises(DicomWebError, match="http://127.0.0.1:9/dicom-web cannot be reached"):
        run_cohort(str(out / "dicom"), str(tmp_path / "res"), config)
    runs = list((tmp_path / "res" / "runs").glob("*/_SUCCESS.json"))
    assert len(runs) == 1  # published, and the SEG/SR stay there
    assert len(list(runs[0].parent.glob("dicom/*/sr.dcm"))) == 2
