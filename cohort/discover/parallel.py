"""Running discovery's work in parallel: as Ray tasks (`cohort.ray_session` connects or
starts Ray), or in this process (``local``).

`Runner.run_batches` isolates failures: a task that dies (a worker crash, an out-of-memory
kill, an unexpected exception) does not lose its batch; the batch's items are retried one
task each, and an item that fails on its own becomes the row ``lost_row(item, reason)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pyarrow as pa

from cohort.config import DiscoveryConfig
from cohort.ray_session import RaySession

logger = logging.getLogger(__name__)

# Batches in flight per slot: enough to keep the slots busy while results come back, few
# enough that the driver holds only a handful of batches.
_IN_FLIGHT_PER_SLOT = 2


class Runner:
    """Maps functions over batches on Ray tasks (``executor="ray"``) or here (``"local"``)."""

    def __init__(self, cfg: DiscoveryConfig | None = None) -> None:
        cfg = self.cfg = cfg or DiscoveryConfig()
        self.ray = RaySession(cfg.num_cpus)
        if cfg.executor == "ray":
            self.ray.ensure()

    @property
    def slots(self) -> int:
        """How many tasks run at once."""
        if self.cfg.executor == "ray":
            import ray

            return max(1, int(ray.available_resources().get("CPU", 1)))
        return 1

    def map(self, fn: Callable[[Any, Any], Any], context: Any, items: Sequence, *,
            pin: bool = False, here_if_one: bool = True) -> list:
        """``[fn(context, item) for item in items]``, one task per item; failures raise.

        ``pin`` keeps the tasks on this machine (they write to a folder only it has); a
        single item runs here unless ``here_if_one`` is False (work that must not weigh on
        this process's memory)."""
        if self.cfg.executor != "ray" or (len(items) <= 1 and here_if_one):
            return [fn(context, item) for item in items]
        import ray

        remote = ray.remote(num_cpus=1, max_retries=1, **_placement(pin))(fn)
        ctx = ray.put(context)
        return ray.get([remote.remote(ctx, item) for item in items])

    def run_batches(self, fn: Callable[[Any, list], pa.Table], context: Any,
                    batches: Sequence[list], lost_row: Callable[[Any, str], dict],
                    schema: pa.Schema, what: str = "batches") -> pa.Table:
        """``fn(context, batch)`` for every batch, concatenated in batch order.

        ``fn`` returns a table of ``schema`` with one row per item of its batch. A batch
        whose task fails is retried item by item; an item that still fails becomes
        ``lost_row(item, reason)``.
        """
        tables: list[pa.Table | None] = [None] * len(batches)

        def keep(i: int, table: pa.Table) -> None:
            tables[i] = table

        self.for_each_batch(fn, context, batches, lost_row, schema, keep, what=what)
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def for_each_batch(self, fn: Callable[[Any, list], pa.Table], context: Any,
                       batches: Iterable[list], lost_row: Callable[[Any, str], dict],
                       schema: pa.Schema, on_result: Callable[[int, pa.Table], None], *,
                       what: str = "batches", pin: bool = False) -> int:
        """`run_batches` without holding the results: ``on_result(i, table)`` is called for
        each batch as it finishes (in any order), and ``batches`` may be a generator, drawn
        only as tasks free up (a few per slot in flight). Returns the number of batches.

        ``pin`` keeps the tasks on this machine (they write to a folder only it has)."""
        if self.cfg.executor == "ray":
            return self._ray_batches(fn, context, batches, lost_row, schema, on_result,
                                     what, pin)
        t0, n = time.perf_counter(), 0
        for n, batch in enumerate(batches, start=1):
            try:
                table = fn(context, batch)
            except Exception as e:  # noqa: BLE001 - isolate, then retry item by item
                logger.warning("%s %d failed (%s); retrying its %d items one by one",
                               what, n, _reason(e), len(batch))
                table = self._local_items(fn, context, batch, lost_row, schema)
            on_result(n - 1, table)
            _progress(what, n, None, t0)
        return n

    def _ray_batches(self, fn, context, batches, lost_row, schema, on_result, what,
                     pin) -> int:
        import ray
        from ray.exceptions import RayError

        # a batch is not retried whole: if its data kills a worker, it would again
        batch_task = ray.remote(num_cpus=1, max_retries=0, **_placement(pin))(fn)
        item_task = ray.remote(num_cpus=1, max_retries=1, **_placement(pin))(fn)
        ctx = ray.put(context)
        todo = iter(enumerate(batches))
        window = _IN_FLIGHT_PER_SLOT * max(1, int(ray.cluster_resources().get("CPU", 1)))
        pending: dict = {}  # batch task -> (batch index, batch)
        retries: dict = {}  # item task -> (batch index, item index)
        items_out: dict[int, tuple[list, list]] = {}  # batch index -> (batch, tables)
        t0, done, submitted = time.perf_counter(), 0, 0

        def refill() -> None:
            nonlocal submitted
            while len(pending) + len(retries) < window:
                nxt = next(todo, None)
                if nxt is None:
                    return
                pending[batch_task.remote(ctx, nxt[1])] = nxt
                submitted += 1

        refill()
        while pending or retries:
            refs = list(pending) + list(retries)
            ready, rest = ray.wait(refs, num_returns=1)
            if rest:  # and whatever else is done by now, without waiting
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                if ref in pending:
                    i, batch = pending.pop(ref)
                    try:
                        table = ray.get(ref)
                    except RayError as e:
                        logger.warning("%s %d failed (%s); retrying its %d items one task "
                                       "each", what, i + 1, _reason(e), len(batch))
                        items_out[i] = (batch, [None] * len(batch))
                        for j, item in enumerate(batch):
                            retries[item_task.remote(ctx, [item])] = (i, j)
                        continue
                    on_result(i, table)
                    done += 1
                    _progress(what, done, None, t0)
                    continue
                i, j = retries.pop(ref)
                batch, tables = items_out[i]
                try:
                    tables[j] = ray.get(ref)
                except RayError as e:
                    logger.error("item %r failed on its own too: %s", batch[j], _reason(e))
                    tables[j] = pa.Table.from_pylist([lost_row(batch[j], _reason(e))],
                                                     schema=schema)
                if all(t is not None for t in tables):
                    del items_out[i]
                    on_result(i, pa.concat_tables(tables))
                    done += 1
                    _progress(what, done, None, t0)
            refill()
        return submitted

    def _local_items(self, fn, context, batch, lost_row, schema) -> pa.Table:
        tables = []
        for item in batch:
            try:
                tables.append(fn(context, [item]))
            except Exception as e:  # noqa: BLE001
                logger.error("item %r failed on its own too: %s", item, _reason(e))
                tables.append(pa.Table.from_pylist([lost_row(item, _reason(e))], schema=schema))
        return pa.concat_tables(tables)

    def close(self) -> None:
        """Shut Ray down if this runner started it."""
        self.ray.close()


def _reason(e: BaseException) -> str:
    """A one-line reason: the exception type and the first line of its message (for a
    task's exception, of the exception raised inside the task)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException) and cause is not e:
        return _reason(cause)
    text = str(e).strip().splitlines()
    first = next((line for line in text if line.strip()), "")
    return f"{type(e).__name__}: {first[:300]}" if first else type(e).__name__


def _placement(pin: bool) -> dict:
    """Ray task options that keep a task on this node when ``pin``, where it can run: a
    cluster's head often has no CPUs for tasks (cluster.yaml), and a local folder the driver
    stages in is then one the other nodes share (as they share a local input), so the task
    runs elsewhere rather than never."""
    if not pin:
        return {}
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=True)}


def _progress(what: str, done: int, total: int | None, t0: float) -> None:
    step = max(1, total // 10) if total else 50
    if done == total or done % step == 0:
        logger.info("%s: %d%s done (%.1f s)", what, done, f"/{total}" if total else "",
                    time.perf_counter() - t0)
