"""Memory and CPU of a process tree while a benchmark runs, sampled with psutil: the
driver, Ray's workers (and their isolated decoder processes), the raylet and Ray's own
processes, told apart by name. Shared by the benchmarks that measure a whole job."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class TreePeak:
    rss: int = 0  # bytes, sum over the tree at the sample with the highest sum
    pss: int = 0  # proportional set size (shared pages split between their users)
    by_part: dict[str, int] = field(default_factory=dict)  # RSS at the RSS peak
    processes: int = 0  # processes in the tree at the RSS peak
    samples: int = 0
    cpu_s: float = 0.0  # CPU seconds (user + system) the tree used while sampled
    cpu_by_part: dict[str, float] = field(default_factory=dict)
    #: processes seen per part while sampled (a worker pool that churns starts many)
    seen_by_part: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    name: str  # Ray workers retitle themselves "ray::..."
    cpu_s: float  # user + system so far


def processes() -> dict[int, Proc]:
    """Every process on this machine that psutil can read."""
    out = {}
    for p in psutil.process_iter(["pid", "ppid", "name", "cpu_times"]):
        t = p.info["cpu_times"]
        if t is None:
            continue  # gone meanwhile, or not ours to read
        out[p.info["pid"]] = Proc(p.info["pid"], p.info["ppid"] or 0, p.info["name"] or "",
                                  t.user + t.system)
    return out


def rss_of(pid: int) -> int | None:
    """Resident bytes of a process (a counter read: cheap); None when gone."""
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return None


def pss_of(pid: int) -> int | None:
    """Proportional set size (walks the page tables: costly, so read only at new RSS
    peaks); None when gone or not available on this system."""
    try:
        return getattr(psutil.Process(pid).memory_full_info(), "pss", None)
    except psutil.Error:
        return None


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(getattr(t, k) for k in ("user", "nice", "system", "idle", "iowait", "irq",
                                        "softirq", "steal") if hasattr(t, k))
    return total - idle, total


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of one process and its reaped children (0 when gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system + t.children_user + t.children_system


class TreeSampler(threading.Thread):
    """Samples the memory and CPU of this process and all its descendants except ``exclude``
    (and theirs) every ``interval`` seconds; also the whole machine's CPU and the CPU of the
    excluded processes (the S3 server), so that a run's cores can be accounted for.

    A sample reads /proc/<pid>/stat and statm (counters, cheap); PSS (smaps_rollup, a page
    table walk) only when the tree's RSS reaches a new peak. Its own CPU is part of the
    driver's (it is a thread of this process) and it samples the sequential loop as well, so
    that both sides of a comparison pay it."""

    def __init__(self, exclude: set[int], interval: float = 0.5):
        super().__init__(daemon=True)
        self.root = os.getpid()
        self.exclude = exclude
        self.interval = interval
        self.peak = TreePeak()
        self._stop_event = threading.Event()
        self._cpu: dict[int, float] = {}  # last CPU seconds seen per pid
        self._cpu_start: dict[int, float] = {}
        self._part: dict[int, str] = {}  # last part seen per pid
        self.wall_s = 0.0
        self.machine_busy_s = 0.0  # every process on the machine, the sampler included
        self.excluded_cpu_s = 0.0  # the excluded processes (the S3 server)

    def __enter__(self) -> TreeSampler:
        self._cpu_start = {p.pid: p.cpu_s for p in self._tree()}
        self._machine0 = machine_cpu()[0]
        self._excluded0 = sum(cpu_of(p) for p in self.exclude)
        self._t0 = time.perf_counter()
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop_event.set()
        self.join()
        self.sample()
        self.wall_s = time.perf_counter() - self._t0
        self.machine_busy_s = machine_cpu()[0] - self._machine0
        self.excluded_cpu_s = sum(cpu_of(p) for p in self.exclude) - self._excluded0
        for pid, v in self._cpu.items():
            used = v - self._cpu_start.get(pid, 0.0)
            part = self._part.get(pid, "?")
            self.peak.cpu_by_part[part] = self.peak.cpu_by_part.get(part, 0.0) + used
        self.peak.cpu_s = sum(self.peak.cpu_by_part.values())
        for part in self._part.values():
            self.peak.seen_by_part[part] = self.peak.seen_by_part.get(part, 0) + 1

    @property
    def cores_busy(self) -> float:
        """Average cores in use on the whole machine while sampled."""
        return self.machine_busy_s / self.wall_s if self.wall_s else float("nan")

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def _tree(self) -> list[Proc]:
        """This process and its descendants, parents before children, without the
        excluded processes' subtrees."""
        table = processes()
        children: dict[int, list[Proc]] = {}
        for p in table.values():
            children.setdefault(p.ppid, []).append(p)
        out, todo = [], [table[self.root]] if self.root in table else []
        while todo:
            p = todo.pop()
            if p.pid in self.exclude:
                continue
            out.append(p)
            todo.extend(children.get(p.pid, []))
        return out

    def sample(self) -> None:
        rss = 0
        parts: dict[str, int] = {}
        workers: set[int] = set()
        procs = self._tree()
        alive = []
        for p in procs:
            mem = rss_of(p.pid)
            if mem is None:
                continue
            alive.append(p.pid)
            self._cpu[p.pid] = p.cpu_s
            if p.pid == self.root:
                part = "driver"
            elif p.name.startswith("ray::"):
                workers.add(p.pid)
                # actors keep their process; a task worker runs whatever task comes next
                part = "actors" if "MapWorker" in p.name else "task workers"
            elif p.ppid in workers:
                part = "decoders"  # the task workers' isolated decoder processes
            elif p.name == "raylet":
                part = "raylet"  # holds the object store (pages it touched)
            else:
                part = "ray system"  # GCS, agents, monitors
            self._part[p.pid] = part
            rss += mem
            parts[part] = parts.get(part, 0) + mem
        self.peak.samples += 1
        if rss > self.peak.rss:
            self.peak.rss, self.peak.by_part, self.peak.processes = rss, parts, len(procs)
            pss = sum(v for v in map(pss_of, alive) if v is not None)
            self.peak.pss = max(self.peak.pss, pss)
