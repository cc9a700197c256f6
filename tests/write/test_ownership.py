"""Who writes an output: a live owner stops a second run; a killed one is taken over, on
this host by its process (gone, a zombie, or its id given to another process), on another
host by its heartbeat."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from cohort.errors import ConfigError
from cohort.write.ownership import OWNER_FILE, claim


def _owner(out, **record):
    out.mkdir(exist_ok=True)
    (out / OWNER_FILE).write_text(json.dumps({"host": "head-pod-1", "pid": 4242,
                                              "run_id": "old", **record}))


def test_another_hosts_run_is_taken_over_only_once_its_heartbeat_is_stale(tmp_path):
    out = tmp_path / "out"
    _owner(out, heartbeat=time.time() - 30)
    with pytest.raises(ConfigError, match="heartbeat was 3\\d s ago.*600 s is taken over"):
        claim(str(out), "new")
    _owner(out, heartbeat=time.time() - 601)
    got = claim(str(out), "new")
    assert got.took_over["run_id"] == "old"
    assert json.loads((out / OWNER_FILE).read_text())["run_id"] == "new"
    got.release()
    assert not (out / OWNER_FILE).exists()


def test_an_owner_without_a_heartbeat_on_another_host_is_never_guessed_dead(tmp_path):
    out = tmp_path / "out"
    _owner(out)  # written by a version without heartbeats
    with pytest.raises(ConfigError, match="delete .*_owner.json"):
        claim(str(out), "new", lease_s=0)


def test_a_running_job_renews_its_heartbeat_and_stops_when_released(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    own = claim(str(out), "mine")
    first = json.loads((out / OWNER_FILE).read_text())["heartbeat"]
    own.keep_alive(every_s=0.05)
    deadline = time.time() + 10
    while json.loads((out / OWNER_FILE).read_text())["heartbeat"] == first:
        assert time.time() < deadline, "no heartbeat renewed"
        time.sleep(0.05)
    own.release()
    time.sleep(0.2)
    assert not (out / OWNER_FILE).exists()  # and no beat wrote it back


def _local_owner(out, pid, **record):
    out.mkdir(exist_ok=True)
    (out / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": pid,
                                              "run_id": "old", **record}))


def test_a_killed_driver_not_yet_reaped_is_taken_over(tmp_path):
    """A driver killed (SIGKILL) whose parent has not reaped it yet is a zombie: dead."""
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _local_owner(out, child.pid, pid_started=psutil.Process(child.pid).create_time())
        with pytest.raises(ConfigError, match=f"process {child.pid}"):
            claim(str(out), "new")
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.time() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.time() < deadline, "the killed child did not become a zombie"
            time.sleep(0.05)
        got = claim(str(out), "new")  # still unreaped here
        assert got.took_over["run_id"] == "old"
        got.release()
    finally:
        child.kill()
        child.wait()


def test_an_owner_whose_process_id_now_names_another_process_is_taken_over(tmp_path):
    out = tmp_path / "out"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # the owner's process started long before this one, which got its id later
        _local_owner(out, live.pid, pid_started=psutil.Process(live.pid).create_time() - 3600)
        got = claim(str(out), "new")
        assert got.took_over["run_id"] == "old"
        record = json.loads((out / OWNER_FILE).read_text())
        assert record["pid"] == os.getpid()
        assert record["pid_started"] == psutil.Process().create_time()
        got.release()
    finally:
        live.kill()
        live.wait()
