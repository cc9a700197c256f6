"""`cohort run` and `cohort query` as a user types them."""

import os
import shlex
import subprocess
import sys

import pytest


def _cohort(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cohort.cli", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.mark.timeout(900)
def test_run_then_query(varied_cohort, tiny_checkpoint, tmp_path):
    root, _ = varied_cohort
    out = tmp_path / "out dir ü"  # pasted hints must survive spaces and non-ASCII
    r = _cohort("run", str(root / "dicom"), "--out", str(out), "--model", str(tiny_checkpoint),
                "--masks", str(root / "masks"), "--max-series", "2", "--qc", "none",
                "--num-cpus", "2", env={"COHORT_SALT": "cli-salt"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 ok" in r.stdout and "SYNTHETIC" in r.stdout
    assert "cli-salt" not in r.stdout + r.stderr
    assert "selected left for later runs (--max-series" in r.stdout
    hint = next(line for line in r.stdout.splitlines() if line.startswith("query it: "))
    pasted = _cohort(*shlex.split(hint.removeprefix("query it: "))[1:])
    assert pasted.returncode == 0 and "ok" in pasted.stdout, pasted.stderr
    q = _cohort("query", str(out), "SELECT status, count(*) AS n FROM series GROUP BY ALL "
                "ORDER BY status", "--csv")
    assert q.returncode == 0, q.stderr
    assert q.stdout.splitlines()[0] == "status,n" and "ok,2" in q.stdout
    bad = _cohort("query", str(out), "SELECT nope FROM series")
    assert bad.returncode == 2 and "views: series" in bad.stderr


def test_run_without_salt_says_what_would_work(varied_cohort, tmp_path):
    root, _ = varied_cohort
    env = {k: v for k, v in os.environ.items() if k != "COHORT_SALT"}
    r = subprocess.run([sys.executable, "-m", "cohort.cli", "run", str(root / "dicom"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 2
    assert "--salt" in r.stderr and "--keep-ids" in r.stderr
    assert "Traceback" not in r.stderr


def test_query_of_a_missing_folder_says_so(tmp_path):
    r = _cohort("query", str(tmp_path / "nope"), "SELECT 1")
    assert r.returncode == 2 and "does not exist" in r.stderr


@pytest.mark.parametrize("failure, code, says", [
    (KeyboardInterrupt(), 130, "publishes them as an interrupted run"),
    ("no-credentials", 1, "NoCredentialsError"),
    (PermissionError("Forbidden"), 1, "PermissionError: Forbidden; check"),
])
def test_storage_failures_and_ctrl_c_end_with_a_line_not_a_traceback(
        failure, code, says, monkeypatch, capsys, tmp_path):
    from botocore.exceptions import NoCredentialsError

    from cohort.cli import main
    from cohort.cli import query as query_command

    def fail(args):
        raise NoCredentialsError() if failure == "no-credentials" else failure

    monkeypatch.setattr(query_command, "handle", fail)
    assert main(["query", str(tmp_path), "SELECT 1"]) == code
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
