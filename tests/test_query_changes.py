"""The ``patient_changes`` view of `cohort query`: follow-up studies of the same patient,
published as `cohort run` publishes them (RunWriter), become one row per patient and
segment with the first and last study, the change, its annual rate and whether one model
measured both."""

from __future__ import annotations

import math

import pytest

from cohort.anatomy import SEGMENTS
from cohort.query import query
from cohort.write.runs import RunWriter

RUN1, RUN2 = "20260101T000000Z-aaaaaa", "20260301T000000Z-bbbbbb"
SEG = "segmenter default sha256:aaaaaaaaaaaa"


def _row(run_id, key, patient, study, date, volumes, *, sha="d" * 64, source=SEG,
         width=None, status="ok"):
    row = {"run_id": run_id, "series_key": key, "series_uid": key, "patient_key": patient,
           "study_key": study, "study_date": date, "status": status,
           "volumes_computed": status == "ok", "model_name": "dst", "model_sha256": sha,
           "mask_source": source}
    for name in SEGMENTS:
        v = volumes.get(name, 0.0)
        row[f"{name}_mm3"] = v
        if width is not None:
            row[f"{name}_mm3_low"], row[f"{name}_mm3_high"] = max(0.0, v - width), v + width
    return row


def _publish(out, run_id, rows):
    writer = RunWriter(str(out), run_id)
    for r in rows:
        writer.add(r)
    writer.publish({"run_id": run_id, "counts": {"ok": len(rows)}})


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("changes")
    _publish(out, RUN1, [
        # A: three studies; grows on the left petrous, shrinks on the right cavernous
        _row(RUN1, "a1", "A", "A-s1", "20150310", {"left_petrous": 20.0,
                                                   "right_cavernous": 12.0}, width=1.0),
        _row(RUN1, "a2", "A", "A-s2", "20160310", {"left_petrous": 25.0,
                                                   "right_cavernous": 11.0}, width=1.0),
        _row(RUN1, "a3", "A", "A-s3", "20170309", {"left_petrous": 40.0,
                                                   "right_cavernous": 11.5}, width=1.0),
        # B: one study only: no change to report
        _row(RUN1, "b1", "B", "B-s1", "20180101", {"left_cervical": 5.0}),
        # C: two studies measured by different segmenters (external masks at follow-up)
        _row(RUN1, "c1", "C", "C-s1", "20190601", {"right_supraclinoid": 3.0}),
        # D: a study that failed is not a measurement
        _row(RUN1, "d1", "D", "D-s1", "20120101", {"left_cavernous": 9.0}),
        _row(RUN1, "d2", "D", "D-s2", "20130101", {}, status="error"),
        # E: a first run of a series whose study date was unreadable, re-run below
        _row(RUN1, "e2", "E", "E-s2", "", {"left_cavernous": 1.0}),
        _row(RUN1, "e1", "E", "E-s1", "20200101", {"left_cavernous": 4.0}),
    ])
    _publish(out, RUN2, [
        _row(RUN2, "c2", "C", "C-s2", "20210601", {"right_supraclinoid": 7.0},
             source="external"),
        # E's second study on the same day as the first: a change without a rate
        _row(RUN2, "e2", "E", "E-s2", "20200101", {"left_cavernous": 6.0}),
    ])
    return out


def _changes(out):
    rows = query(str(out), "SELECT * FROM patient_changes").to_pylist()
    return {(r["patient_key"], r["segment"]): r for r in rows}


def test_one_row_per_patient_and_segment_for_patients_followed_up(out):
    rows = _changes(out)
    assert {p for p, _ in rows} == {"A", "C", "E"}  # B: one study; D: its second failed
    assert len(rows) == 3 * len(SEGMENTS)
    assert all(r["n_studies"] == (3 if p == "A" else 2) for (p, _), r in rows.items())


def test_first_and_last_study_give_the_change_and_its_annual_rate(out):
    rows = _changes(out)
    grow, shrink = rows[("A", "left_petrous")], rows[("A", "right_cavernous")]
    assert str(grow["first_study_date"]) == "2015-03-10"
    assert str(grow["last_study_date"]) == "2017-03-09"
    assert grow["change_mm3"] == pytest.approx(20.0) and grow["annual_rate_mm3_per_year"] > 0
    assert grow["annual_rate_mm3_per_year"] == pytest.approx(20.0 / grow["years"])
    assert grow["years"] == pytest.approx(730 / 365.25)
    assert shrink["change_mm3"] == pytest.approx(-0.5)
    assert shrink["annual_rate_mm3_per_year"] < 0
    none = rows[("A", "left_cervical")]
    assert none["change_mm3"] == 0 and none["annual_rate_mm3_per_year"] == 0


def test_intervals_say_whether_the_change_outlives_the_uncertainty(out):
    rows = _changes(out)
    grow, shrink = rows[("A", "left_petrous")], rows[("A", "right_cavernous")]
    assert grow["change_beyond_intervals"] is True
    assert (grow["change_low_mm3"], grow["change_high_mm3"]) == pytest.approx((18.0, 22.0))
    assert shrink["change_beyond_intervals"] is False  # -0.5 within +-1 on both ends
    assert rows[("C", "right_supraclinoid")]["change_beyond_intervals"] is None  # no intervals


def test_a_change_measured_by_two_segmenters_is_marked(out):
    rows = _changes(out)
    c = rows[("C", "right_supraclinoid")]
    assert c["same_model"] is False and c["change_mm3"] == pytest.approx(4.0)
    assert (c["first_mask_source"], c["last_mask_source"]) == (SEG, "external")
    assert rows[("A", "left_petrous")]["same_model"] is True


def test_a_rerun_series_counts_once_and_same_day_studies_have_no_rate(out):
    e = _changes(out)[("E", "left_cavernous")]
    # same day: ordered by series key, so the result does not depend on the run order
    assert e["n_studies"] == 2 and e["change_mm3"] == pytest.approx(2.0)
    assert (e["first_series_key"], e["last_series_key"]) == ("e1", "e2")
    assert e["years"] == 0 and e["annual_rate_mm3_per_year"] is None
    assert not math.isnan(e["change_mm3"])
