"""`cohort index` as a user meets it: exit 0 when only the data had problems, a manifest
DuckDB reads, a summary, and one clear line for an input that does not exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb

from cohort.cli import main

from .conftest import series_bytes, write_series


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cohort.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_index_exits_0_with_bad_data_and_duckdb_reads_the_manifest(tmp_path, capsys, ray_local):
    archive = tmp_path / "archive"
    write_series(archive / "a", series_bytes(20, series_uid="1.2.3.1.2", study_uid="1.2.3.1"))
    write_series(archive / "b", series_bytes(3, series_uid="1.2.3.2.2", study_uid="1.2.3.2"))
    (archive / "notes.txt").write_text("hello\n")
    out = tmp_path / "index"
    # default executor: Ray (here the test session's instance, already connected)
    assert main(["index", str(archive), "--out", str(out), "--files-per-task", "8"]) == 0
    printed = capsys.readouterr().out
    assert "cohort index: 24 objects" in printed
    assert "selected 1, not_selected 0, failed 1" in printed
    assert "too_few_slices 1" in printed and "not_dicom 1" in printed
    assert str(out / "manifest.parquet") in printed

    manifest = str(out / "manifest.parquet")
    got = duckdb.sql(f"SELECT status, error_code, count(*), sum(n_files) FROM "
                     f"read_parquet('{manifest}') GROUP BY ALL ORDER BY ALL").fetchall()
    assert got == [("failed", "too_few_slices", 1, 3), ("not_selected", "not_dicom", 1, 1),
                   ("selected", None, 1, 20)]
    files = duckdb.sql(f"SELECT unnest(files) FROM read_parquet('{manifest}') "
                       "WHERE status = 'selected'").fetchall()
    assert [f[0] for f in files] == [str(archive / "a" / f"I{10 * k}") for k in range(1, 21)]
    types = dict(duckdb.sql(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                            f"read_parquet('{manifest}'))").fetchall())
    assert types["files"] == "VARCHAR[]" and types["tilt_deg"] == "DOUBLE"
    marker = json.loads((out / "_SUCCESS.json").read_text())
    assert marker["rows"] == 3 and marker["by_status"]["selected"] == 1


def test_index_of_a_missing_input_is_one_clear_line(tmp_path):
    r = run_cli("index", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "does not exist" in r.stderr and str(tmp_path / "nowhere") in r.stderr
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_index_of_a_missing_bucket_is_one_clear_line(s3_server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    code = main(["index", "s3://no-such-bucket/ct", "--out", str(tmp_path / "out"),
                 "--s3-endpoint", s3_server.endpoint_url, "--executor", "local"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "s3://no-such-bucket/ct does not exist" in err and s3_server.secret not in err


def test_bad_index_options_are_refused(tmp_path):
    r = run_cli("index", str(tmp_path), "--out", str(tmp_path / "o"), "--prefer", "cheapest")
    assert r.returncode == 2 and "--prefer takes distinct criteria" in r.stderr
    assert r.stderr.count("\n") == 1
