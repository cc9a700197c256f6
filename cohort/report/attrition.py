"""The attrition of a cohort, as a study flow diagram counts it: archive objects -> image
series found -> series selected (one per study) -> series analysed -> series with calcium
volumes, with the number excluded at each step by reason.

Series-level counts come from the published ``series`` view (the newest row per series), so
they equal what `cohort query` counts. The index (``manifest.parquet`` and its marker) adds
what the tables cannot know: how many objects the archive held and why some were not
images, which errors were found by the index's checks rather than in the run, and which
selected series have no row yet (left for a later run with ``--max-series``). Without the
index the flow starts at the series and counts every error as failed in the run.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from cohort.errors import StorageError
from cohort.storage import StorageOptions, join, read_bytes, redact

logger = logging.getLogger(__name__)

#: why an ok row has no volumes when its error_code is empty: no mask was asked for
NO_MASK = "no_calcium_mask"


@dataclass(frozen=True)
class Index:
    """What the report needs of an index: object counts and each series' manifest status."""

    url: str
    objects: int  # archive objects listed
    not_images: dict[str, int]  # objects that are not usable images, by error code
    series_status: dict[str, tuple[str, str | None]]  # key -> (status, error code)


@dataclass(frozen=True)
class Flow:
    """The counts of the flow diagram. Every series of the union of the index and the
    tables is counted once, at the step where it left the flow (or at the end)."""

    index_url: str | None  # None: no index was found, the flow starts at the series
    objects: int | None  # archive objects listed (None without the index)
    not_images: dict[str, int] = field(default_factory=dict)  # by error code
    series: int = 0  # image series (stacks) found
    not_selected: dict[str, int] = field(default_factory=dict)  # skipped, by reason
    index_failed: dict[str, int] = field(default_factory=dict)  # failed the index's checks
    selected: int = 0
    not_yet: int = 0  # selected, no published row yet (--max-series left them for later)
    run_failed: dict[str, int] = field(default_factory=dict)  # error rows of the run, by code
    analysed: int = 0  # ok rows
    patients: int = 0  # distinct patient keys among the ok rows
    studies: int = 0  # distinct study keys among the ok rows
    no_volumes: dict[str, int] = field(default_factory=dict)  # ok rows without volumes
    with_volumes: int = 0

    @property
    def image_objects(self) -> int | None:
        return None if self.objects is None else self.objects - sum(self.not_images.values())


def read_index(index_url: str, options: StorageOptions | None = None) -> Index:
    """The counts of the index published under ``index_url`` (`cohort index`).

    Raises:
        StorageError: no complete index there.
    """
    marker = json.loads(read_bytes(join(index_url, "_SUCCESS.json"), options))
    data = read_bytes(join(index_url, marker.get("manifest", "manifest.parquet")), options)
    table = pq.read_table(io.BytesIO(data), columns=["kind", "status", "error_code",
                                                     "series_key"])
    kinds, statuses, codes, keys = (table.column(c).to_pylist() for c in table.column_names)
    not_images = Counter(c or "unknown" for k, c in zip(kinds, codes, strict=True)
                         if k == "object")
    series = {key: (s, c) for k, s, c, key in zip(kinds, statuses, codes, keys, strict=True)
              if k == "series" and key is not None}
    objects = marker.get("n_objects")
    if objects is None:  # an index written before the marker counted them
        objects = sum(not_images.values()) + len(series)
    return Index(index_url, int(objects), dict(not_images.most_common()), series)


def find_index(out_url: str, recorded: list[str],
               options: StorageOptions | None = None) -> Index | None:
    """The index of the newest run that can still be read: the URLs the run manifests
    recorded (newest first), then ``<out>/index``; None when none is readable."""
    tried = list(dict.fromkeys(u for u in [*recorded, join(out_url, "index")] if u))
    for url in tried:
        try:
            return read_index(url, options)
        except (StorageError, OSError, ValueError) as e:
            logger.info("no index at %s (%s)", redact(url), e)
    logger.warning("no index found for %s (tried %s): the flow diagram starts at the series",
                   redact(out_url), ", ".join(redact(u) for u in tried))
    return None


def count_flow(rows: list[dict], index: Index | None) -> Flow:
    """The flow of the series rows (newest per series: ``series_key``, ``status``,
    ``error_code``, ``volumes_computed``, ``patient_key``, ``study_key``) and the index."""
    seen = {r["series_key"] for r in rows}
    manifest = index.series_status if index else {}
    not_selected: Counter = Counter()
    index_failed: Counter = Counter()
    run_failed: Counter = Counter()
    no_volumes: Counter = Counter()
    analysed = with_volumes = 0
    patients, studies = set(), set()
    for r in rows:
        code = r.get("error_code") or "unknown"
        if r["status"] == "skipped":
            not_selected[code] += 1
        elif r["status"] == "error":
            found_by_index = manifest.get(r["series_key"], ("", None))[0] == "failed"
            (index_failed if found_by_index else run_failed)[code] += 1
        else:
            analysed += 1
            patients.add(r.get("patient_key"))
            studies.add(r.get("study_key") or r["series_key"])
            if r.get("volumes_computed"):
                with_volumes += 1
            else:
                no_volumes[r.get("error_code") or NO_MASK] += 1
    not_yet = 0
    for key, (status, code) in manifest.items():  # series the tables do not hold (yet)
        if key in seen:
            continue
        if status == "selected":
            not_yet += 1
        elif status == "failed":
            index_failed[code or "unknown"] += 1
        else:
            not_selected[code or "unknown"] += 1
    n_series = len(seen | set(manifest))
    excluded = sum(not_selected.values()) + sum(index_failed.values())
    return Flow(
        index_url=index.url if index else None, objects=index.objects if index else None,
        not_images=dict(index.not_images) if index else {}, series=n_series,
        not_selected=dict(not_selected.most_common()),
        index_failed=dict(index_failed.most_common()), selected=n_series - excluded,
        not_yet=not_yet, run_failed=dict(run_failed.most_common()), analysed=analysed,
        patients=len(patients - {None}), studies=len(studies),
        no_volumes=dict(no_volumes.most_common()), with_volumes=with_volumes)
