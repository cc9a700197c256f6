"""A run stopped before it published: the parts it committed are published as an
interrupted run (its series finished, once each), what no committed row refers to is
deleted, and a run that committed nothing is removed."""

from __future__ import annotations

import json

import pytest

from cohort.write import runs as runs_module
from cohort.write.recovery import recover_unfinished
from cohort.write.runs import (
    RUN_RECORD,
    RunWriter,
    finished_keys,
    published_runs,
    read_table,
    run_manifest,
    unfinished_runs,
)

KILLED = "20260101T000000Z-aaaaaa"
NEXT = "20260102T000000Z-bbbbbb"


def _row(key: str, status: str = "ok") -> dict:
    return {"run_id": KILLED, "series_key": key, "series_uid": key, "status": status,
            "error_code": {"skipped": "not_preferred", "error": "no_skull"}.get(status),
            "volumes_computed": status == "ok", "left_cervical_mm3": 1.5}


@pytest.fixture
def killed(tmp_path):
    """A run killed while writing its third part: two parts committed (three series), the
    third's landmarks written but not its series file, a temporary file of a write cut
    short, and per-series files of committed series and of series still in flight."""
    out = tmp_path / "out"
    w = RunWriter(str(out), KILLED, part_rows=2)
    w.begin({"what": "cohort run", "run_id": KILLED, "model": {"name": "dst-tiny"},
             "counts": {"finished_earlier": 4, "left_for_later": 0},
             "series_in_manifest": 10})
    for key, status in (("1.1", "skipped"), ("1.2", "ok"), ("1.3#2", "error")):
        w.add(_row(key, status))
    w.flush()
    run = out / "runs" / KILLED
    (run / "landmarks" / "part-00002.parquet").write_bytes(
        (run / "landmarks" / "part-00000.parquet").read_bytes())
    (run / "series" / ".part-00002.parquet.0a1b.tmp").write_bytes(b"half")
    for rel in ("qc/1.2.png", "qc/1.9.png", "masks/1.3_2.nii.gz", "masks/1.9.nii.gz",
                "dicom/1.2/seg.dcm", "dicom/1.9/seg.dcm", "dicom/1.9/sr.dcm"):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(b"x")
    return out


def test_the_committed_parts_of_a_killed_run_are_published_as_interrupted(killed):
    assert published_runs(str(killed)) == [] and unfinished_runs(str(killed)) == [KILLED]
    got = recover_unfinished(str(killed), NEXT)
    assert got.published == {KILLED: 3} and got.removed == []
    assert published_runs(str(killed)) == [KILLED]
    series = read_table(str(killed), "series").to_pylist()
    assert sorted((r["series_key"], r["status"]) for r in series) == [
        ("1.1", "skipped"), ("1.2", "ok"), ("1.3#2", "error")]
    assert read_table(str(killed), "landmarks").num_rows == 6  # the ok row's, once
    marker = run_manifest(str(killed), KILLED)
    assert marker["model"] == {"name": "dst-tiny"}  # from the run's record
    assert marker["counts"] == {"ok": 1, "skipped": 1, "error": 1, "finished_earlier": 4,
                                "left_for_later": 0}
    assert marker["interrupted"]["recovered_by"] == NEXT
    assert (marker["interrupted"]["rows"], marker["interrupted"]["not_written"]) == (3, 3)
    run = killed / "runs" / KILLED
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert left == ["_SUCCESS.json", RUN_RECORD, "dicom/1.2/seg.dcm",
                    "landmarks/part-00000.parquet", "landmarks/part-00001.parquet",
                    "masks/1.3_2.nii.gz", "qc/1.2.png",
                    "segments/part-00000.parquet", "segments/part-00001.parquet",
                    "series/part-00000.parquet", "series/part-00001.parquet"]
    # its series are finished: the next run leaves them alone (the error unless retried)
    assert finished_keys(str(killed)) == {"1.1", "1.2", "1.3#2"}
    assert finished_keys(str(killed), retry_failed=True) == {"1.1", "1.2"}
    assert recover_unfinished(str(killed), "later").published == {}  # published once


def test_a_run_that_committed_nothing_is_removed(tmp_path, caplog):
    out = tmp_path / "out"
    w = RunWriter(str(out), KILLED)
    w.begin({"what": "cohort run", "run_id": KILLED})
    (out / "runs" / KILLED / "series").mkdir()
    (out / "runs" / KILLED / "series" / "part-00000.parquet").write_bytes(b"half")
    caplog.set_level("WARNING")
    got = recover_unfinished(str(out), NEXT)
    assert got.removed == [KILLED] and got.published == {}
    assert not (out / "runs" / KILLED).exists()
    assert any("cannot be read" in r.getMessage() for r in caplog.records)


def test_a_part_is_committed_by_its_series_file_written_last(tmp_path, monkeypatch):
    written = []
    real = runs_module.write_bytes

    def record(url, data, options=None):
        written.append(url.rsplit("/", 2)[-2])
        real(url, data, options)

    monkeypatch.setattr(runs_module, "write_bytes", record)
    w = RunWriter(str(tmp_path), KILLED, part_rows=10)
    w.begin({"run_id": KILLED})
    w.add(_row("1.2"))
    w.flush()
    assert written == [KILLED, "landmarks", "segments", "series"]
    assert json.loads((tmp_path / "runs" / KILLED / RUN_RECORD).read_text()) == {
        "run_id": KILLED}


def test_a_part_is_written_once_its_first_row_waited_part_seconds(tmp_path, monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 61.0, 62.0, 62.5])
    monkeypatch.setattr(runs_module.time, "monotonic", lambda: next(clock))
    w = RunWriter(str(tmp_path), KILLED, part_rows=500, part_seconds=60.0)
    w.add(_row("1.1"))  # arrives at 0 s
    w.add(_row("1.2"))  # 2 s after the first: kept
    assert w.parts == 0
    w.add(_row("1.3"))  # 61 s after the first: the three are written
    assert (w.parts, w.rows) == (1, 3)
    w.add(_row("1.4"))  # a new part starts at 62 s
    assert (w.parts, len(w.pending)) == (1, 1)


def test_a_killed_run_on_s3_is_recovered_the_same_way(s3_server):
    options = s3_server.storage_options()
    out = f"{s3_server.make_bucket('recovery')}/out"
    w = RunWriter(out, KILLED, options, part_rows=1)
    w.begin({"what": "cohort run", "run_id": KILLED})
    w.add(_row("1.2"))
    fs = s3_server.filesystem()
    run = f"recovery/out/runs/{KILLED}"
    fs.pipe({f"{run}/landmarks/part-00001.parquet": b"uncommitted",
             f"{run}/qc/1.2.png": b"png", f"{run}/qc/1.9.png": b"png",
             f"{run}/dicom/1.9/seg.dcm": b"dcm"})
    got = recover_unfinished(out, NEXT, options)
    assert got.published == {KILLED: 1}
    fs.invalidate_cache()
    left = sorted(p.removeprefix(run + "/") for p in fs.find(run))
    assert left == ["_SUCCESS.json", RUN_RECORD, "landmarks/part-00000.parquet", "qc/1.2.png",
                    "segments/part-00000.parquet", "series/part-00000.parquet"]
    assert run_manifest(out, KILLED, options)["counts"]["ok"] == 1
    assert finished_keys(out, options) == {"1.2"}
