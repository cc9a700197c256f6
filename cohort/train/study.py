"""The k-fold patient-level localization study on Ray Train: one `TorchTrainer` per fold,
the fold's best checkpoint (chosen on validation) predicting its test split once.

Output under ``out_url``::

    splits.parquet                 the saved splits (reloaded, never recomputed, on resume)
    folds/fold-<f>/...             Ray Train runs: checkpoints every epoch (resume state)
    models/fold-<f>.pt             each fold's best model with its calibration temperatures
    tables/                        predictions, per-fold metrics, Table II, calibration
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cohort.errors import ConfigError
from cohort.model import zoo
from cohort.model.calibration import (
    apply_temperatures,
    temperatures_to_metadata,
)
from cohort.model.decoding import MIRRORED
from cohort.model.dst import DepthSequenceTransformer, save_checkpoint
from cohort.preprocess.model_input import ModelInputConfig
from cohort.storage import StorageOptions, filesystem, join, read_bytes, write_bytes
from cohort.train.calibration import (
    calibration_report,
    fit_confidence_threshold,
    fit_shared_temperature,
    temperatures_help,
)
from cohort.train.data import load_input, targets
from cohort.train.loop import TrainConfig, train_fold
from cohort.train.splits import SplitConfig, check_splits, make_splits
from cohort.train.tables import predictions_table, write_tables
from cohort.train.tasks import collate

logger = logging.getLogger(__name__)


#: how a study fits the QC threshold of its models: on the probability that a landmark is
#: right (within one slice), the largest threshold whose flags are wrong at least half the
#: time on the validation split (`cohort.train.calibration`)
THRESHOLD = {"confidence": "within_1_slice", "criterion": "flagged_mostly_wrong"}


@dataclass(frozen=True)
class StudyConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    model_input: ModelInputConfig = field(default_factory=ModelInputConfig)  # stored in models
    workers: int = 1  # Ray Train workers per fold (0: run the loop in the driver)
    use_gpu: bool = False
    cpus_per_worker: int = 1
    max_failures: int = 3  # worker crashes survived per fold (resume from the last epoch)
    #: the folds trained and tested (empty: all); the shipped recipe trains one fold of the
    #: split, so that its compute goes into one well-trained model, and still tests it on
    #: that fold's unseen patients
    only_folds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        bad = [f for f in self.only_folds if not 0 <= f < self.splits.folds]
        if bad:
            raise ConfigError(f"fold(s) {bad} do not exist in a {self.splits.folds}-fold "
                              f"study (0..{self.splits.folds - 1})")

    @property
    def folds_run(self) -> tuple[int, ...]:
        return tuple(self.only_folds) or tuple(range(self.splits.folds))


def _write_parquet(df: pd.DataFrame, url: str, options: StorageOptions | None) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    write_bytes(url, buf.getvalue(), options)


def load_or_make_splits(index: pd.DataFrame, out_url: str, config: SplitConfig,
                        options: StorageOptions | None = None,
                        strata: dict[str, object] | None = None) -> pd.DataFrame:
    """The study's splits: reloaded from ``splits.parquet`` when it exists (a resumed study
    must not reshuffle), else made from the cache index's patients (stratified by
    ``strata``, patient key -> class, when given) and saved."""
    url = join(out_url, "splits.parquet")
    fs, path = filesystem(url, options)
    if fs.exists(path):
        splits = pd.read_parquet(io.BytesIO(read_bytes(url, options)))
        missing = set(index["patient_key"]) - set(splits["patient_key"])
        if missing:
            raise ConfigError(f"{url} has no split for {len(missing)} patient(s) of the data "
                              f"(e.g. {sorted(missing)[:3]}); use a new output folder")
    else:
        splits = make_splits(index["patient_key"], config, strata)
        _write_parquet(splits, url, options)
    check_splits(splits)
    return splits


def fold_rows(index: pd.DataFrame, splits: pd.DataFrame, fold: int, split: str) -> pd.DataFrame:
    keys = set(splits[(splits["fold"] == fold) & (splits["split"] == split)]["patient_key"])
    return index[index["patient_key"].isin(keys)].reset_index(drop=True)


def run_fold(fold: int, index: pd.DataFrame, splits: pd.DataFrame, cache_url: str,
             out_url: str, config: StudyConfig, options: StorageOptions | None):
    """Train one fold through Ray Train; return the best model (chosen on validation) and its
    checkpoint metadata. ``config.train.task`` says what is trained (`cohort.train.tasks`);
    ``out_url`` holds the Ray Train runs under ``folds/fold-<f>``."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    train = fold_rows(index, splits, fold, "train")
    val = fold_rows(index, splits, fold, "validation")
    loop_config = {"train": asdict(config.train), "cache_url": cache_url, "fold": fold,
                   "storage": asdict(options) if options else None,
                   "threads": config.cpus_per_worker,
                   "log_level": logging.getLogger("cohort").getEffectiveLevel()}
    storage_fs, storage_path = filesystem(join(out_url, "folds"), options)
    trainer = TorchTrainer(
        train_fold, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=config.use_gpu,
                                     resources_per_worker={"CPU": config.cpus_per_worker}),
        run_config=RunConfig(name=f"fold-{fold}", storage_path=storage_path,
                             storage_filesystem=_arrow_fs(storage_fs),
                             failure_config=FailureConfig(max_failures=config.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
        datasets={"train": ray.data.from_pandas(train), "validation": ray.data.from_pandas(val)},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"fold {fold} reported no checkpoint: {result.error!r}")
    last = result.metrics or {}
    if last.get("started_at_epoch"):
        logger.info("fold %d resumed at epoch %d after a failure", fold, last["started_at_epoch"])
    with result.checkpoint.as_directory() as d:
        model, meta = zoo.load_checkpoint(f"{d}/best.pt")
    meta["last_metrics"] = {k: v for k, v in last.items()
                            if isinstance(v, (int, float, str, bool))}
    metric = "best_val_mae" if config.train.task == "localization" else "best_val_loss"
    logger.info("fold %d: %s %.3f (epoch %s)", fold, metric.replace("_", " "),
                meta.get(metric, float("nan")), meta.get("epoch"))
    return model, meta


def _arrow_fs(fs):
    """pyarrow filesystem for Ray Train's storage (local stays local)."""
    from fsspec.implementations.local import LocalFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return None if isinstance(fs, LocalFileSystem) else PyFileSystem(FSSpecHandler(fs))


def predict(model: DepthSequenceTransformer, rows: pd.DataFrame, cache_url: str,
            options: StorageOptions | None = None, mirror: bool = False) -> list[np.ndarray]:
    """Per scan, the (6, D) landmark logits of ``model`` (one volume at a time); ``mirror``:
    of the volume mirrored left-right, rows back in `LANDMARKS` order (as the job does)."""
    model.eval()
    out = []
    with torch.no_grad():
        for row in rows.to_dict("records"):
            x, depths, _ = collate([load_input(cache_url, row["path"], options)],
                                   [targets(row)], model.cfg.padding)
            if mirror:
                x = torch.flip(x, dims=[3])
            logits = model(x, depths).landmark_logits[0].float().numpy()
            out.append(logits[list(MIRRORED)] if mirror else logits)
    return out


def evaluate_fold(model: DepthSequenceTransformer, meta: dict, fold: int, index: pd.DataFrame,
                  splits: pd.DataFrame, cache_url: str, out_url: str, config: StudyConfig,
                  options: StorageOptions | None = None, *, synthetic: bool
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Calibrate a fold's best model on its validation split, predict its test split once,
    and write ``models/fold-<f>.pt``; return the fold's test predictions and calibration
    report (temperatures' effect on test NLL and ECE, whether they were kept or not).

    One temperature for all six landmarks is fitted on the validation split (six overfit a
    few dozen scans) and kept only when two-fold
    cross-fitting within that split says they lower the NLL on scans they were not fitted
    on (`temperatures_help`); else the model ships uncalibrated (T = 1). The QC threshold is
    fitted on the probabilities the model ships with (`THRESHOLD`).
    """
    val = fold_rows(index, splits, fold, "validation")
    test = fold_rows(index, splits, fold, "test")
    val_true = np.stack([targets(r) for r in val.to_dict("records")])
    val_logits = predict(model, val, cache_url, options)
    fitted = fit_shared_temperature(val_logits, val_true)
    helps, calibration_check = temperatures_help(val_logits, val_true,
                                                 fit=fit_shared_temperature)
    temps = fitted if helps else np.ones(len(fitted))
    if not helps:
        logger.info("fold %d: temperature scaling does not lower the held-out validation "
                    "NLL (%s): the model ships uncalibrated", fold, calibration_check)
    threshold = fit_confidence_threshold(
        [apply_temperatures(lg, temps) for lg in val_logits], val_true, **THRESHOLD)
    logger.info("fold %d: confidence threshold %.3f flags %.0f%% of %d wrong and %.0f%% "
                "of %d right validation landmarks", fold, threshold.value,
                100 * threshold.wrong_flagged, threshold.n_wrong,
                100 * threshold.right_flagged, threshold.n_right)
    test_logits = predict(model, test, cache_url, options)
    test_true = np.stack([targets(r) for r in test.to_dict("records")])
    predictions = predictions_table(
        fold, list(test["series_uid"]), list(test["patient_key"]),
        [apply_temperatures(lg, temps) for lg in test_logits], test_true,
        list(test["slice_spacing_mm"]), synthetic=synthetic)
    calibration = calibration_report(test_logits, test_true, fitted).assign(
        fold=fold, kept=helps)
    buf = io.BytesIO()
    save_checkpoint(buf, model, **meta, fold=fold, synthetic=synthetic,
                    temperatures=temperatures_to_metadata(temps),
                    calibration={"temperature_scaling": helps, **calibration_check},
                    confidence_threshold={**threshold.to_metadata(), "fitted_on": (
                        f"validation split of fold {fold} ({len(val)} scans)")},
                    model_input=asdict(config.model_input))
    write_bytes(join(out_url, "models", f"fold-{fold}.pt"), buf.getvalue(), options)
    logger.info("fold %d done: %d test scans", fold, len(test))
    return predictions, calibration


def run_study(index: pd.DataFrame, cache_url: str, out_url: str, config: StudyConfig,
              options: StorageOptions | None = None, *, synthetic: bool) -> dict[str, str]:
    """Train and evaluate every fold; write models, predictions and tables.

    Per fold, the best checkpoint (validation MAE) predicts the fold's test split once;
    temperatures fitted on the validation split calibrate its probabilities and are stored
    in the fold's model file (``models/fold-<f>.pt``) for the inference job's confidence,
    with the confidence threshold of its QC flag, chosen on the same validation split.

    Returns:
        ``{name: URL}`` of the tables written under ``<out_url>/tables``.
    """
    splits = load_or_make_splits(index, out_url, config.splits, options)
    predictions, calibration = [], []
    for fold in config.folds_run:
        model, meta = run_fold(fold, index, splits, cache_url, out_url, config, options)
        pred, cal = evaluate_fold(model, meta, fold, index, splits, cache_url, out_url, config,
                                  options, synthetic=synthetic)
        predictions.append(pred)
        calibration.append(cal)
    return write_tables(join(out_url, "tables"), pd.concat(predictions, ignore_index=True),
                        calibration=pd.concat(calibration, ignore_index=True), options=options)
