"""Patient-level k-fold splits: every scan of a patient falls in one split.

Per fold: the test split is one fold of patients (20% for 5 folds), and the remaining
patients divide into validation (10% of all) and training (70%). The validation split alone
chooses checkpoints and fits calibration; the test split is only ever predicted, once, at
the end. Splits are seeded, saved beside the results and reloaded (never recomputed) when
a study resumes.

The folds are scikit-learn's ``StratifiedGroupKFold`` (groups = patients, classes = the
optional strata), shuffled with the seed, over ``folds x m`` sub-folds: fold f tests on
sub-folds ``f*m .. f*m+m-1`` and validates on sub-fold ``(f+1)*m``, the first of the next
fold's test patients, so no two folds validate on the same patients and every split is
stratified. ``m`` is the whole number that brings ``1 / (folds * m)`` closest to
``validation_fraction`` (2 for 5 folds and 10%), or fewer for a cohort too small to give
every sub-fold a patient.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cohort.errors import ConfigError

logger = logging.getLogger(__name__)

SPLIT_COLUMNS = ("fold", "patient_key", "split")


@dataclass(frozen=True)
class SplitConfig:
    folds: int = 5
    validation_fraction: float = 0.10  # of all patients: a part of the next fold's test ones
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"--folds must be at least 2, got {self.folds}")
        if not 0 < self.validation_fraction <= 1 / self.folds:
            raise ConfigError(f"validation fraction {self.validation_fraction} must lie in "
                              f"(0, 1/folds = {1 / self.folds:g}]: validation patients are "
                              "taken from one other fold's test patients")

    @property
    def sub_folds(self) -> int:
        """Sub-folds per fold (m): validation is one sub-fold, 1 / (folds * m) of all."""
        return max(1, round(1 / (self.folds * self.validation_fraction)))


def make_splits(patient_keys, config: SplitConfig = SplitConfig(),
                strata: Mapping[str, object] | None = None) -> pd.DataFrame:
    """A table (fold, patient_key, split) with split in {train, validation, test}.

    Args:
        strata: optional class of each patient (e.g. the diagnosis): every test and
            validation split then holds its share of each class, as far as the class
            sizes allow (stratified folds).

    Raises:
        ConfigError: fewer patients than needed for every split of every fold, or a
            patient without a stratum.
    """
    from sklearn.model_selection import StratifiedGroupKFold  # training only

    patients = np.array(sorted(set(map(str, patient_keys))))
    n, k = len(patients), config.folds
    need = 2 * k  # a test, a validation and a training patient in every fold
    if n < need:
        raise ConfigError(f"{n} patients cannot fill {k} folds with training, "
                          f"validation and test patients; at least {need} are needed")
    # a small cohort gets fewer sub-folds (each still holds a patient): its validation
    # splits are then a larger share than validation_fraction
    m = min(config.sub_folds, n // k)
    if m < config.sub_folds:
        logger.info("%d patients: %d sub-folds per fold instead of %d, so each validation "
                    "split holds about %.0f%% of the patients", n, m, config.sub_folds,
                    100 / (k * m))
    classes = np.zeros(n, dtype=int)
    if strata is not None:
        missing = [p for p in patients if p not in strata]
        if missing:
            raise ConfigError(f"no stratum (class) for {len(missing)} patient(s), e.g. "
                              f"{missing[:3]}")
        classes = np.unique([str(strata[p]) for p in patients], return_inverse=True)[1]
        if np.bincount(classes).max() < k * m:  # scikit-learn refuses to stratify these
            logger.warning("splits not stratified: no class has the %d patients of %d folds "
                           "x %d sub-folds (largest class: %d of %d patients); add patients "
                           "or use fewer folds for stratified splits", k * m, k, m,
                           np.bincount(classes).max(), n)
            classes = np.zeros(n, dtype=int)
    cv = StratifiedGroupKFold(n_splits=k * m, shuffle=True, random_state=config.seed)
    sub_fold = np.empty(n, dtype=int)
    with warnings.catch_warnings():  # a class smaller than k * m is spread as far as it goes
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        for s, (_, members) in enumerate(cv.split(patients, classes, groups=patients)):
            sub_fold[members] = s
    rows = []
    for f in range(k):
        test = sub_fold // m == f
        validation = sub_fold == ((f + 1) * m) % (k * m)
        split = np.where(test, "test", np.where(validation, "validation", "train"))
        rows += [(f, p, s) for p, s in zip(patients, split, strict=True)]
    return pd.DataFrame(rows, columns=list(SPLIT_COLUMNS))


def check_splits(splits: pd.DataFrame) -> None:
    """Raise unless every fold puts each patient in exactly one split and every patient is
    tested exactly once over the folds."""
    if list(splits.columns[:3]) != list(SPLIT_COLUMNS):
        raise ConfigError(f"a splits table needs the columns {SPLIT_COLUMNS}")
    dup = splits.duplicated(["fold", "patient_key"])
    if dup.any():
        raise ConfigError(f"patients in more than one split of a fold: "
                          f"{splits[dup].head().to_dict('records')}")
    tested = splits[splits["split"] == "test"].groupby("patient_key").size()
    if (tested != 1).any() or len(tested) != splits["patient_key"].nunique():
        raise ConfigError("every patient must be in the test split of exactly one fold")
