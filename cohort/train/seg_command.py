"""`cohort train segmenter` (the 5-fold calcium-segmentation study with its baselines),
`cohort train pretrain` (MAE pre-training on unlabelled series) and `cohort train
shipped-segmenter` (the shipped checkpoint's recipe)."""

from __future__ import annotations

import io
import logging
import time
from dataclasses import asdict, dataclass, field, replace

import pandas as pd

from cohort.errors import ConfigError
from cohort.model import segmenter
from cohort.ray_session import RaySession
from cohort.storage import StorageOptions, filesystem, join, read_bytes, redact, write_bytes
from cohort.synth.config import SynthConfig
from cohort.train.command import sources_and_labels
from cohort.train.loop import TrainConfig
from cohort.train.seg_data import build_seg_cache, synthetic_masks
from cohort.train.seg_study import SIZES, VARIANTS, SegStudyConfig, read_table, run_seg_study
from cohort.train.ship import RECIPE as LANDMARK_RECIPE
from cohort.train.splits import SplitConfig
from cohort.train.study import StudyConfig, run_fold

logger = logging.getLogger(__name__)


def _masks(data_url: str, masks_url: str | None, uids, synthetic: bool,
           options: StorageOptions | None) -> tuple[dict[str, str], dict[str, float] | None]:
    if synthetic and not masks_url:
        return synthetic_masks(data_url, options)
    if not masks_url:
        raise ConfigError("--masks is needed with a manifest: the folder of "
                          "<SeriesInstanceUID>.nii.gz calcium masks the segmenter learns from")
    return {u: join(masks_url, f"{u}.nii.gz") for u in uids}, None


def seg_index(data_url: str, cache_url: str, config: SegStudyConfig, *,
              labels_url: str | None = None, masks_url: str | None = None,
              labelled: bool = True, options: StorageOptions | None = None
              ) -> tuple[pd.DataFrame, bool]:
    """The crops of a synthetic cohort or an indexed archive (landmarks from ``labels_url``
    or the cohort's ground truth), cut once into ``cache_url``; (index, synthetic)."""
    sources, labels, synthetic = sources_and_labels(data_url, labels_url, options)
    masks, thick = (_masks(data_url, masks_url, labels["series_uid"], synthetic, options)
                    if labelled else (None, None))
    return build_seg_cache(sources, labels, masks, cache_url, options, config.crop,
                           thickness=thick), synthetic


def train_segmenter(data_url: str, out_url: str, config: SegStudyConfig, *,
                    variants: tuple[str, ...] = ("vit", "threshold_130hu"),
                    labels_url: str | None = None, masks_url: str | None = None,
                    cache_url: str | None = None,
                    options: StorageOptions | None = None) -> str:
    """Run the study; return a short report for the console. ``cache_url``: where the
    crops are cut (default ``<out>/cache``; a second stage reuses the first's)."""
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ConfigError(f"unknown variant(s) {', '.join(bad)}; choose from "
                          f"{', '.join(VARIANTS)}")
    if config.size not in SIZES:
        raise ConfigError(f"unknown study size {config.size!r}; choose from {', '.join(SIZES)}")
    t0 = time.perf_counter()
    cache_url = cache_url or join(out_url, "cache")
    with RaySession() as ray:
        index, synthetic = seg_index(data_url, cache_url, config, labels_url=labels_url,
                                     masks_url=masks_url, options=options)
        ray.ensure()
        written = run_seg_study(index, cache_url, out_url, config, variants, options,
                                synthetic=synthetic)
    summary = read_bytes(written["seg_summary.md"], options).decode()
    return "\n".join([
        f"{'SYNTHETIC ' if synthetic else ''}segmentation study: {len(index)} series, "
        f"{index['patient_key'].nunique()} patients, folds {list(config.folds_run)}, "
        f"variants {', '.join(variants)}, in {time.perf_counter() - t0:.0f} s", "", summary,
        f"Results: {out_url} (tables under {join(out_url, 'tables')}, calibrated models "
        f"under {join(out_url, 'models')})"])


def pretrain(data_url: str, out_url: str, train: TrainConfig, *, labels_url: str | None = None,
             validation_fraction: float = 0.1, workers: int = 1, cpus_per_worker: int = 1,
             use_gpu: bool = False, options: StorageOptions | None = None) -> str:
    """MAE pre-training of a ViT on the crops of unlabelled series (masks are not read);
    writes ``<out>/models/pretrained-<model>.pt`` (with its MAE head), which `cohort train
    segmenter --pretrained` fine-tunes from."""
    import numpy as np

    train = replace(train, task="pretrain")
    with RaySession() as ray:
        index, synthetic = seg_index(data_url, join(out_url, "cache"), SegStudyConfig(),
                                     labels_url=labels_url, labelled=False, options=options)
        patients = sorted(index["patient_key"].unique())
        rng = np.random.default_rng(train.seed)
        n_val = max(1, round(validation_fraction * len(patients)))
        val = set(rng.choice(patients, size=n_val, replace=False)) if len(patients) > 1 \
            else set()
        splits = pd.DataFrame({"fold": 0, "patient_key": patients,
                               "split": ["validation" if p in val else "train"
                                         for p in patients]})
        ray.ensure()
        study = StudyConfig(train=train, splits=SplitConfig(folds=2), workers=workers,
                            use_gpu=use_gpu, cpus_per_worker=cpus_per_worker)
        net, meta = run_fold(0, index, splits, join(out_url, "cache"), out_url, study, options)
    url = join(out_url, "models", f"pretrained-{train.model}.pt")
    buf = io.BytesIO()
    segmenter.save_checkpoint(buf, net, **meta, synthetic=synthetic,
                              pretrained_on=f"{len(index)} series of {len(patients)} patients")
    write_bytes(url, buf.getvalue(), options)
    return (f"{'SYNTHETIC ' if synthetic else ''}MAE pre-training of {train.model}: "
            f"{len(index)} series, validation reconstruction loss "
            f"{meta.get('best_val_loss', float('nan')):.4f} -> {url}")


# --- the shipped segmenter ----------------------------------------------------------------


@dataclass(frozen=True)
class SegShipRecipe:
    #: the generator's defaults (512 x 512, every thickness, tilt, artefacts, distractors)
    synth: SynthConfig = field(default_factory=lambda: SynthConfig(
        patients=110, seed=11, workers=0))
    study: SegStudyConfig = field(default_factory=lambda: SegStudyConfig(
        splits=SplitConfig(folds=5, seed=0), only_folds=(0,), workers=1, cpus_per_worker=2))
    variants: tuple[str, ...] = ("vit", "threshold_130hu")
    #: an optional second fine-tuning stage from the first stage's fold model (all of it),
    #: on the same folds and crops; None: one stage. The shipped checkpoint ran this
    #: stage (20 epochs at lr 1e-3) on the phantoms whose carotid canal holds soft tissue
    #: around the artery, from a first stage trained before that fix (docs/segmenter.md,
    #: "Results with the carotid-canal fix"). On the phantoms before the fix a 40-epoch
    #: stage raised validation Dice but not the job's figures on unseen cohorts
    refine: TrainConfig | None = field(default_factory=lambda: replace(
        SegStudyConfig().train, epochs=20, lr=1e-3, patience=8))
    #: the cohort the component filter is fitted on, never trained on: the landmark
    #: model's calibration cohort (`cohort.train.ship.ShipRecipe.calibration`). None: no
    #: filter (the mask is the voxels at or above the calibrated threshold)
    calibration: SynthConfig | None = field(
        default_factory=lambda: LANDMARK_RECIPE.calibration)


SEG_RECIPE = SegShipRecipe()


def fit_filter(segmenter_pt: str, data_url: str, work_url: str, out_pt: str, *,
               labels_url: str | None = None, masks_url: str | None = None,
               fitted_on: str | None = None, options: StorageOptions | None = None) -> str:
    """Fit a component filter (`cohort.model.component_filter`) for ``segmenter_pt`` on the
    crops of ``data_url`` (a synthetic cohort, or an index with landmarks and masks), out of
    fold by patient, and write the segmenter with it to ``out_pt``; a short report.

    The cohort must be one the segmenter never trained on: the filter learns which of the
    segmenter's candidate components are calcium on scans it has not seen."""
    import tempfile

    import torch

    from cohort.job.segmenter_checkpoint import describe_segmenter
    from cohort.model.zoo import load_checkpoint
    from cohort.train.component_filter import (
        attach_component_filter,
        component_table,
        fit_component_filter,
    )

    info = describe_segmenter(segmenter_pt, options)
    net, _ = load_checkpoint(info.path)
    net = net.float().eval()
    cache_url = join(work_url, "filter-cache")
    seg_index(data_url, cache_url, SegStudyConfig(), labels_url=labels_url,
              masks_url=masks_url, options=options)

    def logits(uid: str, hu):
        with torch.inference_mode():
            return segmenter.crop_logits(net, hu)

    table = component_table(cache_url, logits, info.temperature, upper_p=info.bounds[1])
    fit = fit_component_filter(table, level=info.level)
    with tempfile.TemporaryDirectory() as tmp:  # then one write, to any storage
        local = f"{tmp}/segmenter.pt"
        attach_component_filter(info.path, local, fit, info.temperature,
                                fitted_on or redact(data_url))
        with open(local, "rb") as f:
            write_bytes(out_pt, f.read(), options)
    o = fit.oof_summary
    return (f"component filter on {len(table.series)} series ({len(table.components)} "
            f"candidate components), out of fold: AUC {fit.oof_auc:.3f}, Dice "
            f"{o['dice_mean']:.3f} mean / {o['dice_pooled']:.3f} pooled, r "
            f"{o['pearson_r_log1p']:.3f}, kappa {o['kappa_linear']:.3f}; interval upper "
            f"bound at p >= {fit.upper_p} (was {info.bounds[1]}), coverage "
            f"{o['interval_coverage']:.2f} -> {out_pt}")


def export_segmenter(study_url: str, path: str, variant: str = "vit", fold: int = 0,
                     options: StorageOptions | None = None, *,
                     cache_url: str | None = None) -> dict:
    """The study's fold model as float16 weights (calibration, crop, the range of in-plane
    pixel sizes of its study's cohort (``cache_url``, default the study's crop cache) and
    the study's test figures in its metadata); returns its metadata."""
    from cohort.model.zoo import load_checkpoint
    from cohort.train.seg_tasks import save_seg_checkpoint

    data = read_bytes(join(study_url, "models", f"{variant}-fold-{fold}.pt"), options)
    net, meta = load_checkpoint(io.BytesIO(data))
    summary = read_table(join(study_url, "tables", "seg_summary.parquet"), options)
    meta["test_summary"] = {r["variant"]: {k: (float(v) if isinstance(v, float) else v)
                                           for k, v in r.items()}
                            for r in summary.to_dict("records")}
    index = pd.read_parquet(io.BytesIO(read_bytes(
        join(cache_url or join(study_url, "cache"), "index.parquet"), options)),
        columns=["pixel_spacing_mm"])
    meta["trained_pixel_mm"] = [round(float(index["pixel_spacing_mm"].min()), 4),
                                round(float(index["pixel_spacing_mm"].max()), 4)]
    buf = io.BytesIO()
    save_seg_checkpoint(buf, net.half(), **meta)  # float16 weights: half the file
    fs, p = filesystem(path, options)
    with fs.open(p, "wb") as f:
        f.write(buf.getvalue())
    return meta


def ship_segmenter(out_url: str, path: str, recipe: SegShipRecipe = SEG_RECIPE,
                   options: StorageOptions | None = None) -> str:
    """Generate the cohort (unless complete), run the recipe's study (resumes), export."""
    from cohort.storage import is_published
    from cohort.synth.heads import generate_cohort

    cohort_url = join(out_url, "cohort")
    if not is_published(cohort_url, options):
        generate_cohort(recipe.synth, cohort_url, options, overwrite=True)
    study_url = join(out_url, "study")
    report = train_segmenter(cohort_url, study_url, recipe.study, variants=recipe.variants,
                             options=options)
    fold = recipe.study.folds_run[0]
    if recipe.refine is not None:
        first = join(study_url, "models", f"vit-fold-{fold}.pt")
        config = replace(recipe.study, train=replace(recipe.refine, init_weights=first))
        study_url = join(out_url, "study-refined")
        report += "\n" + train_segmenter(cohort_url, study_url, config,
                                         variants=recipe.variants,
                                         cache_url=join(out_url, "study", "cache"),
                                         options=options)
    meta = export_segmenter(study_url, path, "vit", fold, options,
                            cache_url=join(out_url, "study", "cache"))
    cal = meta["calibration"]
    if recipe.calibration is not None:
        calibration_url = join(out_url, "calibration-cohort")
        if not is_published(calibration_url, options):
            generate_cohort(recipe.calibration, calibration_url, options, overwrite=True)
        report += "\n" + fit_filter(
            path, calibration_url, out_url, path, options=options,
            fitted_on=f"calibration cohort: SYNTHETIC phantoms, seed "
                      f"{recipe.calibration.seed}, {recipe.calibration.patients} patients")
    return (f"{report}\nshipped segmenter: fold {meta.get('fold')} (temperature "
            f"{cal['temperature']:.2f}, threshold {cal['threshold']:.2f}) -> {path} "
            f"(SYNTHETIC phantoms; recipe {asdict(recipe.synth)['patients']} patients, seed "
            f"{recipe.synth.seed})")
