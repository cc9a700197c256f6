"""Functions that fail on purpose, for testing process isolation (importable by a spawned
worker, unlike functions defined inside test modules)."""

from __future__ import annotations

import os
import signal
import time


def crash() -> None:
    """Die as a decoder with a segmentation fault would."""
    os.kill(os.getpid(), signal.SIGSEGV)


def hang(seconds: float = 3600.0) -> None:
    time.sleep(seconds)


def recurse(n: int = 0) -> int:
    return recurse(n + 1) + 1


def echo(value):
    return value
