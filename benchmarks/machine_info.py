"""One line that says which machine a benchmark ran on (shared by the benchmark scripts)."""

from __future__ import annotations

import platform
from pathlib import Path

import psutil


def machine() -> str:
    """'2 cores (AMD EPYC ...), 24 GiB RAM, Linux 6.1...' (counts and memory from psutil;
    the CPU's model name, which psutil does not give, from /proc/cpuinfo where there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 1024**3
    cores = psutil.cpu_count()
    physical = psutil.cpu_count(logical=False)
    if physical and physical != cores:
        cores = f"{cores} ({physical} physical)"
    return f"{cores} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"
