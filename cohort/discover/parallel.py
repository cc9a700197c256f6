"""Running discovery's work in parallel: as Ray tasks (`cohort.ray_session` connects or
starts Ray), or in this process (``local``).

`Runner.run_batches` isolates failures: a task that dies (a worker crash, an out-of-memory
kill, an unexpected exception) does not lose its batch; the batch's items are retried one
task each, and an item that fails on its own becomes the row ``lost_row(item, reason)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from cohort.config import DiscoveryConfig
from cohort.ray_session import RaySession

logger = logging.getLogger(__name__)


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

    def map(self, fn: Callable[[Any, Any], Any], context: Any, items: Sequence) -> list:
        """``[fn(context, item) for item in items]``, one task per item; failures raise."""
        if self.cfg.executor != "ray" or len(items) <= 1:
            return [fn(context, item) for item in items]
        import ray

        remote = ray.remote(num_cpus=1, max_retries=1)(fn)
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
        t0 = time.perf_counter()
        if self.cfg.executor == "ray":
            tables = self._ray_batches(fn, context, batches, lost_row, schema, what)
        else:
            tables = []
            for n, batch in enumerate(batches, start=1):
                try:
                    tables.append(fn(context, batch))
                except Exception as e:  # noqa: BLE001 - isolate, then retry item by item
                    logger.warning("%s %d failed (%s); retrying its %d items one by one",
                                   what, n, _reason(e), len(batch))
                    tables.append(self._local_items(fn, context, batch, lost_row, schema))
                _progress(what, n, len(batches), t0)
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def _ray_batches(self, fn, context, batches, lost_row, schema, what) -> list[pa.Table]:
        import ray
        from ray.exceptions import RayError

        # a batch is not retried whole: if its data kills a worker, it would again
        batch_task = ray.remote(num_cpus=1, max_retries=0)(fn)
        item_task = ray.remote(num_cpus=1, max_retries=1)(fn)
        ctx = ray.put(context)
        pending = {batch_task.remote(ctx, batch): i for i, batch in enumerate(batches)}
        results: list[pa.Table | None] = [None] * len(batches)
        retries: dict = {}  # item task -> (batch index, item index)
        items_out: dict[int, list] = {}
        t0, done = time.perf_counter(), 0
        while pending or retries:
            refs = list(pending) + list(retries)
            ready, rest = ray.wait(refs, num_returns=1)
            if rest:  # and whatever else is done by now, without waiting
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                if ref in pending:
                    i = pending.pop(ref)
                    try:
                        results[i] = ray.get(ref)
                        done += 1
                        _progress(what, done, len(batches), t0)
                    except RayError as e:
                        logger.warning("%s %d failed (%s); retrying its %d items one task "
                                       "each", what, i + 1, _reason(e), len(batches[i]))
                        items_out[i] = [None] * len(batches[i])
                        for j, item in enumerate(batches[i]):
                            retries[item_task.remote(ctx, [item])] = (i, j)
                    continue
                i, j = retries.pop(ref)
                try:
                    items_out[i][j] = ray.get(ref)
                except RayError as e:
                    logger.error("item %r failed on its own too: %s", batches[i][j], _reason(e))
                    items_out[i][j] = pa.Table.from_pylist(
                        [lost_row(batches[i][j], _reason(e))], schema=schema)
                if all(t is not None for t in items_out[i]):
                    results[i] = pa.concat_tables(items_out.pop(i))
                    done += 1
                    _progress(what, done, len(batches), t0)
        return results

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


def _progress(what: str, done: int, total: int, t0: float) -> None:
    step = max(1, total // 10)
    if done == total or done % step == 0:
        logger.info("%s: %d/%d done (%.1f s)", what, done, total, time.perf_counter() - t0)
