"""What the report shows, gathered once from the published tables of an output URL.

Everything comes through the views of `cohort.query` (series, landmarks, segments,
patient_changes) and the run manifests; the index adds the archive's object counts
(`cohort.report.attrition`). No name, birth date or archive path is read: the tables hold
none (patient keys are pseudonymous).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import duckdb
import pandas as pd

from cohort.errors import ConfigError
from cohort.query import connect
from cohort.report.attrition import Flow, count_flow, find_index
from cohort.report.config import ReportConfig
from cohort.storage import StorageOptions, filesystem, redact
from cohort.write.runs import published_runs, run_manifest

logger = logging.getLogger(__name__)

#: series columns the report reads (the view has ~150)
SERIES_COLUMNS = (
    "run_id", "series_key", "patient_key", "study_key", "study_date", "status", "error_code",
    "volumes_computed", "total_calcium_mm3", "total_calcium_mm3_low", "total_calcium_mm3_high",
    "calcium_interval_level", "mask_source", "risk_group", "risk_scheme", "qc_flags",
    "low_confidence_landmarks", "confidence_threshold", "confidence_threshold_source",
    "qc_picture", "model_name", "model_sha256", "model_trained_on", "slice_thickness_mm",
    "manufacturer", "seconds_prepare", "seconds_inference", "seconds_segment",
    "seconds_quantify",
)


@dataclass(frozen=True)
class Run:
    """One published run, from its manifest (``_SUCCESS.json``)."""

    run_id: str
    manifest: dict

    @property
    def model(self) -> dict:
        return self.manifest.get("model") or {}

    @property
    def segmenter(self) -> dict:
        return self.manifest.get("segmenter") or {}

    @property
    def interrupted(self) -> dict:
        """How a run stopped before it ended was taken over (``recovered_by``,
        ``recovered_at``, ``rows``, ``not_written``; `cohort.write.recovery`); empty: the
        run ended. An interrupted run has no wall time or rate."""
        return self.manifest.get("interrupted") or {}

    @property
    def risk(self) -> tuple[tuple[float, ...], tuple[str, ...]]:
        """The run's risk cut-offs (mm^3) and group names; empty when not recorded."""
        q = (self.manifest.get("config") or {}).get("quantify") or {}
        return (tuple(q.get("risk_thresholds_mm3") or ()), tuple(q.get("risk_groups") or ()))


@dataclass(frozen=True)
class ReportData:
    """The tables of one output URL, as the report's sections need them."""

    out_url: str  # redacted
    generated: str  # UTC time the report was made
    runs: tuple[Run, ...]  # oldest first
    flow: Flow
    series: pd.DataFrame  # newest row per series, SERIES_COLUMNS
    landmarks: pd.DataFrame  # six rows per ok series
    segments: pd.DataFrame  # eight rows per ok series with volumes
    trajectories: pd.DataFrame  # patient_key, study_date (date), total_calcium_mm3, low, high
    changes: pd.DataFrame  # the patient_changes view; empty when it has no rows
    synthetic: tuple[str, ...]  # why the results are SYNTHETIC; empty: they are not

    @property
    def ok(self) -> pd.DataFrame:
        return self.series[self.series["status"] == "ok"]

    @property
    def with_volumes(self) -> pd.DataFrame:
        ok = self.ok
        return ok[ok["volumes_computed"].fillna(False).astype(bool)]

    @property
    def flagged(self) -> pd.DataFrame:
        ok = self.ok
        return ok[ok["qc_flags"].map(lambda f: f is not None and len(f) > 0)]

    @property
    def risk(self) -> tuple[tuple[float, ...], tuple[str, ...]]:
        """The newest run's risk cut-offs and groups (each row's scheme is in the tables)."""
        for run in reversed(self.runs):
            if run.risk[1]:
                return run.risk
        return (), ()


def gather(out_url: str, options: StorageOptions | None = None,
           config: ReportConfig | None = None) -> ReportData:
    """Read everything the report shows from the published runs under ``out_url``.

    Raises:
        ConfigError: ``out_url`` does not exist or holds no published run.
    """
    config = config or ReportConfig()
    fs, path = filesystem(out_url, options)
    if not fs.exists(path):
        raise ConfigError(f"{redact(out_url)} does not exist; give the --out of a finished "
                          "`cohort run` (run `cohort run INPUT --out OUT` first)")
    ids = published_runs(out_url, options)
    if not ids:
        raise ConfigError(f"{redact(out_url)} holds no published run (runs/<id>/_SUCCESS.json)"
                          "; give the --out of a finished `cohort run` (run `cohort run INPUT "
                          "--out OUT` first)")
    runs = tuple(Run(i, run_manifest(out_url, i, options)) for i in ids)
    con = connect(out_url, options)
    cols = ", ".join(SERIES_COLUMNS)
    series = con.sql(f"SELECT {cols} FROM series ORDER BY series_key").df()
    landmarks = con.sql("SELECT l.landmark, l.side, l.kind, l.probability, l.low_confidence, "
                        "s.confidence_threshold FROM landmarks l JOIN series s "
                        "USING (run_id, series_key)").df()
    segments = con.sql("SELECT segment, side, kind, volume_mm3, volume_mm3_low, "
                       "volume_mm3_high, mask_source FROM segments").df()
    trajectories = con.sql("""
        SELECT patient_key, COALESCE(TRY_STRPTIME(study_date, '%Y%m%d'),
                                     TRY_STRPTIME(study_date, '%Y-%m-%d'))::DATE AS study_date,
               total_calcium_mm3, total_calcium_mm3_low, total_calcium_mm3_high
        FROM series WHERE status = 'ok' AND volumes_computed AND patient_key IS NOT NULL
        QUALIFY count(DISTINCT study_date) OVER (PARTITION BY patient_key) >= 2
        ORDER BY patient_key, study_date""").df()
    trajectories = trajectories.dropna(subset=["study_date"])
    changes = _changes(con)
    index = find_index(out_url, [r.manifest.get("index") for r in reversed(runs)], options)
    flow = count_flow(series[["series_key", "status", "error_code", "volumes_computed",
                              "patient_key", "study_key"]].to_dict("records"), index)
    return ReportData(
        out_url=redact(out_url), generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        runs=runs, flow=flow, series=series, landmarks=landmarks, segments=segments,
        trajectories=trajectories, changes=changes,
        synthetic=_synthetic(runs, series, config))


def _changes(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The patient_changes view; an empty frame where this version has none."""
    try:
        return con.sql("SELECT * FROM patient_changes").df()
    except duckdb.CatalogException:
        logger.info("no patient_changes view: the change-over-time section is left empty")
        return pd.DataFrame()


def _synthetic(runs: tuple[Run, ...], series: pd.DataFrame,
               config: ReportConfig) -> tuple[str, ...]:
    """Why the results must say SYNTHETIC: synthetic images, or a model or segmenter
    trained on synthetic data (as its checkpoint says)."""
    why = ["the images are synthetic phantoms"] if config.synthetic_data else []
    for label, infos in (("landmark model", [r.model for r in runs]),
                         ("calcium segmenter", [r.segmenter for r in runs])):
        names = sorted({f"{i.get('name')} (trained on {i.get('trained_on')})" for i in infos
                        if "synthetic" in str(i.get("trained_on") or "").lower()})
        if names:
            why.append(f"the {label} {', '.join(names)}")
    trained = series["model_trained_on"].dropna().astype(str)
    if not any("landmark model" in w for w in why) and trained.str.contains(
            "synthetic", case=False).any():
        why.append("a landmark model trained on synthetic phantoms")
    return tuple(why)
