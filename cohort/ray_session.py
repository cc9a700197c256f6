"""Ray's lifecycle for every command, in one place: connect or start, keep it quiet, and shut
down only what we started.

`RaySession` is the one way `cohort` gets a Ray: inside ``ray job submit`` (``RAY_ADDRESS``)
it joins the cluster; where Ray is already initialised (a test session, a notebook) it
reuses it; otherwise it starts a local instance with the CPUs the user gave (0: all), and
shuts it down, agents included, when the outermost session that started it ends. The
indexer, the cohort job, training and the benchmark all go through it, so a command starts
Ray at most once.

`quiet_ray_logs` keeps Ray's own messages below warnings out of the console (they stay in
Ray's log files under /tmp/ray); ``cohort -v`` leaves them on.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

#: seconds an idle Ray worker process lives on a node that has more workers than CPUs (Ray's
#: own default: 1 s). A worker of the CPU stage keeps an isolated decoder process with torch
#: and the readers loaded, about 2 CPU seconds to start; the finish and read tasks' extra
#: workers put a 2-CPU node over that count all the time, so with Ray's default the raylet
#: stopped idle workers and started new ones all through a run: 22 workers and 14 decoders
#: for 100 scans, a quarter of the job's CPU (`benchmarks/bench_pipeline.py`). Idle workers
#: still go first when a node runs short of memory (Ray's OOM policy).
IDLE_WORKER_S = 60
IDLE_WORKER_ENV = "RAY_idle_worker_killing_time_threshold_ms"


def keep_idle_workers() -> None:
    """Let idle workers of a Ray started from this process live `IDLE_WORKER_S` (the raylet
    reads it from the environment when it starts; a value already set wins). A cluster's
    nodes need it where they start: ``RAY_idle_worker_killing_time_threshold_ms=60000 ray
    start ...``."""
    os.environ.setdefault(IDLE_WORKER_ENV, str(IDLE_WORKER_S * 1000))


def quiet_ray_logs() -> None:
    """Ray's own console output below warnings off: its C++ core's error lines about
    restartable actors (ray-project/ray#57733, harmless), Ray Data's operator dumps."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


def ensure_ray(num_cpus: int = 0) -> bool:
    """Connect to Ray: keep an existing connection, join the cluster of ``RAY_ADDRESS``
    (inside ``ray job submit``), else start a local instance with ``num_cpus`` CPUs (0: all).

    Returns:
        True when this call started or joined Ray (the caller shuts it down; prefer
        `RaySession`, which does).
    """
    import ray

    if ray.is_initialized():
        return False
    verbose = logging.getLogger("cohort").isEnabledFor(logging.INFO)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
    else:
        keep_idle_workers()
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=verbose, logging_level=logging.WARNING)
    logger.info("Ray started (%s CPUs)", ray.cluster_resources().get("CPU"))
    return True


class RaySession:
    """Ray for the duration of a ``with`` block, started on first need (see the module
    docstring): `ensure` connects or starts it; leaving the block shuts down what this
    session started, and nothing else.

    Args:
        num_cpus: CPUs of a local instance (0: all of this machine's).
    """

    def __init__(self, num_cpus: int = 0) -> None:
        self.num_cpus = num_cpus
        self.started = False

    def ensure(self) -> None:
        """Connect to or start Ray now, if not done yet."""
        if ensure_ray(self.num_cpus):
            self.started = True

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False
            logger.info("Ray shut down")

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
