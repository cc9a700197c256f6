"""Patient-level k-fold splits: every scan of a patient falls in one split.

Per fold: the test split is one fold of patients (20% for 5 folds), and the remaining
patients divide into validation (10% of all) and training (70%). The validation split alone
chooses checkpoints and fits calibration; the test split is only ever predicted, once, at
the end. Splits are seeded, saved beside the results and reloaded (never recomputed) when
a study resumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cohort.errors import ConfigError

SPLIT_COLUMNS = ("fold", "patient_key", "split")


@dataclass(frozen=True)
class SplitConfig:
    folds: int = 5
    validation_fraction: float = 0.10  # of all patients, taken from the non-test ones
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"--folds must be at least 2, got {self.folds}")
        if not 0 < self.validation_fraction < 1 - 1 / self.folds:
            raise ConfigError(f"validation fraction {self.validation_fraction} leaves no "
                              "training patients")


def make_splits(patient_keys, config: SplitConfig = SplitConfig(),
                strata: Mapping[str, object] | None = None) -> pd.DataFrame:
    """A table (fold, patient_key, split) with split in {train, validation, test}.

    Args:
        strata: optional class of each patient (e.g. the diagnosis): each class is then
            spread evenly over the seeded order, so every test and validation split holds
            its share of each class (stratified folds).

    Raises:
        ConfigError: fewer patients than needed for every split of every fold.
    """
    patients = np.array(sorted(set(map(str, patient_keys))))
    n = len(patients)
    need = config.folds * 2
    if n < need:
        raise ConfigError(f"{n} patients cannot fill {config.folds} folds with training, "
                          f"validation and test patients; at least {need} are needed")
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(n) if strata is None else _stratified_order(patients, strata, rng)
    test_of = np.empty(n, dtype=int)
    for f, chunk in enumerate(np.array_split(order, config.folds)):
        test_of[chunk] = f
    n_val = max(1, int(round(config.validation_fraction * n)))
    rows = []
    for f in range(config.folds):
        rest = order[test_of[order] != f]  # in the seeded order
        # rotate so each fold validates on different patients
        val = set(np.roll(rest, -f * n_val)[:n_val].tolist())
        for i in range(n):
            split = "test" if test_of[i] == f else "validation" if i in val else "train"
            rows.append((f, patients[i], split))
    return pd.DataFrame(rows, columns=list(SPLIT_COLUMNS))


def _stratified_order(patients: np.ndarray, strata: Mapping[str, object],
                      rng: np.random.Generator) -> np.ndarray:
    """A seeded order of patient indices in which each stratum is spread evenly: a member's
    place is its rank within its (shuffled) stratum as a fraction of the stratum's size, with
    a random phase per stratum, so contiguous chunks of the order are balanced."""
    missing = [p for p in patients if p not in strata]
    if missing:
        raise ConfigError(f"no stratum (class) for {len(missing)} patient(s), e.g. "
                          f"{missing[:3]}")
    key = np.empty(len(patients))
    labels = np.array([str(strata[p]) for p in patients])
    for label in sorted(set(labels)):
        members = rng.permutation(np.flatnonzero(labels == label))
        key[members] = (np.arange(len(members)) + rng.random()) / len(members)
    return np.lexsort((rng.random(len(patients)), key))


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
