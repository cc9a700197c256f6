"""`cohort run` as a user types it, where results used to look fine and were wrong or the
run was confusing: a resume with another salt, a killed run's leftovers, a no-op rerun,
refused commands that left folders behind, Ray's noise, silent retries."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cohort.cli import main
from cohort.query import connect
from cohort.write.runs import published_runs


def _run(root: Path, out: Path, model: Path, *extra: str, salt: str | None = "A") -> int:
    args = ["run", str(root / "dicom"), "--out", str(out), "--model", str(model),
            "--qc", "none", *extra]
    if salt:
        args += ["--salt", salt]
    return main(args)


def _keys(out: Path) -> list[str]:
    return [r[0] for r in connect(str(out)).sql(
        "SELECT patient_key FROM series").fetchall()]


@pytest.mark.timeout(900)
def test_another_salt_on_the_same_output_stops_before_any_work(
        stepped_cohort, tiny_checkpoint, ray_local, tmp_path, capsys):
    root, _ = stepped_cohort
    out = tmp_path / "out"
    assert _run(root, out, tiny_checkpoint, "--max-series", "2", salt="A") == 0
    first = _keys(out)
    assert _run(root, out, tiny_checkpoint, salt="B") == 2
    err = capsys.readouterr().err
    assert "one patient would get two keys" in err and "salt used before" in err
    assert "A" not in json.loads((out / "_identity.json").read_text()).values()
    assert len(published_runs(str(out))) == 1  # nothing was processed
    assert _run(root, out, tiny_checkpoint, "--keep-ids", salt=None) == 2
    # an output written before the identity file existed: the keys themselves are checked
    (out / "_identity.json").unlink()
    assert _run(root, out, tiny_checkpoint, salt="B") == 2
    assert "patient keys made with another salt" in capsys.readouterr().err
    assert _run(root, out, tiny_checkpoint, salt="A") == 0
    keys = _keys(out)
    assert len(keys) == 6 and set(first) <= set(keys)
    assert len(set(keys)) == 6  # six patients, six keys: nobody split


@pytest.mark.timeout(900)
def test_a_killed_run_is_cleaned_and_a_no_op_rerun_publishes_nothing(
        stepped_cohort, tiny_checkpoint, ray_local, tmp_path, capsys, caplog):
    root, _ = stepped_cohort
    out = tmp_path / "out"
    assert _run(root, out, tiny_checkpoint, "--max-series", "2") == 0
    # what a run killed midway leaves: parts and a picture without a marker, and its claim
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = out / "runs" / "20200101T000000Z-dead00"
    (stale / "series").mkdir(parents=True)
    (stale / "series" / "part-00000.parquet").write_bytes(b"half")
    (stale / "qc").mkdir()
    (stale / "qc" / "x.png").write_bytes(b"png")
    (out / "_owner.json").write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead),
                                                 "run_id": stale.name}))
    caplog.set_level("WARNING")
    assert _run(root, out, tiny_checkpoint) == 0
    assert not stale.exists() and not (out / "_owner.json").exists()
    removed = [r for r in caplog.records if "unfinished run folder" in r.getMessage()]
    assert len(removed) == 1 and stale.name in removed[0].getMessage()
    assert not any("run again" in r.getMessage() for r in caplog.records)
    runs = published_runs(str(out))
    capsys.readouterr()
    caplog.clear()
    assert _run(root, out, tiny_checkpoint) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert published_runs(str(out)) == runs  # no empty run
    assert not any("unfinished" in r.getMessage() for r in caplog.records)


def test_a_live_run_keeps_its_output(stepped_cohort, tiny_checkpoint, tmp_path, capsys):
    root, _ = stepped_cohort
    out = tmp_path / "out"
    out.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / "_owner.json").write_text(json.dumps({"host": os.uname().nodename,
                                                     "pid": live.pid, "run_id": "r1"}))
        assert _run(root, out, tiny_checkpoint) == 2
        assert f"process {live.pid}" in capsys.readouterr().err
    finally:
        live.kill()


def test_refused_commands_create_nothing(stepped_cohort, tiny_checkpoint, tmp_path, capsys):
    root, _ = stepped_cohort
    inside = root / "dicom" / "results"
    assert main(["run", str(root / "dicom"), "--out", str(inside), "--salt", "s"]) == 2
    assert "inside the input" in capsys.readouterr().err
    assert not inside.exists()
    fresh = tmp_path / "new" / "out"
    assert main(["run", str(root / "dicom"), "--out", str(fresh), "--salt", "s",
                 "--masks", str(tmp_path / "no-masks")]) == 2
    assert not (tmp_path / "new").exists()
    assert main(["run", str(root / "dicom"), "--out", str(fresh), "--salt", "s",
                 "--model", str(root / "ground_truth.parquet")]) in (1, 2)
    assert not (tmp_path / "new").exists()


def test_an_unreachable_endpoint_says_it_retries_within_seconds(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cohort.cli", "run", "s3://bucket/archive", "--out",
         str(tmp_path / "o"), "--salt", "s", "--s3-endpoint", f"http://127.0.0.1:{port}"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "AWS_ACCESS_KEY_ID": "k",
                                               "AWS_SECRET_ACCESS_KEY": "s"})
    first = proc.stderr.readline()
    said_after = time.monotonic() - t0
    rest = proc.communicate(timeout=120)[1]
    assert "retrying (attempt 2 of 5)" in first and f"127.0.0.1:{port}" in first
    assert said_after < 15
    assert proc.returncode == 1 and "after 5 attempts" in rest and "Traceback" not in rest


@pytest.mark.timeout(900)
def test_a_run_starts_ray_once_talks_quietly_and_shuts_it_down(stepped_cohort,
                                                               tiny_checkpoint, tmp_path):
    root, _ = stepped_cohort
    sessions = set(Path("/tmp/ray").glob("session_2*")) if Path("/tmp/ray").exists() else set()
    r = subprocess.run([sys.executable, "-m", "cohort.cli", "run", str(root / "dicom"),
                        "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint),
                        "--qc", "none", "--num-cpus", "2", "--salt", "s"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    new = set(Path("/tmp/ray").glob("session_2*")) - sessions
    assert len(new) == 1, new  # one Ray start-up for indexing and the job
    assert "core_worker.cc" not in r.stderr and "Running Dataset" not in r.stderr
    assert "6 / 6 series done (6 ok, 0 failed)" in r.stderr
    assert "6 series to process" in r.stderr
    time.sleep(2)
    session = next(iter(new)).resolve().name
    alive = subprocess.run(["pgrep", "-f", session], capture_output=True, text=True).stdout
    assert alive.strip() == "", alive  # raylet, GCS and agents of its session are gone
