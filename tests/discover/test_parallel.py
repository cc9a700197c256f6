"""A Ray task that dies does not lose its batch: the items are retried one task each, and
only the item that kills its worker (or raises) becomes a 'lost' row."""

from __future__ import annotations

import pyarrow as pa

from cohort.config import DiscoveryConfig
from cohort.discover.parallel import Runner

SCHEMA = pa.schema([("item", pa.string()), ("status", pa.string())])


def _lost(item: str, reason: str) -> dict:
    return {"item": item, "status": f"lost: {reason}"}


def test_a_crashing_and_a_raising_item_lose_only_themselves(ray_local):
    def work(context: str, batch: list[str]) -> pa.Table:  # pickled by value (a local)
        import os

        for item in batch:
            if item == "segfault":
                os._exit(11)  # the worker process dies, as with a crash in C code
            if item == "bug":
                raise ValueError("cannot parse " + item)
        return pa.Table.from_pylist([{"item": i, "status": context} for i in batch],
                                    schema=SCHEMA)

    runner = Runner(DiscoveryConfig(executor="ray"))
    batches = [["a", "b"], ["c", "segfault", "d"], ["e", "bug"], ["f"]]
    table = runner.run_batches(work, "ok", batches, _lost, SCHEMA)
    rows = table.to_pylist()
    assert [r["item"] for r in rows] == ["a", "b", "c", "segfault", "d", "e", "bug", "f"]
    status = {r["item"]: r["status"] for r in rows}
    assert {k for k, v in status.items() if v == "ok"} == {"a", "b", "c", "d", "e", "f"}
    assert status["segfault"].startswith("lost: ") and "died" in status["segfault"].lower()
    assert status["bug"] == "lost: ValueError: cannot parse bug"


def test_the_local_executor_isolates_raising_items_too():
    def work(context, batch):
        if "bug" in batch:
            raise RuntimeError("boom")
        return pa.Table.from_pylist([{"item": i, "status": "ok"} for i in batch], schema=SCHEMA)

    runner = Runner(DiscoveryConfig(executor="local"))
    table = runner.run_batches(work, None, [["a", "bug", "b"]], _lost, SCHEMA)
    assert table.to_pylist() == [{"item": "a", "status": "ok"},
                                 {"item": "bug", "status": "lost: RuntimeError: boom"},
                                 {"item": "b", "status": "ok"}]
