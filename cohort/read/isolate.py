"""Decode in a separate process, so a file that crashes a decoder (a segfault, a recursion
without end) or hangs costs one series, not the run.

`IsolatedReader` keeps one worker process and restarts it after a crash or a time-out.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import signal
from multiprocessing.connection import Connection

from cohort.errors import ErrorCode, SeriesError
from cohort.read.series import ReadConfig, read_series
from cohort.read.volume import Volume
from cohort.storage import StorageOptions

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 300.0  # a loaded node may take long to import torch


def _serve(conn: Connection, preload: tuple[str, ...]) -> None:
    """Worker loop: import ``preload`` (module names), then read requests and answer with
    the function's result or a SeriesError."""
    for name in preload:  # once here, before timing, not per request
        try:
            importlib.import_module(name)
        except ImportError:
            logger.debug("isolated reader: %s not importable, not preloaded", name)
    conn.send(("ready", None))  # the time limit counts from here, not from process start
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        fn, args, kwargs = request
        try:
            conn.send(("ok", fn(*args, **kwargs)))
        except SeriesError as e:
            conn.send(("series_error", (e.code, e.detail, e.series, e.uri)))
        except RecursionError:
            conn.send(("series_error", (ErrorCode.UNREADABLE_HEADER, "recursion without end "
                                        "while decoding", None, None)))
        except Exception as e:  # anything else is a decoding failure of this series
            conn.send(("series_error", (ErrorCode.DECODE_FAILED, repr(e), None, None)))


class IsolatedReader:
    """Runs `read_series` (or any picklable function) in a worker process with a time limit.

    Args:
        timeout_s: seconds one series may take before it is stopped (TIMEOUT).
        preload: modules the worker imports when it starts (e.g. the caller's stage code
            and torch), so that their import time never counts against a series.
    """

    def __init__(self, timeout_s: float = 300.0, preload: tuple[str, ...] = ()):
        self.timeout_s = timeout_s
        self.preload = tuple(preload)
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._conn: Connection | None = None

    def __enter__(self) -> IsolatedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child, self.preload), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        # wait for the imports (torch, ...) to finish: they must not eat a series' time limit
        if not parent.poll(STARTUP_TIMEOUT_S) or parent.recv()[0] != "ready":
            self.close()
            raise RuntimeError(f"the isolated reader process did not start within "
                               f"{STARTUP_TIMEOUT_S:g} s")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._proc, self._conn = None, None

    def call(self, fn, *args, series: str | None = None, **kwargs):
        """``fn(*args, **kwargs)`` in the worker; SeriesError for crash, time-out, failure."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        assert self._conn is not None and self._proc is not None
        self._conn.send((fn, args, kwargs))
        if not self._conn.poll(self.timeout_s):
            self.close()
            raise SeriesError(ErrorCode.TIMEOUT, f"stopped after {self.timeout_s:g} s; "
                              "raise the per-series time limit if such series are expected",
                              series=series)
        try:
            status, payload = self._conn.recv()
        except (EOFError, ConnectionError, OSError):
            self._proc.join(5)
            code = self._proc.exitcode
            self.close()
            how = (f"signal {signal.Signals(-code).name}" if code is not None and code < 0
                   else f"exit code {code}")
            raise SeriesError(ErrorCode.DECODER_CRASHED, f"the decoding process died ({how}); "
                              "the file is probably malformed", series=series) from None
        if status == "ok":
            return payload
        code, detail, s, uri = payload
        raise SeriesError(code, detail, series=s or series, uri=uri)

    def read_series(self, uris: list[str], options: StorageOptions | None = None,
                    config: ReadConfig | None = None, *, series: str | None = None) -> Volume:
        """`cohort.read.series.read_series` in the worker process."""
        return self.call(read_series, uris, options, config or ReadConfig(), series=series)
