"""`cohort.ray_session`: a local Ray started for a command keeps its idle workers."""

import json
import os
import subprocess
import sys

from cohort.ray_session import IDLE_WORKER_ENV, IDLE_WORKER_S

#: starts a local Ray the way every command does, then reads the raylet's environment
#: (Ray's worker pool reads its idle-worker setting from there when the raylet starts)
PROBE = r"""
import json
import psutil
from cohort.ray_session import RaySession
with RaySession(1) as session:
    session.ensure()
    raylets = [p for p in psutil.Process().children(recursive=True) if p.name() == "raylet"]
    print(json.dumps([p.environ().get(%r) for p in raylets]))
"""


def _raylet_setting(env: dict) -> list:
    out = subprocess.run([sys.executable, "-c", PROBE % IDLE_WORKER_ENV], env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_local_ray_keeps_idle_workers_and_a_set_value_wins():
    env = {k: v for k, v in os.environ.items() if k not in (IDLE_WORKER_ENV, "RAY_ADDRESS")}
    assert _raylet_setting(env) == [str(IDLE_WORKER_S * 1000)]
    assert _raylet_setting({**env, IDLE_WORKER_ENV: "5000"}) == ["5000"]
