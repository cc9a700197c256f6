"""Clean-CC-CCII scans prepared once into a cache of model inputs, so that epochs, folds and
models never decode slice images again.

Layout under the cache URL (one cache per input shape, e.g. ``.../128x128x64``)::

    inputs/<class>/<patient_id>/<scan_id>.npy   float16 (size, size, depth), values in [0, 1]
    index.parquet                               one row per cached scan (INDEX_COLUMNS)
    problems.parquet                            scans left out while reading (path, code, ...)
    cache.json                                  the input shape and the scans it was built
                                                from, written last; a cache that matches
                                                both is reused as it is

Scans are read in parallel as Ray tasks (a chunk of scans each) when Ray is initialised,
else one by one here. A scan that cannot be read becomes a problem row, never a crash.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from cohort.ccccii.images import read_scan, resize
from cohort.ccccii.layout import Problem, ScanSource
from cohort.errors import ConfigError, SeriesError
from cohort.storage import StorageOptions, filesystem, join, read_bytes, write_bytes

logger = logging.getLogger(__name__)

INDEX_COLUMNS = (
    "scan_key",
    "patient_key",
    "label",
    "class_name",
    "path",
    "depth",
    "source_rows",
    "source_columns",
    "source_depth",
    "source",
)
PROBLEM_COLUMNS = ("path", "code", "detail")


@dataclass(frozen=True)
class InputConfig:
    """The model input every scan is resized to (see `cohort.ccccii.images.resize`)."""

    size: int = 128  # pixels per side in-plane (the paper: 128)
    depth: int | None = 64  # slices (the paper: 64); None keeps each scan's native depth
    max_len: int = 512  # native depth: deeper scans keep every f-th slice

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 512:
            raise ConfigError(f"input size must be 16-512 pixels, got {self.size}")
        if self.depth is not None and not 2 <= self.depth <= self.max_len:
            raise ConfigError(f"input depth must be 2-{self.max_len} slices, got {self.depth}")

    @property
    def key(self) -> str:
        """'128x128x64', or '128x128xnative'."""
        return f"{self.size}x{self.size}x{self.depth or 'native'}"


def prepare_scans(
    sources: list[ScanSource],
    cache_url: str,
    config: InputConfig,
    options: StorageOptions | None = None,
) -> list[dict | Problem]:
    """Read, resize and write each scan; an index row (dict) or a `Problem` per scan."""
    out: list[dict | Problem] = []
    for s in sources:
        try:
            volume = read_scan(s, options)
        except SeriesError as e:
            out.append(
                Problem(e.uri or s.files[0], e.code.value, f"scan {s.scan_key} left out: {e}")
            )
            continue
        array = resize(volume, config.size, config.depth, config.max_len)
        rel = f"inputs/{s.scan_key}.npy"
        buf = io.BytesIO()
        np.save(buf, array.astype(np.float16))
        write_bytes(join(cache_url, rel), buf.getvalue(), options)
        out.append(
            {
                "scan_key": s.scan_key,
                "patient_key": s.patient_key,
                "label": s.label,
                "class_name": s.class_name,
                "path": rel,
                "depth": int(array.shape[-1]),
                "source_rows": int(volume.shape[0]),
                "source_columns": int(volume.shape[1]),
                "source_depth": int(volume.shape[2]),
                "source": s.files[0].rsplit("/", 1)[0] if s.kind == "slices" else s.files[0],
            }
        )
    return out


def build_cache(
    sources: list[ScanSource],
    cache_url: str,
    config: InputConfig,
    options: StorageOptions | None = None,
    *,
    chunk: int = 8,
) -> tuple[pd.DataFrame, list[Problem]]:
    """The cache index (columns INDEX_COLUMNS) and the scans left out while reading.

    Reuses the cache at ``cache_url`` when it was built with the same input shape from the
    same scans (see module).
    """
    stamp = {
        "input": asdict(config),
        "scans": sorted(s.scan_key for s in sources),
        "files": sum(len(s.files) for s in sources),
    }
    fs, root = filesystem(cache_url, options)
    marker = join(cache_url, "cache.json")
    if fs.exists(join(root, "cache.json")) and json.loads(read_bytes(marker, options)) == stamp:
        index = pd.read_parquet(io.BytesIO(read_bytes(join(cache_url, "index.parquet"), options)))
        problems = pd.read_parquet(
            io.BytesIO(read_bytes(join(cache_url, "problems.parquet"), options))
        )
        logger.info("reusing the cache of %d scans at %s", len(index), cache_url)
        return index, [Problem(*r) for r in problems.itertuples(index=False)]
    chunks = [sources[i : i + chunk] for i in range(0, len(sources), chunk)]
    import ray

    if ray.is_initialized() and len(chunks) > 1:
        task = ray.remote(num_cpus=1)(prepare_scans)
        results = ray.get([task.remote(c, cache_url, config, options) for c in chunks])
    else:
        results = [prepare_scans(c, cache_url, config, options) for c in chunks]
    rows = [r for part in results for r in part if isinstance(r, dict)]
    problems = [r for part in results for r in part if isinstance(r, Problem)]
    for p in problems:
        logger.warning("left out %s [%s]: %s", p.path, p.code, p.detail)
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    table = pd.DataFrame([asdict(p) for p in problems], columns=list(PROBLEM_COLUMNS))
    write_bytes(join(cache_url, "index.parquet"), _parquet(index), options)
    write_bytes(join(cache_url, "problems.parquet"), _parquet(table), options)
    write_bytes(marker, json.dumps(stamp).encode(), options)
    logger.info("cached %d scans (%s) under %s", len(index), config.key, cache_url)
    return index, problems


def _parquet(df: pd.DataFrame) -> bytes:
    """Plain Parquet; an empty table keeps string columns (not Arrow's null type)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = None if len(df) else pa.schema([(c, pa.string()) for c in df.columns])
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), buf)
    return buf.getvalue()
