"""The `cohort` command as a user meets it: help, bad input, local and S3 output."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import duckdb
import pyarrow.parquet as pq
import pytest

from cohort.cli import main
from cohort.synth import heads
from cohort.synth.config import SynthConfig


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cohort.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_help_names_the_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    assert "synth" in r.stdout and "demo" in r.stdout
    r = run_cli("synth", "heads", "--help")
    assert r.returncode == 0 and "--patients" in r.stdout and "s3://" in r.stdout


@pytest.mark.parametrize("args,code,needle", [
    (["--patients", "-3"], 2, "--patients must be at least 1"),
    (["--matrix", "7"], 2, "--matrix must be between 32 and 1024"),
    (["--tilt", "1.5"], 2, "tilt must be a probability"),
    (["--transfer-syntax", "jpeg-xl"], 2, "unknown transfer syntax 'jpeg-xl'"),
    (["--bogus"], 2, "unrecognized arguments: --bogus"),
])
def test_bad_arguments_give_one_clear_line(tmp_path, args, code, needle):
    r = run_cli("synth", "heads", "--out", str(tmp_path / "x"), *args)
    assert r.returncode == code
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_unwritable_output_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = run_cli("synth", "heads", "--out", str(blocker / "cohort"), "--patients", "1")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "cannot write to" in r.stderr
    assert "folder you can write to" in r.stderr


def test_non_empty_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "c"
    args = ["synth", "heads", "--out", str(out), "--patients", "1", "--matrix", "48",
            "--thickness", "5", "--workers", "1", "--metal", "1", "--holder", "0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "ground_truth.parquet" in printed
    assert "beam hardening" in printed and "metal" in printed and "head holder" not in printed
    assert main(args) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.tex").write_text("precious")
    assert main([*args[:2], "--out", str(tmp_path / "other"), *args[4:], "--overwrite"]) == 2
    assert (tmp_path / "other" / "thesis.tex").read_text() == "precious"


def test_a_failure_midway_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    real = heads.generate_patient

    def flaky(cfg, index, out_url, options):
        if index == 1:
            raise RuntimeError("disk full (injected)")
        return real(cfg, index, out_url, options)

    monkeypatch.setattr(heads, "generate_patient", flaky)
    cfg = SynthConfig(patients=3, seed=1, matrix=48, thicknesses_mm=(5.0,), workers=1)
    with pytest.raises(RuntimeError, match="injected"):
        heads.generate_cohort(cfg, str(tmp_path / "c"))
    assert not heads.is_complete(str(tmp_path / "c"))
    assert not (tmp_path / "c" / "ground_truth.parquet").exists()


def test_cohort_on_a_real_s3_server(s3_server, tmp_path):
    bucket = s3_server.make_bucket("synth-cli")
    env = {"AWS_ACCESS_KEY_ID": s3_server.key, "AWS_SECRET_ACCESS_KEY": s3_server.secret}
    r = run_cli("synth", "heads", "--out", f"{bucket}/cohort-a", "--patients", "2",
                "--matrix", "48", "--thickness", "5", "--localizer", "1", "--followup", "0",
                "--second-series", "0", "--workers", "1",
                "--s3-endpoint", s3_server.endpoint_url, env=env)
    assert r.returncode == 0, r.stderr
    assert s3_server.secret not in r.stdout + r.stderr
    fs = s3_server.filesystem()
    assert fs.exists("synth-cli/cohort-a/_SUCCESS.json")
    table = pq.read_table(io.BytesIO(fs.cat_file("synth-cli/cohort-a/ground_truth.parquet")))
    assert table.num_rows == 4  # 2 x (localizer + primary)
    for row in table.to_pylist():
        files = fs.find(f"synth-cli/cohort-a/{row['dicom_dir']}")
        assert len(files) == row["n_slices"]
    # the same table, queried with DuckDB as an epidemiologist would, after a download
    local = tmp_path / "gt.parquet"
    fs.get_file("synth-cli/cohort-a/ground_truth.parquet", str(local))
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{local}') "
                   "WHERE series_role = 'primary' AND synthetic").fetchall()[0][0]
    assert n == 2


def test_missing_bucket_is_a_clear_error(s3_server):
    env = {"AWS_ACCESS_KEY_ID": s3_server.key, "AWS_SECRET_ACCESS_KEY": s3_server.secret}
    r = run_cli("synth", "heads", "--out", "s3://no-such-bucket/x", "--patients", "1",
                "--s3-endpoint", s3_server.endpoint_url, env=env)
    assert r.returncode == 1
    assert "cannot write to s3://no-such-bucket/x" in r.stderr
    assert s3_server.secret not in r.stderr
