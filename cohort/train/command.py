"""`cohort train localization`: data + labels -> cache -> k-fold study (and ablations)."""

from __future__ import annotations

import io
import logging
import time
from dataclasses import replace

import pandas as pd

from cohort.errors import ConfigError
from cohort.model.dst import ABLATIONS, build_config
from cohort.ray_session import RaySession
from cohort.storage import StorageOptions, filesystem, join, read_bytes, write_bytes
from cohort.train.data import (
    SeriesSource,
    build_cache,
    load_labels,
    synthetic_sources,
)
from cohort.train.study import StudyConfig, run_study
from cohort.train.tables import (
    ABLATION_SCHEMA,
    ablation_long,
    ablation_table,
    fold_metrics,
    parquet_bytes,
    to_markdown,
)

logger = logging.getLogger(__name__)


def sources_and_labels(data_url: str, labels_url: str | None,
                       options: StorageOptions | None) -> tuple[list[SeriesSource],
                                                                pd.DataFrame, bool]:
    """Series and landmark table from a synthetic cohort (its ground truth is the label
    table) or from a manifest written by `cohort index` plus a landmark table.

    Returns:
        (sources, labels, synthetic)
    """
    fs, root = filesystem(data_url, options)
    if fs.exists(join(root, "ground_truth.parquet")):
        sources, labels = synthetic_sources(data_url, options)
        if labels_url:
            labels = load_labels(labels_url, options)
        return sources, labels, True
    if fs.exists(join(root, "manifest.parquet")):
        from cohort.discover.manifest import read_manifest

        manifest = read_manifest(data_url, options).to_pandas()
        chosen = manifest[(manifest["kind"] == "series") & (manifest["status"] == "selected")]
        sources = [SeriesSource(r.series_uid, str(r.patient_id), tuple(r.files))
                   for r in chosen.itertuples()]
        if not labels_url:
            raise ConfigError("--labels is needed with a manifest: a Parquet or CSV table of "
                              "series_uid, patient_key and the six <landmark>_slice columns")
        return sources, load_labels(labels_url, options), False
    raise ConfigError(f"{data_url} is neither a synthetic cohort (ground_truth.parquet) nor "
                      "an indexed archive (manifest.parquet); run `cohort index` on the "
                      "archive first and give its --out folder as --data")


def train_localization(data_url: str, out_url: str, config: StudyConfig, *,
                       labels_url: str | None = None, ablations: tuple[str, ...] = (),
                       options: StorageOptions | None = None) -> str:
    """Run the study (and its ablations); return a short report for the console. A local
    Ray is started unless this runs inside a cluster job, and shut down at the end."""
    with RaySession() as ray:
        return _train_localization(data_url, out_url, config, labels_url, ablations, options,
                                   ray)


def _train_localization(data_url: str, out_url: str, config: StudyConfig,
                        labels_url: str | None, ablations: tuple[str, ...],
                        options: StorageOptions | None, ray: RaySession) -> str:
    t0 = time.perf_counter()
    for a in ablations:
        if a not in ABLATIONS:
            raise ConfigError(f"unknown ablation {a!r}; choose from {', '.join(ABLATIONS)}")
    build_config(config.train.model)  # fail early on a bad model name
    sources, labels, synthetic = sources_and_labels(data_url, labels_url, options)
    ray.ensure()
    cache_url = join(out_url, "cache")
    logger.info("preparing %d labelled series into %s", len(labels), cache_url)
    index = build_cache(sources, labels, cache_url, options, config.model_input)
    written = run_study(index, cache_url, out_url, config, options, synthetic=synthetic)
    report = [f"{'SYNTHETIC ' if synthetic else ''}localization study: {len(index)} series, "
              f"{index['patient_key'].nunique()} patients, {config.splits.folds} folds, "
              f"model {config.train.model}, in {time.perf_counter() - t0:.0f} s"]
    if ablations:
        variants = {"full": fold_metrics(pd.read_parquet(io.BytesIO(read_bytes(
            written["predictions.parquet"], options))))}
        splits = read_bytes(join(out_url, "splits.parquet"), options)
        for a in ablations:
            sub = join(out_url, "ablations", a)
            write_bytes(join(sub, "splits.parquet"), splits, options)  # same patients
            cfg = replace(config, train=replace(config.train, model=f"{config.train.model}+{a}"))
            w = run_study(index, cache_url, sub, cfg, options, synthetic=synthetic)
            variants[a] = fold_metrics(pd.read_parquet(io.BytesIO(read_bytes(
                w["predictions.parquet"], options))))
        tables = join(out_url, "tables")
        write_bytes(join(tables, "table4_ablation.parquet"),
                    parquet_bytes(ablation_long(variants), ABLATION_SCHEMA,
                                  synthetic=synthetic), options)
        md = to_markdown(ablation_table(variants), "Ablations (Table IV layout)", synthetic)
        write_bytes(join(tables, "table4_ablation.md"), md.encode(), options)
        table4 = join(tables, "table4_ablation.md")
        depth = {k: v for k, v in variants.items() if k == "full" or k.startswith("blocks_")}
        if len(depth) > 1:  # Table V: the number of DepthAttentionBlocks
            full_blocks = build_config(config.train.model).n_blocks
            depth = {(f"{full_blocks} blocks (full)" if k == "full" else
                      k.replace("blocks_", "") + " blocks"): v for k, v in depth.items()}
            write_bytes(join(tables, "table5_depth.parquet"),
                        parquet_bytes(ablation_long(depth), ABLATION_SCHEMA,
                                      synthetic=synthetic), options)
            md = to_markdown(ablation_table(depth), "Depth ablation (Table V layout)",
                             synthetic)
            write_bytes(join(tables, "table5_depth.md"), md.encode(), options)
        report.append(f"  ablations: {', '.join(ablations)} -> {table4}")
    summary = read_bytes(written["table2_summary.md"], options).decode()
    report += ["", summary, f"Results: {out_url} (tables under {join(out_url, 'tables')})"]
    return "\n".join(report)
