"""Failures on purpose, for tests: functions that crash, hang or recurse (importable by a
spawned worker, unlike functions defined inside test modules), and fault drills that kill
or stall a worker at a named point of the job or of training (`drill`, armed by a test)."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


def crash() -> None:
    """Die as a decoder with a segmentation fault would."""
    os.kill(os.getpid(), signal.SIGSEGV)


def hang(seconds: float = 3600.0) -> None:
    time.sleep(seconds)


def recurse(n: int = 0) -> int:
    return recurse(n + 1) + 1


def echo(value):
    return value


# --- fault drills: production code marks where a test may kill it ------------------------

#: names a JSON file; a test writes a drill into it (`armed`) to make a worker die once at a
#: named point. Set it before Ray starts, so that every worker process inherits it.
DRILL_ENV = "COHORT_FAULT_DRILL"


def drill(point: str, **context) -> None:
    """Kill this process once, as an out-of-memory kill or a lost node would, when a test
    armed a drill for ``point`` whose conditions match ``context`` (a condition given as a
    list matches any of its values); with ``stall_s``, sleep that long instead, every time,
    as work stuck on a slow node would. Else do nothing (one environment lookup: production
    runs never set `DRILL_ENV`)."""
    path = os.environ.get(DRILL_ENV)
    if not path or not os.path.exists(path):
        return
    with open(path) as f:
        spec = json.load(f)
    if spec.get("point") != point:
        return
    for k, v in spec.get("when", {}).items():
        if str(context.get(k)) not in [str(x) for x in (v if isinstance(v, list) else [v])]:
            return
    marker = spec["marker"]
    if spec.get("stall_s"):
        with open(marker, "a") as f:
            f.write(f"stalled at {point} {context}\n")
        logger.warning("fault drill: stalling process %d at %s", os.getpid(), point)
        time.sleep(float(spec["stall_s"]))
        return
    if os.path.exists(marker):  # once: the retried work must go through
        return
    with open(marker, "w") as f:
        f.write(f"killed at {point} {context}\n")
    logger.warning("fault drill: killing process %d at %s", os.getpid(), point)
    if spec.get("delay_s"):
        time.sleep(float(spec["delay_s"]))
    os._exit(int(spec.get("exit_code", 23)))


@contextmanager
def armed(point: str, marker: str, *, delay_s: float = 0.0, stall_s: float = 0.0,
          **when) -> Iterator[None]:
    """Within the block, the first process that reaches ``drill(point, **context)`` with
    ``context`` matching ``when`` dies and writes ``marker`` (a local path); with
    ``stall_s``, every such process instead sleeps ``stall_s`` seconds and adds a line to
    ``marker``."""
    path = os.environ.get(DRILL_ENV)
    if not path:
        raise RuntimeError(f"set {DRILL_ENV} before Ray starts (tests/conftest.py does)")
    with open(path, "w") as f:
        json.dump({"point": point, "marker": marker, "when": when, "delay_s": delay_s,
                   "stall_s": stall_s}, f)
    try:
        yield
    finally:
        os.remove(path)
