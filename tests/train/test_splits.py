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


def test_validation_patients_differ_between_folds():
    # the old rotation np.roll(rest, -f * n_val) gave folds 0 and 2 of this split the same
    # four validation patients
    s = make_splits([f"P{i:02d}" for i in range(40)], SplitConfig(folds=5, seed=0))
    check_splits(s)
    vals = [set(f[f.split == "validation"].patient_key) for _, f in s.groupby("fold")]
    assert [len(v) for v in vals] == [4] * 5
    for a in range(5):
        for b in range(a + 1, 5):
            assert not vals[a] & vals[b], f"folds {a} and {b} validate on the same patients"
    # each fold validates on patients of the next fold's test split, never on its own
    tests = [set(f[f.split == "test"].patient_key) for _, f in s.groupby("fold")]
    assert all(vals[f] <= tests[(f + 1) % 5] for f in range(5))


def test_strata_are_spread_over_every_split():
    # 3 classes of 20, 20 and 10 patients, 5 folds: each test split holds 4, 4 and 2, each
    # validation split 2, 2 and 1 (scikit-learn's StratifiedGroupKFold over 10 sub-folds)
    patients = [f"P{i:02d}" for i in range(50)]
    strata = {p: ("NCP", "CP", "Normal")[0 if i < 20 else 1 if i < 40 else 2]
              for i, p in enumerate(patients)}
    s = make_splits(patients, SplitConfig(folds=5, seed=2), strata)
    check_splits(s)
    s["stratum"] = s["patient_key"].map(strata)
    counts = s.groupby(["fold", "split", "stratum"]).size().unstack("stratum")
    for f in range(5):
        assert counts.loc[(f, "test")].to_dict() == {"CP": 4, "NCP": 4, "Normal": 2}
        assert counts.loc[(f, "validation")].to_dict() == {"CP": 2, "NCP": 2, "Normal": 1}
    with pytest.raises(ConfigError, match="no stratum"):
        make_splits(patients, SplitConfig(), {"P00": "CP"})


def test_validation_fraction_picks_the_sub_folds():
    assert SplitConfig().sub_folds == 2  # 5 folds, 10%: 1 / (5 * 2)
    assert SplitConfig(folds=10).sub_folds == 1
    assert SplitConfig(folds=3).sub_folds == 3  # 1/9 = 11% of all
    s = make_splits([f"P{i:02d}" for i in range(27)], SplitConfig(folds=3, seed=1))
    assert set(s[s.split == "validation"].groupby("fold").size()) == {3}
    with pytest.raises(ConfigError, match="must lie in"):
        SplitConfig(folds=5, validation_fraction=0.3)


def test_a_small_cohort_still_fills_every_split():
    """6 patients, 2 folds: fewer sub-folds, but every fold trains, validates and tests, and
    every patient is tested once."""
    splits = make_splits([f"P{i}" for i in range(6)], SplitConfig(folds=2, seed=3))
    check_splits(splits)
    for _, fold in splits.groupby("fold"):
        counts = fold["split"].value_counts()
        assert counts["test"] == 3 and counts["validation"] >= 1 and counts["train"] >= 1
