"""Run folders: parts, long tables, the newest row per series, unfinished runs."""

import pyarrow as pa

from cohort.anatomy import LANDMARKS, SEGMENTS
from cohort.write.runs import (
    RunWriter,
    finished_keys,
    latest_series,
    long_rows,
    published_runs,
    read_table,
    unfinished_runs,
)


def _row(run_id, key, status="ok", volumes=True):
    row = {"run_id": run_id, "series_key": key, "series_uid": key, "status": status,
           "volumes_computed": volumes, "risk_group": "low",
           "low_confidence_landmarks": ["left_petrolingual"]}
    for i, n in enumerate(LANDMARKS):
        row.update({f"{n}_slice": i, f"{n}_z_mm": float(i), f"{n}_prob": 0.9})
    for i, s in enumerate(SEGMENTS):
        row.update({f"{s}_mm3": float(i), f"{s}_voxels": i, f"{s}_plaques": 1,
                    f"{s}_peak_hu": 500.0})
    return row


def test_long_rows_follow_the_wide_row():
    marks, segs = long_rows(_row("r", "k"))
    assert [m["landmark"] for m in marks] == list(LANDMARKS)
    assert {(m["side"], m["kind"]) for m in marks} >= {("left", "petrolingual")}
    assert [m["low_confidence"] for m in marks].count(True) == 1
    assert [s["volume_mm3"] for s in segs] == [float(i) for i in range(8)]
    assert long_rows(_row("r", "k", status="error")) == ([], [])
    assert long_rows(_row("r", "k", volumes=False))[1] == []


def test_parts_marker_and_newest_row(tmp_path):
    out = str(tmp_path)
    w = RunWriter(out, "20260101T000000Z-aaaaaa", part_rows=2)
    for k, st in (("a", "ok"), ("b", "error"), ("c", "ok")):
        w.add(_row("20260101T000000Z-aaaaaa", k, st))
    assert published_runs(out) == [] and unfinished_runs(out) == ["20260101T000000Z-aaaaaa"]
    w.publish({"what": "test"})
    assert w.parts == 2
    assert read_table(out, "series").num_rows == 3
    assert read_table(out, "landmarks").num_rows == 12
    assert finished_keys(out) == {"a", "b", "c"}
    assert finished_keys(out, retry_failed=True) == {"a", "c"}
    w2 = RunWriter(out, "20260102T000000Z-bbbbbb")
    w2.add(_row("20260102T000000Z-bbbbbb", "b", "ok"))
    w2.publish({})
    latest = latest_series(read_table(out, "series")).to_pylist()
    assert [(r["series_key"], r["status"]) for r in latest] == [
        ("a", "ok"), ("b", "ok"), ("c", "ok")]
    assert isinstance(read_table(out, "series"), pa.Table)


def test_finished_means_same_model_volumes_when_asked_and_still_not_selected(tmp_path):
    out = str(tmp_path)
    w = RunWriter(out, "20260101T000000Z-aaaaaa")
    rows = [_row("20260101T000000Z-aaaaaa", "vol"), _row("20260101T000000Z-aaaaaa", "novol",
                                                         volumes=False),
            _row("20260101T000000Z-aaaaaa", "skip", status="skipped")]
    for r in rows:
        w.add({**r, "model_sha256": "m1"})
    w.publish({})
    assert finished_keys(out, model_sha256="m1") == {"vol", "novol", "skip"}
    # masks added: only the series measured without them run again
    assert finished_keys(out, model_sha256="m1", need_volumes=True) == {"vol", "skip"}
    # another model: every measured series runs again; the index now selects "skip"
    assert finished_keys(out, model_sha256="m2", selected=frozenset({"skip"})) == set()


def test_another_segmenter_measures_again_external_masks_stay(tmp_path):
    out = str(tmp_path)
    w = RunWriter(out, "20260101T000000Z-aaaaaa")
    for key, src in (("ext", "external"), ("old", "segmenter vit-default sha256:aaa"),
                     ("same", "segmenter vit-default sha256:bbb")):
        w.add({**_row("20260101T000000Z-aaaaaa", key), "model_sha256": "m1",
               "mask_source": src})
    w.publish({})
    done = finished_keys(out, model_sha256="m1", need_volumes=True,
                         mask_source="segmenter vit-default sha256:bbb")
    assert done == {"ext", "same"}
    segs = read_table(out, "segments").to_pandas()
    assert set(segs["mask_source"]) == {"external", "segmenter vit-default sha256:aaa",
                                        "segmenter vit-default sha256:bbb"}
