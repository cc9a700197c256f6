"""`cohort benchmark ccccii`: a Clean-CC-CCII-shaped folder -> cache -> k-fold benchmark of
every model -> tables.

Tables under ``<out>/tables``:

    predictions.parquet          every test scan x model: true class, three probabilities
    fold_metrics.parquet/.md     accuracy, macro-F1, one-vs-rest macro AUC per fold x model
    table3_benchmark.parquet/.md the paper's Table III: mean ± std over folds beside
                                 measured G MAC, parameters, peak memory, latency per volume
    table5_depth.parquet/.md     the paper's Table V: the DST with 0, 1, ... blocks
    problems.parquet/.md         every folder or file left out, and why
"""

from __future__ import annotations

import io
import json
import logging
import time

import pandas as pd

from cohort.ccccii.benchmark import BenchmarkConfig, measure_models, run_model
from cohort.ccccii.cache import PROBLEM_COLUMNS, build_cache
from cohort.ccccii.layout import CLASSES, Problem, discover_scans
from cohort.ccccii.tables import (
    FOLD_METRICS_SCHEMA,
    PREDICTIONS_SCHEMA,
    TABLE3_SCHEMA,
    TABLE5_SCHEMA,
    fold_metrics,
    table3,
    table3_long,
    table5,
    table5_long,
)
from cohort.errors import ConfigError
from cohort.ray_session import RaySession
from cohort.storage import StorageOptions, filesystem, join, read_bytes, redact, write_bytes
from cohort.train.study import load_or_make_splits
from cohort.train.tables import parquet_bytes, to_markdown

logger = logging.getLogger(__name__)


def is_synthetic(data_url: str, options: StorageOptions | None = None) -> bool:
    """True for a set written by `cohort synth ccccii` (its ``_SUCCESS.json`` says so)."""
    fs, root = filesystem(data_url, options)
    marker = join(data_url, "_SUCCESS.json")
    if not fs.exists(join(root, "_SUCCESS.json")):
        return False
    try:
        return bool(json.loads(read_bytes(marker, options)).get("synthetic"))
    except (ValueError, AttributeError):
        return False


def _problems_table(problems: list[Problem]) -> pd.DataFrame:
    return pd.DataFrame(
        [(p.path, p.code, p.detail) for p in problems], columns=list(PROBLEM_COLUMNS)
    )


def _nothing_usable(data_url: str, problems: list[Problem]) -> ConfigError:
    shown = "; ".join(f"{p.path} [{p.code}]: {p.detail}" for p in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return ConfigError(
        f"no usable scan under {redact(data_url)}: expected "
        f"<class>/<patient_id>/<scan_id>/<slices>.png with class folders "
        f"{', '.join(CLASSES)}"
        + (f"; problems: {shown}{more}" if problems else "; the folder holds nothing")
    )


def benchmark_ccccii(
    data_url: str, out_url: str, config: BenchmarkConfig, *, options: StorageOptions | None = None
) -> str:
    """Run the whole benchmark (module docstring); return a short report for the console.
    A local Ray is started unless this runs inside a cluster job, and shut down at the end.

    Raises:
        ConfigError: nothing usable in ``data_url``, fewer than two classes, or too few
            patients for the folds.
    """
    with RaySession() as ray:
        return _benchmark(data_url, out_url, config, options, ray)


def _benchmark(
    data_url: str, out_url: str, config: BenchmarkConfig, options: StorageOptions | None,
    ray: RaySession
) -> str:
    t0 = time.perf_counter()
    sources, problems = discover_scans(data_url, options)
    if not sources:
        raise _nothing_usable(data_url, problems)
    synthetic = is_synthetic(data_url, options)
    ray.ensure()
    variants = config.variants()
    caches = {}
    for inp in {config.input_of(m) for m in variants}:
        cache_url = join(out_url, "cache", inp.key)
        index, read_problems = build_cache(sources, cache_url, inp, options)
        caches[inp] = (cache_url, index)
    problems = problems + read_problems  # the same scans fail whatever the input shape
    index = caches[config.input_of(variants[0])][1]
    if index.empty:
        raise _nothing_usable(data_url, problems)
    present = sorted(index["class_name"].unique(), key=CLASSES.index)
    if len(present) < 2:
        raise ConfigError(
            f"only class {present[0]} has usable scans under "
            f"{redact(data_url)}; the benchmark needs at least two of "
            f"{', '.join(CLASSES)} ({len(problems)} problem(s) in "
            f"{join(out_url, 'tables', 'problems.md')})"
        )
    tables = join(out_url, "tables")
    label = "SYNTHETIC data: " if synthetic else ""
    _write(
        tables,
        "problems",
        _problems_table(problems),
        None,
        f"{label}Folders and files left out of the benchmark",
        synthetic,
        options,
    )
    strata = dict(zip(index["patient_key"], index["class_name"], strict=True))
    splits = load_or_make_splits(index, out_url, config.study.splits, options, strata=strata)
    predictions = []
    for name in variants:
        cache_url, idx = caches[config.input_of(name)]
        logger.info("benchmarking %s (%d folds)", name, config.study.splits.folds)
        predictions.append(
            run_model(name, idx, splits, cache_url, out_url, config, options, synthetic=synthetic)
        )
    predictions = pd.concat(predictions, ignore_index=True)
    per_fold = fold_metrics(predictions)
    compute = measure_models(list(config.models), config)
    t3 = table3_long(per_fold, compute, config.models)
    shape = next(iter(compute.values())).input_shape
    _write(tables, "predictions", predictions, PREDICTIONS_SCHEMA, None, synthetic, options)
    _write(
        tables,
        "fold_metrics",
        per_fold,
        FOLD_METRICS_SCHEMA,
        f"{label}Clean-CC-CCII classification per fold and model",
        synthetic,
        options,
    )
    _write(
        tables,
        "table3_benchmark",
        t3,
        TABLE3_SCHEMA,
        f"{label}Clean-CC-CCII benchmark (Table III layout), mean ± std (ddof=1) over "
        f"{config.study.splits.folds} folds; compute per {shape} volume on "
        f"{t3['device'].iloc[0]}",
        synthetic,
        options,
        rendered=table3(t3),
    )
    report = [
        f"{label}Clean-CC-CCII benchmark: {len(index)} scans, "
        f"{index['patient_key'].nunique()} patients "
        f"({', '.join(f'{(index.class_name == c).sum()} {c}' for c in present)}), "
        f"{len(problems)} problem(s), {config.study.splits.folds} folds, "
        f"{len(variants)} network(s), in {time.perf_counter() - t0:.0f} s",
        "",
        to_markdown(table3(t3), "Table III layout", synthetic),
    ]
    ablation = config.ablation()
    if ablation:
        t5 = table5_long(per_fold, ablation)
        _write(
            tables,
            "table5_depth",
            t5,
            TABLE5_SCHEMA,
            f"{label}DST depth ablation on Clean-CC-CCII (Table V layout), "
            f"{config.dst} with its blocks varied, mean ± std over folds",
            synthetic,
            options,
            rendered=table5(t5),
        )
        report.append(to_markdown(table5(t5), "Table V layout", synthetic))
    report.append(f"Results: {out_url} (tables under {tables})")
    return "\n".join(report)


def _write(
    folder: str,
    name: str,
    table: pd.DataFrame,
    schema,
    title: str | None,
    synthetic: bool,
    options: StorageOptions | None,
    *,
    rendered: pd.DataFrame | None = None,
) -> None:
    """``<name>.parquet`` (with ``schema``, or plain strings) and, given a title,
    ``<name>.md`` of ``rendered`` (or of the table itself)."""
    if schema is None:
        import pyarrow as pa

        schema = pa.schema([(c, pa.string()) for c in table.columns])
    write_bytes(
        join(folder, f"{name}.parquet"), parquet_bytes(table, schema, synthetic=synthetic), options
    )
    if title:
        md = to_markdown(rendered if rendered is not None else table, title, synthetic)
        write_bytes(join(folder, f"{name}.md"), md.encode(), options)


def read_table(out_url: str, name: str, options: StorageOptions | None = None) -> pd.DataFrame:
    """One of the benchmark's Parquet tables (``name`` without suffix)."""
    return pd.read_parquet(
        io.BytesIO(read_bytes(join(out_url, "tables", f"{name}.parquet"), options))
    )
