"""SEG and SR stored into a real Orthanc (DICOMweb plugin) by STOW-RS and retrieved by
QIDO-RS / WADO-RS; an unreachable server is an error naming its URL."""

from __future__ import annotations

import pydicom
import pytest

from cohort.export.dicomweb import PASSWORD_ENV, USER_ENV, DicomWebConfig, DicomWebError, push
from tests.export.conftest import require_tool
from tests.export.helpers import export


@pytest.fixture(scope="module")
def orthanc():
    require_tool("Orthanc", "orthanc")
    import os

    from cohort.testing.orthanc import PLUGIN, Orthanc
    if not os.path.exists(PLUGIN):
        pytest.fail("the Orthanc DICOMweb plugin is missing: apt-get install -y "
                    "orthanc-dicomweb", pytrace=False)
    with Orthanc() as server:
        yield server


def test_stow_then_qido_and_wado_give_back_the_same_objects(export_cohort, orthanc,
                                                              tmp_path, monkeypatch):
    from cohort.testing.orthanc import PASSWORD, USER

    out, truth = export_cohort
    seg_path, sr_path, _, _, _, _ = export(out, truth, 1, tmp_path)
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    config = DicomWebConfig(orthanc.dicomweb)
    assert push(config, [str(seg_path), str(sr_path)]) == 2
    from cohort.export.dicomweb import client

    web = client(config)
    seg, sr = pydicom.dcmread(seg_path), pydicom.dcmread(sr_path)
    found = web.search_for_instances(study_instance_uid=seg.StudyInstanceUID)
    uids = {i["00080018"]["Value"][0] for i in found}
    assert uids == {seg.SOPInstanceUID, sr.SOPInstanceUID}
    for ds in (seg, sr):
        back = web.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                     ds.SOPInstanceUID)
        assert back.SOPClassUID == ds.SOPClassUID
        assert back.PatientID == ds.PatientID
    back = web.retrieve_instance(seg.StudyInstanceUID, seg.SeriesInstanceUID,
                                 seg.SOPInstanceUID)
    assert back.PixelData == seg.PixelData  # the labels, bit for bit


def test_wrong_password_and_unreachable_server_are_clear_errors(export_cohort, orthanc,
                                                                tmp_path, monkeypatch,
                                                                caplog):
    out, truth = export_cohort
    seg_path, _, _, _, _, _ = export(out, truth, 0, tmp_path)
    monkeypatch.setenv(USER_ENV, "cohort")
    monkeypatch.setenv(PASSWORD_ENV, "wrong-secret")
    with pytest.raises(DicomWebError, match="refused the store \\(HTTP 401\\)") as e:
        push(DicomWebConfig(orthanc.dicomweb), [str(seg_path)])
    assert "wrong-secret" not in str(e.value) and "wrong-secret" not in caplog.text
    dead = "http://127.0.0.1:9/dicom-web"
    with pytest.raises(DicomWebError, match=f"{dead} cannot be reached"):
        push(DicomWebConfig(dead), [str(seg_path)])
    assert seg_path.exists()  # the local file stays
