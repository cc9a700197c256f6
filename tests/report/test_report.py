"""`cohort report` on the run output of `tests.report.helpers`: the flow's counts, each section, the
figures as real PNGs, the SYNTHETIC banner, the QC gallery, and the errors a user can fix."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from cohort.cli import main
from cohort.errors import ConfigError
from cohort.query import query
from cohort.report import ReportConfig, write_report
from cohort.report.build import _remove_previous
from cohort.report.data import gather
from cohort.report.html import FIGURES
from cohort.write.recovery import recover_unfinished
from cohort.write.runs import RunWriter
from tests.report.helpers import RUN1, RUN2, publish_cohort, run_payload, series_row

SECTIONS = ("flow", "volumes", "risk", "change", "landmarks", "qc", "provenance")
QUICK = ReportConfig(dpi=40)  # where the figures' pixels do not matter: drawn faster


def test_flow_counts_every_series_once_at_the_step_it_left(run_output):
    f = gather(run_output).flow
    assert (f.objects, f.image_objects) == (120, 116)
    assert f.not_images == {"not_dicom": 3, "truncated": 1}
    assert f.series == 13
    assert f.not_selected == {"localizer": 2, "not_preferred": 1}
    assert f.index_failed == {"too_few_slices": 1}
    assert (f.selected, f.not_yet) == (9, 1)
    assert f.run_failed == {"decode_failed": 1}  # the newest row of s08 (run 2)
    assert (f.analysed, f.patients, f.studies) == (7, 5, 7)
    assert (f.with_volumes, f.no_volumes) == (6, {"mask_missing": 1})


def test_flow_equals_the_tables_counts(run_output):
    f = gather(run_output).flow
    rows = {(r["status"], r["error_code"]): r["n"] for r in query(
        run_output, "SELECT status, error_code, count(*) AS n FROM series GROUP BY ALL"
    ).to_pylist()}
    assert f.analysed == sum(n for (s, _), n in rows.items() if s == "ok")
    assert sum(f.not_selected.values()) == sum(n for (s, _), n in rows.items()
                                               if s == "skipped")
    errors = sum(f.run_failed.values()) + sum(f.index_failed.values())
    assert errors == sum(n for (s, _), n in rows.items() if s == "error")
    with_volumes = query(run_output, "SELECT count(DISTINCT series_key) AS n FROM segments")
    assert f.with_volumes == with_volumes.column("n")[0].as_py()


def test_without_the_index_the_flow_starts_at_the_series(tmp_path):
    out = Path(publish_cohort(str(tmp_path / "out")))
    shutil.rmtree(out / "index")  # the runs recorded it there
    f = gather(str(out)).flow
    assert (f.index_url, f.objects, f.not_images) == (None, None, {})
    assert f.series == 12 and f.not_yet == 0  # s13 has no row and no index names it
    assert f.run_failed == {"decode_failed": 1, "too_few_slices": 1}
    assert f.selected == 9 and f.analysed == 7
    page = Path(write_report(str(out), config=QUICK)).read_text(encoding="utf-8")
    assert "no index was found" in page and "Failed (index or run)" not in page


def test_every_section_with_its_numbers_and_the_synthetic_banner(report):
    _, page = report
    for section in SECTIONS:
        assert f'<section id="{section}">' in page, section
    assert 'class="synthetic"' in page and "SYNTHETIC" in page
    assert "the landmark model tiny (trained on synthetic phantoms)" in page
    assert "<title>SYNTHETIC - ICA calcium cohort report</title>" in page
    # headline: patients, series analysed of selected and found
    assert re.search(r'Patients</div><div class="v">5<', page)
    assert "of 9 selected, 13 found" in page
    # the flow as a table, with each reason's words and code
    assert "localizer (scout) <code>localizer</code></td><td>2<" in page
    assert "too few slices <code>too_few_slices</code></td><td>1<" in page
    assert "Calcium masks: <code>segmenter tiny sha256:aaaaaaaaaaaa</code> (6 series)" in page
    # risk groups: the placeholder warning; change over time: patients A and C
    assert "placeholder" in page
    assert "2 patients have two or more dated studies with volumes" in page
    # provenance: both runs, both checksums, the threshold
    assert RUN1 in page and RUN2 in page and "d" * 64 in page and "a" * 64 in page
    assert "0.30 from the model (7 series)" in page


def test_every_figure_is_a_png_the_page_shows(report):
    url, page = report
    folder = url.parent
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert {f"figures/{Path(p).name}" for p in FIGURES.values()} <= set(sources)
    for src in sources:
        with Image.open(folder / src) as im:
            im.verify()
            assert im.format == "PNG" and im.width >= 300, src
    # the QC pictures of the two flagged series with pictures, stack key made safe
    assert "qc/s05_2.png" in sources and "qc/s02.png" in sources
    assert '<a href="../runs/20260101T000000Z-aaaaaa/qc/s02.png">' in page
    assert "QC picture not found" in page  # s07 is flagged but has no picture


def test_no_names_birth_dates_or_archive_paths(report):
    _, page = report
    for word in ("PatientName", "BirthDate", "s01/0.dcm", "junk/0"):
        assert word not in page


def test_synthetic_only_where_the_models_or_the_images_are(tmp_path):
    out = publish_cohort(str(tmp_path / "out"), trained_on="800 annotated scans")
    page = Path(write_report(out, config=QUICK)).read_text(encoding="utf-8")
    assert 'class="synthetic"' not in page and "SYNTHETIC" not in page
    page = Path(write_report(out, config=ReportConfig(dpi=40, synthetic_data=True))).read_text(
        encoding="utf-8")
    assert "SYNTHETIC" in page and "the images are synthetic phantoms" in page


def test_change_over_time_without_follow_ups(tmp_path):
    out = str(tmp_path / "out")
    writer = RunWriter(out, RUN1)
    writer.add(series_row(RUN1, "s01", "A", "20150301", total=40.0))
    writer.publish(run_payload(RUN1, out, {"ok": 1}, "synthetic phantoms"))
    page = Path(write_report(out, config=QUICK)).read_text(encoding="utf-8")
    assert "No patient has two studies with volumes" in page
    assert FIGURES["change"] not in page


def test_change_over_time_without_the_view(run_output, tmp_path, monkeypatch):
    """An output read by a version without the patient_changes view: totals only."""
    import cohort.report.data as data

    connect = data.connect

    def without_view(*args, **kwargs):
        con = connect(*args, **kwargs)
        con.execute("DROP VIEW patient_changes")
        return con

    monkeypatch.setattr(data, "connect", without_view)
    d = gather(run_output)
    assert len(d.changes) == 0 and sorted(set(d.trajectories["patient_key"])) == ["A", "C"]
    page = Path(write_report(run_output, config=QUICK, report_url=str(tmp_path / "r"))).read_text(
        encoding="utf-8")
    assert "2 patients have two or more dated studies with volumes" in page
    assert "The segment-level view (patient_changes) has no rows" in page


def test_a_folder_without_runs_says_what_would_work(tmp_path):
    with pytest.raises(ConfigError, match="holds no published run.*cohort run"):
        write_report(str(tmp_path))
    with pytest.raises(ConfigError, match="does not exist.*cohort run"):
        write_report(str(tmp_path / "nowhere"))


def test_cli_prints_where_the_report_is(run_output, tmp_path, capsys):
    to = tmp_path / "elsewhere"
    assert main(["report", run_output, "--to", str(to), "--gallery", "1"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {to / 'index.html'}"
    page = (to / "index.html").read_text(encoding="utf-8")
    assert "The 1 series with the most flags are shown of 3 flagged." in page
    assert sorted(p.name for p in (to / "qc").iterdir()) == ["s05_2.png"]  # two flags
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "cohort run" in capsys.readouterr().err


def test_a_new_report_replaces_the_old_pictures(run_output, tmp_path):
    to = tmp_path / "rep"
    write_report(run_output, config=QUICK, report_url=str(to))
    (to / "qc" / "stale.png").write_bytes(b"old")
    write_report(run_output, config=QUICK, report_url=str(to))
    assert not (to / "qc" / "stale.png").exists()
    mine = tmp_path / "mine"  # a folder another program made is left alone
    (mine / "qc").mkdir(parents=True)
    (mine / "qc" / "keep.png").write_bytes(b"x")
    (mine / "index.html").write_text("<html>someone else's page</html>")
    _remove_previous(str(mine), None)
    assert (mine / "qc" / "keep.png").exists()


def test_config_refuses_what_cannot_be_drawn():
    with pytest.raises(ConfigError, match="dpi"):
        ReportConfig(dpi=5)
    with pytest.raises(ConfigError, match="max_listed"):
        ReportConfig(max_listed=0)


def test_on_s3(s3_server):
    out = publish_cohort(s3_server.make_bucket("report") + "/results",
                         s3_server.storage_options())
    url = write_report(out, s3_server.storage_options(), QUICK)
    assert url == f"{out}/report/index.html"
    fs = s3_server.filesystem()
    page = fs.cat_file(url.removeprefix("s3://")).decode()
    assert "of 9 selected, 13 found" in page
    for src in re.findall(r'<img src="([^"]+)"', page):
        assert fs.cat_file(f"report/results/report/{src}")[:8] == b"\x89PNG\r\n\x1a\n"


def _interrupted_then_resumed(out: str, *, resumed: bool) -> None:
    """RUN1 killed after its first part (two of its four series written), recovered by
    RUN2, which ends normally with the other two when ``resumed`` (else it is still
    running: it has published nothing)."""
    killed = RunWriter(out, RUN1, part_rows=2)
    record = run_payload(RUN1, out, {"finished_earlier": 0, "left_for_later": 0},
                         "synthetic phantoms")
    del record["seconds"], record["scans_per_minute"]  # written before its first part
    killed.begin({**record, "series_in_manifest": 4})
    killed.add(series_row(RUN1, "s01", "A", "20150301", total=40.0))
    killed.add(series_row(RUN1, "s02", "A", "20180301", status="error", code="no_skull"))
    assert recover_unfinished(out, RUN2).published == {RUN1: 2}
    if resumed:
        rest = RunWriter(out, RUN2)
        rest.add(series_row(RUN2, "s03", "B", "20160101", total=0.0))
        rest.add(series_row(RUN2, "s04", "C", "20140601", total=8.0))
        rest.publish(run_payload(RUN2, out, {"ok": 2, "skipped": 0, "error": 0},
                                 "synthetic phantoms"))


def _report_of_interrupted(tmp_path, *, resumed: bool) -> tuple[str, str]:
    """The report's HTML and its text, of an output with an interrupted run."""
    out = str(tmp_path / "out")
    _interrupted_then_resumed(out, resumed=resumed)
    page = Path(write_report(out, config=QUICK)).read_text(encoding="utf-8")
    return page, re.sub(r"<[^>]+>", "", page)


def test_an_interrupted_run_says_it_was_stopped_and_who_did_the_rest(tmp_path):
    page, text = _report_of_interrupted(tmp_path, resumed=True)
    assert "2 published runs (1 interrupted)" in text
    rows = re.findall(r"<tr><td><code>(\d{8}T\d{6}Z-\w+)</code>(.*?)</tr>", page)
    cells = {run: re.findall(r"<td>(.*?)</td>", "<td>" + rest) for run, rest in rows}
    # run, code version, ok, skipped, failed, done earlier, wall time, scans / min
    assert cells[RUN1][0] == ' <span class="chip">interrupted</span>'
    assert cells[RUN1][2:] == ["1", "0", "1", "0", "interrupted", "-"]
    assert cells[RUN2][2:] == ["2", "0", "0", "0", "62 s", "7.3"]
    assert re.search(rf"Run {RUN1} was interrupted: it was stopped before it ended \(its "
                     r"driver killed, its node lost or the job failed\), so it has no wall "
                     r"time or rate\. "
                     r"The 2 series rows it had written are kept in these tables; its "
                     rf"remaining 2 series were processed by run {RUN2}, which took over the "
                     r"output on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\.", text)
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)


def test_an_interrupted_run_whose_successor_has_not_published(tmp_path):
    _, text = _report_of_interrupted(tmp_path, resumed=False)
    assert "1 published run (1 interrupted)" in text
    assert (f"its remaining 2 series were left to run {RUN2}, which took over the output on"
            in text and "and has not published yet." in text)
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
