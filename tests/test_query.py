"""`cohort query` as a user types it, over two small runs published with RunWriter: DuckDB's
whole error message, whole values when piped, exact CSV and JSON Lines, QC pictures that can
be found from the output folder, NULL printed as NULL, and an interrupted run in the runs
view."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest

from cohort.cli import main
from cohort.query import query
from cohort.write.recovery import recover_unfinished
from cohort.write.runs import RunWriter

OLD, NEW = "20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb"
# a real-looking UID: 66 characters, longer than the table's 60-character cut
UID = "1.2.840.113619.2.55.3.604688119.969.1234567890.123456789012345678901"
DETAIL = ("series 1.3.6.1.4.1.9590.100.1.2.77 has 3 slices; a head CT needs at least 20 "
          "(check the series selection)")


def _publish(out, run_id, rows, **manifest):
    writer = RunWriter(str(out), run_id)
    for row in rows:
        writer.add({"run_id": run_id, **row})
    writer.publish({"run_id": run_id, "counts": {"ok": 1}, **manifest})


@pytest.fixture
def out(tmp_path):
    """An older run (the error row, later retried) and a newer one (the ok row, and the
    retried series, now ok), as `cohort run` stores them: QC pictures relative to the run."""
    out = tmp_path / "out"
    _publish(out, OLD, [{"series_key": "1.3.6.1.4.1.9590.100.1.2.77", "status": "error",
                         "error_code": "too_few_slices", "error_detail": DETAIL,
                         "qc_flags": ["too_few_slices"]}])
    _publish(out, NEW, [
        {"series_key": UID, "series_uid": UID, "status": "ok", "n_slices": 176,
         "n_plaques": None, "qc_flags": ["low_confidence", "tilt_corrected"],
         "qc_picture": f"qc/{UID}.png", "label_map": f"labels/{UID}.nii.gz"},
        {"series_key": "1.3.6.1.4.1.9590.100.1.2.77", "status": "ok", "n_slices": 40,
         "n_plaques": 2, "qc_flags": []}])
    (out / "runs" / NEW / "qc").mkdir()
    (out / "runs" / NEW / "qc" / f"{UID}.png").write_bytes(b"\x89PNG\r\n")
    return out


def _query(capsys, out, sql, *options):
    code = main(["query", str(out), sql, *options])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("sql, says", [
    ("SELECT * FROM serie", 'Did you mean "series'),
    ("SELECT nope FROM series", "Candidate bindings"),
    ("SELECT 'a'::INT", "Could not convert string 'a' to INT32"),  # raised while fetching
])
def test_errors_keep_duckdbs_whole_message_and_name_the_views(out, capsys, sql, says):
    code, stdout, err = _query(capsys, out, sql)
    assert code == 2 and stdout == ""
    assert err.startswith("cohort: error: query failed: ") and says in err
    assert err.rstrip().endswith("views: series, series_all, landmarks, segments, runs, "
                                "patient_changes")
    assert "Traceback" not in err


def test_table_is_whole_when_piped_or_full_and_cut_on_a_terminal(out, capsys, monkeypatch):
    sql = "SELECT series_key, error_detail FROM series_all ORDER BY run_id"
    code, piped, _ = _query(capsys, out, sql)  # capsys: stdout is not a terminal
    assert code == 0 and UID in piped and DETAIL in piped
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["query", str(out), sql]) == 0
    cut = capsys.readouterr().out
    assert UID not in cut and UID[:50] in cut and DETAIL not in cut
    assert main(["query", str(out), sql, "--full"]) == 0
    assert capsys.readouterr().out == piped


def test_csv_writes_integers_as_integers_and_lists_as_json(out, capsys):
    code, text, _ = _query(capsys, out, "SELECT series_key, n_slices, n_plaques, qc_flags "
                           "FROM series ORDER BY n_slices", "--csv")
    assert code == 0
    assert text.splitlines() == [
        "series_key,n_slices,n_plaques,qc_flags",
        '1.3.6.1.4.1.9590.100.1.2.77,40,2,[]',
        f'{UID},176,,"[""low_confidence"",""tilt_corrected""]"',
    ]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert json.loads(rows[1]["qc_flags"]) == ["low_confidence", "tilt_corrected"]


def test_json_lines_keep_integers_lists_and_nulls(out, capsys):
    code, text, _ = _query(capsys, out, "SELECT series_key, n_slices, n_plaques, qc_flags, "
                           "count(*) OVER () AS n FROM series ORDER BY n_slices", "--json")
    assert code == 0
    assert [json.loads(line) for line in text.splitlines()] == [
        {"series_key": "1.3.6.1.4.1.9590.100.1.2.77", "n_slices": 40, "n_plaques": 2,
         "qc_flags": [], "n": 2},
        {"series_key": UID, "n_slices": 176, "n_plaques": None,
         "qc_flags": ["low_confidence", "tilt_corrected"], "n": 2},
    ]
    assert '"n_slices":176,' in text  # not 176.0


def test_json_has_no_nan(out, capsys):
    code, text, _ = _query(capsys, out, "SELECT 'nan'::DOUBLE AS x, 1.5 AS y", "--json")
    assert code == 0 and json.loads(text) == {"x": None, "y": 1.5}


def test_csv_and_json_exclude_each_other(out, capsys):
    with pytest.raises(SystemExit) as e:
        main(["query", str(out), "SELECT 1", "--csv", "--json"])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_qc_picture_and_label_map_are_relative_to_the_output(out, capsys):
    code, text, _ = _query(capsys, out, "SELECT qc_picture, label_map FROM series "
                           "WHERE series_key = '" + UID + "'", "--json")
    assert code == 0
    assert json.loads(text) == {"qc_picture": f"runs/{NEW}/qc/{UID}.png",
                                "label_map": f"runs/{NEW}/labels/{UID}.nii.gz"}
    assert (out / json.loads(text)["qc_picture"]).read_bytes() == b"\x89PNG\r\n"
    code, text, _ = _query(capsys, out, "SELECT count(qc_picture) AS n FROM series_all",
                           "--csv")
    assert text.splitlines() == ["n", "1"]


def test_paths_already_relative_to_the_output_are_kept(tmp_path, capsys):
    picture = f"runs/{NEW}/qc/x.png"
    _publish(tmp_path, NEW, [{"series_key": "x", "status": "ok", "qc_picture": picture}])
    code, text, _ = _query(capsys, tmp_path, "SELECT qc_picture FROM series", "--csv")
    assert code == 0 and text.splitlines() == ["qc_picture", picture]


def test_the_table_prints_null_as_null_and_nan_as_nan(out, capsys):
    code, text, _ = _query(capsys, out, "SELECT NULL::DOUBLE AS a, 'nan'::DOUBLE AS b, "
                           "NULL::INT AS c, NULL::VARCHAR AS d, 2.5 AS e")
    assert code == 0
    assert text.split() == ["a", "b", "c", "d", "e", "NULL", "NaN", "NULL", "NULL", "2.5"]


def test_an_interrupted_run_reads_as_interrupted_without_seconds(tmp_path, capsys):
    """A run killed after one part (two of its five series written), recovered and
    published by the next run, which ends normally."""
    out = tmp_path / "out"
    killed = RunWriter(str(out), OLD, part_rows=2)
    killed.begin({"what": "cohort run", "run_id": OLD, "code_version": "0.1.0+gtest",
                  "model": {"name": "dst-tiny"}, "series_in_manifest": 5,
                  "counts": {"finished_earlier": 0, "left_for_later": 0}})
    for key, status in (("1.1", "ok"), ("1.2", "error")):
        killed.add({"run_id": OLD, "series_key": key, "status": status})
    assert killed.parts == 1
    assert recover_unfinished(str(out), NEW).published == {OLD: 2}
    _publish(out, NEW, [{"series_key": k, "status": "ok"} for k in ("1.3", "1.4", "1.5")],
             counts={"ok": 3}, seconds=90.0, scans_per_minute=2.0)
    rows = query(str(out), "SELECT run_id, ok, error, seconds, scans_per_minute, interrupted, "
                           "recovered_by, not_written FROM runs ORDER BY run_id").to_pylist()
    assert rows == [
        {"run_id": OLD, "ok": 1, "error": 1, "seconds": None, "scans_per_minute": None,
         "interrupted": True, "recovered_by": NEW, "not_written": 3},
        {"run_id": NEW, "ok": 3, "error": 0, "seconds": 90.0, "scans_per_minute": 2.0,
         "interrupted": False, "recovered_by": None, "not_written": None}]
    at = query(str(out), "SELECT recovered_at FROM runs WHERE interrupted").column(0)[0]
    assert at.as_py().endswith("Z")  # UTC, when the next run recovered it
    code, text, _ = _query(capsys, out, "SELECT run_id, interrupted, seconds, "
                           "scans_per_minute, recovered_by FROM runs ORDER BY run_id")
    assert code == 0 and "NaN" not in text
    assert text.splitlines()[1].split() == [OLD, "True", "NULL", "NULL", NEW]
    assert text.splitlines()[2].split() == [NEW, "False", "90.0", "2.0", "NULL"]
