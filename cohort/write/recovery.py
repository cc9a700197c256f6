"""Runs that stopped before they published (a killed driver, a head node lost, an error out
of Ray): what they finished is kept, the rest is left to the run that takes over.

A run records what it is in ``_run.json`` before its first part, and writes its rows in
parts, each committed by its ``series`` file (`cohort.write.runs.RunWriter`). The next run
on the output, which owns it (`cohort.write.ownership.claim`), recovers every run folder
without a marker:

- files of parts that were never committed (the driver died while writing them, or a
  temporary file of an interrupted write) and parts that cannot be read are deleted;
- pictures, label maps, masks and DICOM files of series without a committed row are
  deleted: those series are processed again, by the new run;
- a run with committed rows is published as an *interrupted* run: its marker holds its
  record, counts from the committed rows, and ``interrupted`` (who recovered it, when, and
  how many series it did not write). Its series are finished like those of any published
  run, so every series keeps exactly one row;
- a run without a committed row is removed, as nothing in it was ever finished.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cohort.storage import (
    StorageOptions,
    filesystem,
    join,
    publish_marker,
    read_bytes,
    redact,
)
from cohort.write.runs import (
    MARKER,
    RUN_RECORD,
    TABLES,
    run_url,
    safe_name,
    unfinished_runs,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovered:
    """What `recover_unfinished` did."""

    published: dict[str, int] = field(default_factory=dict)  # run id -> series rows kept
    removed: list[str] = field(default_factory=list)  # run ids without a committed row


def recover_unfinished(out_url: str, by_run: str, options: StorageOptions | None = None
                       ) -> Recovered:
    """Recover every run folder under ``out_url`` without a marker (see the module
    docstring); call it only while owning the output. ``by_run``: the run recovering them,
    recorded in their markers."""
    published: dict[str, int] = {}
    removed: list[str] = []
    for run_id in unfinished_runs(out_url, options):
        url = run_url(out_url, run_id)
        committed = _committed_rows(url, options)
        if committed.num_rows == 0:
            fs, path = filesystem(url, options)
            fs.rm(path, recursive=True)
            removed.append(run_id)
            continue
        _remove_uncommitted(url, set(committed["part"].to_pylist()),
                            {safe_name(k) for k in committed["series_key"].to_pylist() if k},
                            options)
        publish_marker(url, _payload(url, run_id, committed, by_run, options), options,
                       name=MARKER)
        published[run_id] = committed.num_rows
        logger.warning("run %s was stopped before it ended: its %d finished series rows are "
                       "kept (published as an interrupted run); run %s does the rest",
                       run_id, committed.num_rows, by_run)
    if removed:
        logger.warning("removed %d unfinished run folder(s) of runs stopped before they "
                       "finished any series (nothing in them was ever visible): %s",
                       len(removed), ", ".join(removed))
    return Recovered(published, removed)


def _committed_rows(url: str, options: StorageOptions | None) -> pa.Table:
    """``part``, ``series_key`` and ``status`` of every readable series part of a run."""
    fs, folder = filesystem(join(url, "series"), options)
    fs.invalidate_cache()  # a listing cached before the parts were written hides them
    tables = []
    if fs.exists(folder):
        for path in sorted(fs.find(folder)):
            name = os.path.basename(path)
            if not name.endswith(".parquet") or name.startswith("."):
                continue  # a temporary file: removed with the part's other leftovers
            try:
                table = pq.read_table(io.BytesIO(read_bytes(join(url, "series", name),
                                                            options)),
                                      columns=["series_key", "status"])
            except (OSError, ValueError, pa.ArrowException) as e:
                logger.warning("a series part of the interrupted run %s cannot be read (%s); "
                               "its series are processed again", redact(url), e)
                continue
            tables.append(table.append_column("part", pa.array([name] * table.num_rows,
                                                               pa.string())))
    if not tables:
        return pa.table({"series_key": pa.array([], pa.string()),
                         "status": pa.array([], pa.string()),
                         "part": pa.array([], pa.string())})
    return pa.concat_tables(tables)


def _remove_uncommitted(url: str, parts: set[str], names: set[str],
                        options: StorageOptions | None) -> None:
    """Delete what the run wrote that no committed row refers to: table files of other
    parts, and per-series files (``qc/<name>.png``, ``dicom/<name>/``, ...) of series
    whose safe name is not in ``names``."""
    fs, root = filesystem(url, options)
    fs.invalidate_cache()
    for entry in fs.ls(root, detail=True):
        folder = entry["name"].rstrip("/")
        if entry.get("type") != "directory":
            continue  # _run.json
        base = os.path.basename(folder)
        for item in fs.ls(folder, detail=True):
            name = os.path.basename(item["name"].rstrip("/"))
            keep = name in parts if base in TABLES else _names_a_series(name, names)
            if not keep:
                fs.rm(item["name"], recursive=True)


#: the extensions of per-series files in a run folder (pictures, label maps, masks)
_SERIES_FILE_SUFFIXES = (".png", ".nii.gz")


def _names_a_series(name: str, names: set[str]) -> bool:
    """Whether file or folder ``name`` is one of ``names`` (``dicom/<name>/``) or one of
    them with its extension (``<name>.png``, ``<name>.nii.gz``)."""
    return name in names or any(name.endswith(x) and name[:-len(x)] in names
                                for x in _SERIES_FILE_SUFFIXES)


def _payload(url: str, run_id: str, committed: pa.Table, by_run: str,
             options: StorageOptions | None) -> dict:
    """The marker of an interrupted run: its record, counts from the committed rows."""
    try:
        record = json.loads(read_bytes(join(url, RUN_RECORD), options))
    except (OSError, ValueError):  # killed before its record, or an older version's run
        record = {"what": "cohort run", "run_id": run_id}
    statuses = dict(zip(*(c.to_pylist() for c in pc.value_counts(
        committed["status"]).flatten()), strict=True))
    before = record.get("counts") or {}
    counts = {s: int(statuses.get(s, 0)) for s in ("ok", "skipped", "error")}
    counts.update(finished_earlier=int(before.get("finished_earlier", 0)),
                  left_for_later=int(before.get("left_for_later", 0)))
    interrupted = {"recovered_by": by_run,
                   "recovered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "rows": committed.num_rows}
    if "series_in_manifest" in record:
        interrupted["not_written"] = (record["series_in_manifest"] - counts["finished_earlier"]
                                      - counts["left_for_later"] - committed.num_rows)
    return {**record, "counts": counts, "interrupted": interrupted}
