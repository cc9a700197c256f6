"""The k-fold patient-level study of the calcium segmenter, with its baselines side by side
on the same folds, through the localization study's machinery: the same splits
(`cohort.train.splits`, saved and reloaded), the same Ray Train loop and fold runner
(`cohort.train.study.run_fold`, tasks ``pretrain`` and ``segmentation``), the same output
layout.

Per fold and variant (`Variant`): MAE pre-training on the fold's training crops (validated
on its validation crops; never the test patients' images), fine-tuning from that encoder,
then on the validation split: one temperature for the voxel logits (NLL on the voxels in
play, `cohort.train.seg_metrics`), ECE before and after, and the threshold with the best
pooled Dice. The test split is predicted once, whole crops window by window. The 130 HU
rule inside the same crops (how the second paper's annotators made labels) needs no
training and is scored on the same test series.

Output under ``out_url``::

    splits.parquet                       the study's splits (reused on resume)
    pretrain/<model>/fold-<f>/...        Ray Train runs of MAE pre-training
    variants/<variant>/folds/fold-<f>/.. Ray Train runs of fine-tuning
    models/<variant>-fold-<f>.pt         calibrated models (temperature, threshold)
    tables/seg_predictions.parquet       one row per test series and variant
    tables/seg_summary.md / .parquet     Dice, volume and risk agreement, ECE, per variant
    tables/seg_by_thickness.md / ...     the same per slice-thickness band
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from cohort.anatomy import CALCIUM_HU
from cohort.model import segmenter
from cohort.preprocess.arterial_crop import CropConfig
from cohort.storage import StorageOptions, filesystem, join, read_bytes, write_bytes
from cohort.train import seg_metrics as M
from cohort.train.loop import TrainConfig
from cohort.train.seg_data import load_crop
from cohort.train.seg_tasks import save_seg_checkpoint
from cohort.train.splits import SplitConfig
from cohort.train.study import StudyConfig, fold_rows, load_or_make_splits, run_fold
from cohort.train.tables import to_markdown

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Variant:
    """One column of the study's tables: a network (None: the 130 HU rule) and whether its
    encoder is pre-trained as an MAE first."""

    name: str
    model: str | None
    pretrain: bool = False

    def model_at(self, size: str) -> str | None:
        """The network at a study size (`SIZES`): ``default+patch16`` at ``tiny`` is
        ``tiny+patch16``, the U-Net ``unet-tiny``; the ablation stays the same."""
        if self.model is None or size == "default":
            return self.model
        if self.model.startswith("unet"):
            return SIZES[size]
        return size + self.model.removeprefix("default")


#: study sizes: the ViT configuration, and the U-Net of about the same cost beside it
SIZES = {"default": "unet", "tiny": "unet-tiny", "paper": "unet"}


#: ablations that leave the encoder as it is (the decoder's upsampling, the output gate)
ENCODER_NEUTRAL = ("transposed", "nogate")


def encoder_model(model: str) -> str:
    """The model whose MAE pre-training a ViT variant starts from: ablations that leave the
    encoder alone (`ENCODER_NEUTRAL`) share their encoder's pre-training, run once per fold."""
    base, *parts = model.split("+")
    return "+".join([base, *(p for p in parts if p not in ENCODER_NEUTRAL)])


#: the variants `cohort train segmenter --variants` knows; "vit" is the segmenter itself
VARIANTS = {
    "vit": Variant("vit", "default", pretrain=True),
    "vit_no_mae": Variant("vit_no_mae", "default"),
    "vit_patch16": Variant("vit_patch16", "default+patch16", pretrain=True),
    "vit_transposed": Variant("vit_transposed", "default+transposed", pretrain=True),
    "vit_no_gate": Variant("vit_no_gate", "default+nogate", pretrain=True),
    # the first segmenters' [-100, 700] HU input window (its own MAE pre-training: the
    # encoder's input changes)
    "vit_window_hu": Variant("vit_window_hu", "default+windowhu", pretrain=True),
    "unet": Variant("unet", "unet"),
    "threshold_130hu": Variant("threshold_130hu", None),
}


@dataclass(frozen=True)
class SegStudyConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        task="segmentation", model="default", optimizer="adamw", lr=2e-3, weight_decay=0.05,
        epochs=40, patience=10, warmup_epochs=1, batch_size=4))
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(
        task="pretrain", model="default", optimizer="adamw", lr=1.5e-3, weight_decay=0.05,
        epochs=20, patience=20, warmup_epochs=1, batch_size=8))
    splits: SplitConfig = field(default_factory=SplitConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 1
    max_failures: int = 3
    only_folds: tuple[int, ...] = ()
    #: windows drawn per training crop and epoch (a crop holds many windows)
    windows_per_crop: int = 4
    #: the ViT configuration of every variant (`SIZES`): ``tiny`` (a training step about
    #: 12 times cheaper) makes the 5-fold grid of ablations affordable on CPU, ``default``
    #: is the shipped size
    size: str = "default"
    level: float = 0.9  # of the volume intervals
    overlap: float = 0.25  # of the sliding windows at prediction

    @property
    def folds_run(self) -> tuple[int, ...]:
        return tuple(self.only_folds) or tuple(range(self.splits.folds))


def _study(config: SegStudyConfig, train: TrainConfig) -> StudyConfig:
    return StudyConfig(train=train, splits=config.splits, workers=config.workers,
                       use_gpu=config.use_gpu, cpus_per_worker=config.cpus_per_worker,
                       max_failures=config.max_failures, only_folds=config.only_folds)


def _repeat(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """Each training row ``n`` times (several windows per crop and epoch)."""
    return pd.concat([rows] * n, ignore_index=True) if n > 1 else rows


def crop_predictions(net, rows: pd.DataFrame, cache_url: str, overlap: float,
                     options: StorageOptions | None = None):
    """Per series: (logits, true mask), both (H, W, D) over its whole crop."""
    out = []
    for r in rows.to_dict("records"):
        crop = load_crop(cache_url, r["path"], options).astype(np.float32)
        out.append((segmenter.crop_logits(net, crop[0], overlap=overlap), crop[1] > 0.5))
    return out


def calibrate(val: list[tuple[np.ndarray, np.ndarray]], seed: int = 0,
              level: float = 0.9) -> dict:
    """Temperature, ECE before and after, the threshold with the best pooled validation
    Dice at that temperature, and the thresholds of the ``level`` volume interval
    (`seg_metrics.fit_interval_thresholds`).

    The temperature minimises the NLL of a voxel sample standing for all voxels
    (`seg_metrics.voxel_sample`) and is kept only when it lowers the NLL of the other half
    of the validation series in both directions of a two-fold split (as the landmark
    study does); else T = 1. ECE is reported on the voxels in play."""
    rng = np.random.default_rng(seed)
    samples = [M.voxel_sample(lg, y, rng) for lg, y in val]

    def pool(items):
        if not items:
            return np.zeros(0), np.zeros(0, bool), np.zeros(0)
        return tuple(np.concatenate(parts) for parts in zip(*items, strict=True))

    halves = [pool(samples[0::2]), pool(samples[1::2])]
    helps = all(len(b[0]) and len(a[0]) and b[1].any() and M.nll(
        *b, M.fit_temperature(*a)) < M.nll(*b) for a, b in (halves, halves[::-1]))
    z, y, w = pool(samples)
    t = M.fit_temperature(z, y, w) if helps and y.any() else 1.0
    play = w == 1.0
    probs = [segmenter.probabilities(lg, t) for lg, _ in val]
    trues = [y for _, y in val]
    threshold = M.best_threshold(probs, trues) if val else 0.5
    lo, hi = M.fit_interval_thresholds(probs, trues, level)
    return {"temperature": t, "temperature_kept": bool(helps), "threshold": threshold,
            "level": level, "interval_thresholds": [lo, hi],
            "val_ece_before": M.ece(segmenter.probabilities(z[play]), y[play]),
            "val_ece_after": M.ece(segmenter.probabilities(z[play], t), y[play]),
            "val_nll_before": M.nll(z, y, w), "val_nll_after": M.nll(z, y, w, t),
            "val_voxels_in_play": int(play.sum())}


def score(preds, rows: pd.DataFrame, temperature: float, threshold: float,
          bounds: tuple[float, float]) -> tuple[pd.DataFrame, dict]:
    """Per-series rows of test predictions, and the test ECE before/after calibration."""
    out, zs, ys = [], [], []
    for (lg, y), r in zip(preds, rows.to_dict("records"), strict=True):
        p = segmenter.probabilities(lg, temperature)
        out.append({"series_uid": r["series_uid"], "patient_key": r["patient_key"],
                    "slice_thickness_mm": r["slice_thickness_mm"],
                    **M.series_row(p, y, threshold, r["voxel_mm3"],
                                   int(r["mask_voxels"]) - int(r["crop_voxels"]),
                                   bounds)})
        sel = M.in_play(segmenter.probabilities(lg), y) & ~segmenter.is_gated(lg)
        zs.append(lg[sel])
        ys.append(y[sel])
    z, y = (np.concatenate(zs), np.concatenate(ys)) if zs else (np.zeros(0), np.zeros(0))
    return pd.DataFrame(out), {"test_ece_before": M.ece(segmenter.probabilities(z), y),
                               "test_ece_after": M.ece(segmenter.probabilities(z, temperature),
                                                       y)}


def threshold_rows(rows: pd.DataFrame, cache_url: str,
                   options: StorageOptions | None = None) -> pd.DataFrame:
    """The 130 HU rule inside each crop, scored like a model (its interval is a point)."""
    out = []
    for r in rows.to_dict("records"):
        crop = load_crop(cache_url, r["path"], options).astype(np.float32)
        p = (crop[0] >= CALCIUM_HU).astype(np.float32)
        out.append({"series_uid": r["series_uid"], "patient_key": r["patient_key"],
                    "slice_thickness_mm": r["slice_thickness_mm"],
                    **M.series_row(p, crop[1] > 0.5, 0.5, r["voxel_mm3"],
                                   int(r["mask_voxels"]) - int(r["crop_voxels"]))})
    return pd.DataFrame(out)


def _exists(url: str, options) -> bool:
    fs, path = filesystem(url, options)
    return fs.exists(path)


def train_variant(variant: Variant, fold: int, index: pd.DataFrame, splits: pd.DataFrame,
                  cache_url: str, out_url: str, config: SegStudyConfig,
                  options: StorageOptions | None):
    """Pre-train (when the variant asks) and fine-tune one fold; (network, meta).

    With ``config.train.init_weights`` (``{fold}`` is the fold) the ViT variants fine-tune
    from that checkpoint instead: a second stage from a segmentation checkpoint of the
    same configuration (all of it), or from a pre-trained encoder; nothing is pre-trained.
    """
    model = variant.model_at(config.size)
    train_cfg = replace(config.train, model=model, init_weights=None)
    repeated = _repeat_index(index, splits, fold, config.windows_per_crop)
    if config.train.init_weights and variant.pretrain:
        train_cfg = replace(train_cfg, init_weights=config.train.init_weights)
    elif variant.pretrain:
        encoder = encoder_model(model)
        pre_url = join(out_url, "models", "pretrained", f"{encoder}-fold-{fold}.pt")
        if not _exists(pre_url, options):
            pre = replace(config.pretrain, model=encoder)
            net, meta = run_fold(fold, repeated, splits, cache_url,
                                 join(out_url, "pretrain", encoder),
                                 _study(config, pre), options)
            buf = io.BytesIO()
            segmenter.save_checkpoint(buf, net, **meta)
            write_bytes(pre_url, buf.getvalue(), options)
        train_cfg = replace(train_cfg, init_weights=pre_url)
    return run_fold(fold, repeated, splits, cache_url, join(out_url, "variants", variant.name),
                    _study(config, train_cfg), options)


def _repeat_index(index: pd.DataFrame, splits: pd.DataFrame, fold: int, n: int) -> pd.DataFrame:
    """The index with each training-split row ``n`` times (validation rows once)."""
    train = fold_rows(index, splits, fold, "train")
    rest = index[~index["series_uid"].isin(train["series_uid"])]
    return pd.concat([_repeat(train, n), rest], ignore_index=True)


def run_seg_study(index: pd.DataFrame, cache_url: str, out_url: str, config: SegStudyConfig,
                  variants: tuple[str, ...] = ("vit", "threshold_130hu"),
                  options: StorageOptions | None = None, *, synthetic: bool) -> dict[str, str]:
    """Every fold of every variant; calibrated models and the tables (see module).

    Returns:
        ``{name: URL}`` of the tables written.
    """
    splits = load_or_make_splits(index, out_url, config.splits, options)
    rows, calib = [], []
    for fold in config.folds_run:
        val = fold_rows(index, splits, fold, "validation")
        test = fold_rows(index, splits, fold, "test")
        for name in variants:
            v = VARIANTS[name]
            if v.model is None:
                got = threshold_rows(test, cache_url, options)
                rows.append(got.assign(variant=name, fold=fold))
                continue
            net, meta = train_variant(v, fold, index, splits, cache_url, out_url, config,
                                      options)
            got, record = evaluate_variant(net, meta, name, fold, val, test, cache_url,
                                           out_url, config, options, synthetic=synthetic)
            rows.append(got)
            calib.append(record)
    return write_seg_tables(join(out_url, "tables"), pd.concat(rows, ignore_index=True),
                            pd.DataFrame(calib), synthetic=synthetic, size=config.size,
                            options=options)


def evaluate_variant(net, meta: dict, name: str, fold: int, val: pd.DataFrame,
                     test: pd.DataFrame, cache_url: str, out_url: str,
                     config: SegStudyConfig, options: StorageOptions | None = None, *,
                     synthetic: bool) -> tuple[pd.DataFrame, dict]:
    """Calibrate a fold's model on its validation split, score its test split once, and
    write ``models/<variant>-fold-<f>.pt``; (test rows, calibration record)."""
    cal = calibrate(crop_predictions(net, val, cache_url, config.overlap, options),
                    level=config.level)
    got, test_cal = score(crop_predictions(net, test, cache_url, config.overlap, options),
                          test, cal["temperature"], cal["threshold"],
                          tuple(cal["interval_thresholds"]))
    meta = {k: v for k, v in meta.items() if k not in ("calibration", "crop", "fold",
                                                        "variant", "synthetic")}
    buf = io.BytesIO()
    save_seg_checkpoint(buf, net, **meta, fold=fold, variant=name, synthetic=synthetic,
                        calibration={**cal, **test_cal,
                                     "fitted_on": f"validation split of fold {fold} "
                                                  f"({len(val)} series)"},
                        crop=asdict(config.crop))
    write_bytes(join(out_url, "models", f"{name}-fold-{fold}.pt"), buf.getvalue(), options)
    logger.info("fold %d %s: T %.2f (%s), threshold %.2f, test Dice %.3f", fold, name,
                cal["temperature"], "kept" if cal["temperature_kept"] else "not kept",
                cal["threshold"], got["dice"].mean())
    return got.assign(variant=name, fold=fold), {"variant": name, "fold": fold, **cal,
                                                 **test_cal}


def write_seg_tables(tables_url: str, rows: pd.DataFrame, calib: pd.DataFrame, *,
                     synthetic: bool, size: str = "default",
                     options: StorageOptions | None = None) -> dict[str, str]:
    """Predictions, summaries (overall and per thickness band) and calibration, as Parquet
    and Markdown; the titles name the study's size."""
    at = f" (networks of size {size})"
    rows = rows.assign(thickness_band=[M.thickness_band(t) for t in rows["slice_thickness_mm"]],
                       synthetic=synthetic)
    summary = M.summary_table(rows, ("variant",))
    bands = M.summary_table(rows, ("variant", "thickness_band"))
    written = {}
    for name, df, title in (("seg_predictions", rows, None),
                            ("seg_summary", summary, "Calcium segmentation, test splits" + at),
                            ("seg_by_thickness", bands, "By slice thickness, test splits" + at),
                            ("seg_calibration", calib, "Calibration (voxels in play)" + at)):
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        url = join(tables_url, f"{name}.parquet")
        write_bytes(url, buf.getvalue(), options)
        written[f"{name}.parquet"] = url
        if title:
            md = to_markdown(df, title, synthetic)
            url = join(tables_url, f"{name}.md")
            write_bytes(url, md.encode(), options)
            written[f"{name}.md"] = url
    return written


def read_table(url: str, options: StorageOptions | None = None) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(read_bytes(url, options)))
