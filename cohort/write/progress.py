"""The job's one progress display: series done / total, ok / error counts, scans per
minute and time left. On a terminal it is a single tqdm bar; otherwise (a log file, a
cluster job's driver log) one log line every ``every`` series and at the end, through the
``cohort.progress`` logger, which the `cohort` command shows by default."""

from __future__ import annotations

import logging
import sys
import time

logger = logging.getLogger("cohort.progress")


class Progress:
    """Counts finished series; `update` after each, `close` at the end."""

    def __init__(self, total: int, *, every: int = 50, terminal: bool | None = None):
        self.total = total
        self.every = max(1, every)
        self.done = 0
        self.counts = {"ok": 0, "error": 0}
        self.t0 = time.perf_counter()
        terminal = sys.stderr.isatty() if terminal is None else terminal
        self.bar = None
        if terminal and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="series", desc="cohort run", file=sys.stderr,
                            dynamic_ncols=True, smoothing=0.1)

    @property
    def rate_per_min(self) -> float:
        return self.done / max(1e-9, time.perf_counter() - self.t0) * 60

    def line(self) -> str:
        rate = self.rate_per_min
        left = (self.total - self.done) / rate * 60 if rate > 0 else float("nan")
        eta = f", about {_duration(left)} left" if self.done < self.total and rate > 0 else ""
        return (f"{self.done} / {self.total} series done ({self.counts['ok']} ok, "
                f"{self.counts['error']} failed), {rate:.1f} scans/min{eta}")

    def update(self, status: str) -> None:
        self.done += 1
        if status in self.counts:
            self.counts[status] += 1
        if self.bar is not None:
            self.bar.set_postfix(ok=self.counts["ok"], failed=self.counts["error"],
                                 refresh=False)
            self.bar.update(1)
        elif self.done % self.every == 0 or self.done == self.total:
            logger.info(self.line())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
