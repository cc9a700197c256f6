"""The Clean-CC-CCII benchmark: every model through the k-fold study machinery of the
localization model (`cohort.train.study.run_fold`: one Ray Train `TorchTrainer` per fold,
the one training loop with the classification task, early stopping on the validation
split), then each fold's best model predicts its test split once.

Output under ``out_url``::

    splits.parquet                        patient-level, stratified by class, reused on resume
    cache/<H>x<W>x<D>/                    model inputs (`cohort.ccccii.cache`)
    runs/<model>/folds/fold-<f>/          Ray Train runs (checkpoints every epoch)
    predictions/<model>/fold-<f>.parquet  test predictions; a fold that has one is not rerun
    tables/                               `cohort.ccccii.command` writes them
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from cohort.ccccii.cache import InputConfig
from cohort.ccccii.tables import PREDICTIONS_SCHEMA, predictions_table
from cohort.errors import ConfigError
from cohort.model import cnn3d, zoo
from cohort.model.compute import Compute, measure
from cohort.storage import StorageOptions, filesystem, join, read_bytes, write_bytes
from cohort.train.data import load_input
from cohort.train.loop import TrainConfig
from cohort.train.study import StudyConfig, fold_rows, run_fold
from cohort.train.tables import parquet_bytes
from cohort.train.tasks import pad_volumes

logger = logging.getLogger(__name__)

PAPER_MODELS = ("dst", "resnet50_3d", "densenet121_3d")


@dataclass(frozen=True)
class BenchmarkConfig:
    """What the benchmark trains and how."""

    models: tuple[str, ...] = PAPER_MODELS  # names of cohort.model.zoo
    # Table V: the first DST of `models` is also trained with these numbers of blocks
    ablation_blocks: tuple[int, ...] = (0, 1)
    input: InputConfig = field(default_factory=InputConfig)  # 128 x 128 x 64, as the paper
    native_depth: bool = False  # DST models read every scan at its own depth instead
    study: StudyConfig = field(
        default_factory=lambda: StudyConfig(
            train=TrainConfig(task="classification", model="dst", batch_size=4, epochs=30,
                              momentum=0.9)
        )
    )
    measure_repeats: int = 3  # timed forward passes per model (the best one counts)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("give at least one model (--models)")
        for name in self.models:
            zoo.check_name(name)
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"a model is named twice in {', '.join(self.models)}")
        if self.ablation_blocks and not self.dst:
            raise ConfigError(
                "the depth ablation (Table V) needs a DST among --models; "
                "add dst or pass --ablation-blocks with no value"
            )
        shape = (self.input.size, self.input.size, self.input.depth or 64)
        for name in self.models:
            if not zoo.is_dst(name) and math.prod(cnn3d.feature_extent(name, shape)) < 2:
                raise ConfigError(
                    f"{name} reduces a {'x'.join(map(str, shape))} input to a single voxel, "
                    "where BatchNorm cannot train on a batch of one volume; give a larger "
                    "--size / --depth (at least 32 x 32 x 16 for the tiny networks)"
                )
        if any(b < 0 for b in self.ablation_blocks):
            raise ConfigError(f"block counts must be >= 0, got {self.ablation_blocks}")

    @property
    def dst(self) -> str | None:
        """The DST whose depth is ablated (the first of ``models``), if any."""
        return next((m for m in self.models if zoo.is_dst(m)), None)

    def ablation(self) -> dict[str, int]:
        """Table V variants: zoo name -> number of DST blocks (the DST itself included)."""
        if not self.dst or not self.ablation_blocks:
            return {}
        own = zoo.dst_config(self.dst).n_blocks
        base = self.dst.partition("+")[0]
        out = {f"{base}+blocks_{b}": b for b in sorted(set(self.ablation_blocks)) if b != own}
        out[self.dst] = own
        return dict(sorted(out.items(), key=lambda kv: kv[1]))

    def variants(self) -> list[str]:
        """Every network trained: the models, then the ablation's extra DSTs."""
        return [*self.models, *(v for v in self.ablation() if v not in self.models)]

    def input_of(self, model: str) -> InputConfig:
        """The input a model reads: native depth for DSTs when asked for."""
        return (
            replace(self.input, depth=None)
            if self.native_depth and zoo.is_dst(model)
            else self.input
        )


def predict(
    model: torch.nn.Module,
    rows: pd.DataFrame,
    cache_url: str,
    options: StorageOptions | None = None,
) -> np.ndarray:
    """(scans, classes) softmax probabilities of ``model``, one volume at a time."""
    model.eval()
    padding = zoo.padding_of(model)
    out = []
    with torch.no_grad():
        for row in rows.to_dict("records"):
            x, depths, _ = pad_volumes([load_input(cache_url, row["path"], options)], padding)
            out.append(zoo.class_logits(model(x, depths)).float().softmax(-1)[0].numpy())
    return np.stack(out) if out else np.zeros((0, 3))


def run_model(
    name: str,
    index: pd.DataFrame,
    splits: pd.DataFrame,
    cache_url: str,
    out_url: str,
    config: BenchmarkConfig,
    options: StorageOptions | None,
    *,
    synthetic: bool,
) -> pd.DataFrame:
    """Every fold of one network: train (Ray Train), predict the test split, save the
    predictions; folds whose predictions exist are read back instead (resume)."""
    study = replace(
        config.study, train=replace(config.study.train, task="classification", model=name)
    )
    parts = []
    for fold in range(study.splits.folds):
        url = join(out_url, "predictions", name, f"fold-{fold}.parquet")
        fs, path = filesystem(url, options)
        if fs.exists(path):
            logger.info("%s fold %d: predictions exist, not retrained", name, fold)
            parts.append(pd.read_parquet(io.BytesIO(read_bytes(url, options))))
            continue
        model, meta = run_fold(
            fold, index, splits, cache_url, join(out_url, "runs", name), study, options
        )
        test = fold_rows(index, splits, fold, "test")
        table = predictions_table(
            fold, name, test, predict(model, test, cache_url, options), synthetic=synthetic
        )
        write_bytes(url, parquet_bytes(table, PREDICTIONS_SCHEMA, synthetic=synthetic), options)
        logger.info(
            "%s fold %d: %d test scans, accuracy %.3f (best epoch %s)",
            name,
            fold,
            len(test),
            float((table["pred_label"] == table["true_label"]).mean()),
            meta.get("best_epoch"),
        )
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def _measure_task(
    name: str, shape: tuple[int, int, int], max_len: int, use_gpu: bool, threads: int, repeats: int
) -> Compute:
    from cohort.model.runtime import pick_device

    torch.set_num_threads(max(1, threads))
    return measure(
        lambda: zoo.build_network(name, max_len=max_len),
        shape,
        device=pick_device(use_gpu),
        repeats=repeats,
    )


def measure_models(models: list[str], config: BenchmarkConfig) -> dict[str, Compute]:
    """Compute of each model at the benchmark's input shape (native-depth DSTs at the fixed
    depth, 64 by default, for a like-for-like row), each in a fresh Ray worker process on
    the hardware the folds train on (a GPU with ``use_gpu``)."""
    import ray

    s = config.study
    shape = (config.input.size, config.input.size, config.input.depth or 64)
    task = ray.remote(max_calls=1)(_measure_task).options(
        num_cpus=s.cpus_per_worker, num_gpus=1 if s.use_gpu else 0
    )
    out = {}
    for name in models:  # one at a time: each gets the whole worker for its latency
        out[name] = ray.get(
            task.remote(
                name,
                shape,
                config.study.train.max_len,
                s.use_gpu,
                s.cpus_per_worker,
                config.measure_repeats,
            )
        )
        logger.info(
            "%s: %.2f G MAC, %.2f M parameters, %.0f MB peak, %.1f ms per volume (%s)",
            name,
            out[name].gmac,
            out[name].params_m,
            out[name].peak_memory_mb,
            out[name].latency_ms,
            out[name].device,
        )
    return out
