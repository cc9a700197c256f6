"""Splits: patient-level, 70/10/20, seeded, every patient tested once."""

import pandas as pd
import pytest

from cohort.errors import ConfigError
from cohort.train.splits import SplitConfig, check_splits, make_splits


def test_patient_level_70_10_20_and_tested_once():
    patients = [f"P{i:03d}" for i in range(100)]
    s = make_splits(patients, SplitConfig(folds=5, seed=1))
    check_splits(s)
    for _, fold in s.groupby("fold"):
        counts = fold["split"].value_counts().to_dict()
        assert counts == {"train": 70, "validation": 10, "test": 20}
        assert fold["patient_key"].is_unique
    # validation patients differ between folds
    vals = [set(f[f.split == "validation"].patient_key) for _, f in s.groupby("fold")]
    assert len(set.union(*vals)) > 30


def test_seeded_and_reproducible():
    p = [f"P{i}" for i in range(30)]
    a = make_splits(p, SplitConfig(seed=3))
    pd.testing.assert_frame_equal(a, make_splits(list(reversed(p)), SplitConfig(seed=3)))
    assert not a.equals(make_splits(p, SplitConfig(seed=4)))


def test_too_few_patients_and_broken_tables_are_refused():
    with pytest.raises(ConfigError, match="at least 10 are needed"):
        make_splits(["a", "b", "c"], SplitConfig(folds=5))
    s = make_splits([f"P{i}" for i in range(20)])
    broken = pd.concat([s, s.iloc[:1]])
    with pytest.raises(ConfigError, match="more than one split"):
        check_splits(broken)
