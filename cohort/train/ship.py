"""The shipped checkpoint: one reproducible recipe from nothing to
``cohort/model/weights/dst-small-synthetic.pt``.

    cohort train shipped --out ./studies/shipped

generates the synthetic cohort (`RECIPE.synth`), runs the 5-fold study with the recipe's
settings, and exports the fold model with the best *validation* MAE (never chosen on test)
as float16 weights, with its calibration temperatures, model input size, the recipe, and the
study's Table II metrics in its metadata. Trained on SYNTHETIC phantoms: a demonstration of
the whole system, not a model for clinical or research use.

The recipe is sized for a 2-core CPU in about an hour (64 x 64 in-plane input, 6 epochs,
SGD lr 1e-2 momentum 0.9 instead of the paper's 2e-3 / 0.3, which learns far slower in so few
epochs); with a GPU, raise epochs and input size.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass, field

import pandas as pd

from cohort.config import SynthConfig
from cohort.model.dst import load_checkpoint, save_checkpoint
from cohort.preprocess.model_input import ModelInputConfig
from cohort.storage import StorageOptions, join, read_bytes
from cohort.train.loop import TrainConfig
from cohort.train.splits import SplitConfig
from cohort.train.study import StudyConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShipRecipe:
    synth: SynthConfig = field(default_factory=lambda: SynthConfig(patients=40, seed=7,
                                                                   matrix=256, workers=0))
    study: StudyConfig = field(default_factory=lambda: StudyConfig(
        train=TrainConfig(model="small", epochs=6, patience=3, warmup_epochs=1, lr=1e-2,
                          momentum=0.9, seed=0),
        splits=SplitConfig(folds=5, seed=0), workers=1, cpus_per_worker=2,
        model_input=ModelInputConfig(size=64)))


RECIPE = ShipRecipe()


def export_best(study_url: str, path: str, recipe: ShipRecipe = RECIPE,
                options: StorageOptions | None = None) -> dict:
    """Write the fold model with the lowest validation MAE to ``path`` (float16 weights).

    Returns:
        The metadata written.
    """
    best = None
    for fold in range(recipe.study.splits.folds):
        data = read_bytes(join(study_url, "models", f"fold-{fold}.pt"), options)
        model, meta = load_checkpoint(io.BytesIO(data))
        if best is None or meta["best_val_mae"] < best[1]["best_val_mae"]:
            best = (model, meta)
    assert best is not None
    model, meta = best
    summary = pd.read_parquet(io.BytesIO(read_bytes(
        join(study_url, "tables", "table2_summary.parquet"), options)))
    overall = summary[summary["landmark"] == "overall"] if "landmark" in summary else summary
    meta = {**meta, "synthetic": True, "trained_on": "synthetic phantoms",
            "not_for_clinical_use": True,
            "recipe": {"command": "cohort train shipped", "synth": _plain(asdict(recipe.synth)),
                       "study": _plain(asdict(recipe.study))},
            "study_table2_overall": _plain(overall.to_dict("records"))}
    half = model.half()
    save_checkpoint(path, half, **meta)
    logger.info("exported fold %s (validation MAE %.3f) to %s", meta.get("fold"),
                meta["best_val_mae"], path)
    return meta


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def ship(out_url: str, path: str, recipe: ShipRecipe = RECIPE,
         options: StorageOptions | None = None) -> str:
    """Generate the cohort (unless ``<out>/cohort`` is already complete), run the study
    (resumes where it stopped), export the best fold; return the study's report."""
    from cohort.storage import is_published
    from cohort.synth.heads import generate_cohort
    from cohort.train.command import train_localization

    cohort_url = join(out_url, "cohort")
    if not is_published(cohort_url, options):
        generate_cohort(recipe.synth, cohort_url, options, overwrite=True)
    report = train_localization(cohort_url, join(out_url, "study"), recipe.study,
                                options=options)
    meta = export_best(join(out_url, "study"), path, recipe, options)
    return (f"{report}\nshipped checkpoint: fold {meta.get('fold')} (best validation MAE "
            f"{meta['best_val_mae']:.3f} slices) -> {path} (SYNTHETIC phantoms)")
