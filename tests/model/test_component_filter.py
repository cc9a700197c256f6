"""The component filter: features on a small volume with known components, the exported
tree ensemble against scikit-learn, the checkpoint round trip, and the filter itself."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from cohort.errors import ConfigError
from cohort.model.component_filter import (
    FEATURES,
    ComponentFilterConfig,
    TreeEnsemble,
    component_features,
    export_hgb,
    filter_mask,
)

SPACING = (0.5, 0.4, 2.0)  # mm along H, W, D: anisotropic on purpose
COL = {name: i for i, name in enumerate(FEATURES)}


@pytest.fixture(scope="module")
def volume():
    """(prob, hu) of 40 x 40 x 10 voxels: soft tissue at 40 HU; blob A (rows 7-9, 3 x 4 x 2
    voxels, p 0.95, 300 HU) with two rows of soft tissue between it and a 1000 HU slab
    (rows 0-4: 1.5 mm from A at 0.5 mm rows); blob B (2 x 2 x 1, p 0.5, 200 HU) far from
    anything bright; a p = 0.25 voxel below the candidate threshold."""
    prob = np.zeros((40, 40, 10), dtype=np.float32)
    hu = np.full(prob.shape, 40.0, dtype=np.float32)
    hu[0:5, :, :] = 1000.0  # the slab, rows 0-4
    prob[7:10, 10:14, 4:6] = 0.95  # A: rows 7-9 (row 5-6 gap: 1 mm to the slab)
    hu[7:10, 10:14, 4:6] = 300.0
    prob[30:32, 30:32, 5] = 0.5  # B
    hu[30:32, 30:32, 5] = 200.0
    prob[20, 20, 2] = 0.25  # not a candidate
    return prob, hu


def test_features_of_known_components(volume):
    prob, hu = volume
    labels, x = component_features(prob, hu, SPACING, thickness_mm=2.5)
    assert labels.shape == prob.shape and x.shape == (2, len(FEATURES))
    a, b = x[labels[8, 11, 4] - 1], x[labels[30, 30, 5] - 1]
    # sizes and extents in mm with the anisotropic spacing
    voxel = 0.5 * 0.4 * 2.0
    assert a[COL["log_n"]] == pytest.approx(math.log(24))
    assert a[COL["log_vol"]] == pytest.approx(math.log(24 * voxel))
    assert a[COL["log_vol90"]] == pytest.approx(math.log1p(24 * voxel))
    assert b[COL["log_vol90"]] == 0.0  # no voxel of B reaches 0.9
    assert (a[COL["ext_y"]], a[COL["ext_x"]], a[COL["ext_z"]], a[COL["nz"]]) == \
        pytest.approx((1.5, 1.6, 4.0, 2))
    assert (b[COL["ext_y"]], b[COL["ext_x"]], b[COL["ext_z"]], b[COL["nz"]]) == \
        pytest.approx((1.0, 0.8, 2.0, 1))
    # probabilities: logits clipped, median as is
    assert a[COL["lg_pmax"]] == pytest.approx(math.log(0.95 / 0.05), rel=1e-6)
    assert b[COL["p50"]] == pytest.approx(0.5)
    # context: the slab is 1 mm from A (inside the 1.5 mm ring), nowhere near B
    assert a[COL["ring_bone"]] > 0 and a[COL["ring_max"]] == 1000.0
    assert a[COL["near_bone"]] > 0  # the 5 mm shell sees it too
    assert b[COL["ring_bone"]] == 0 and b[COL["near_bone"]] == 0
    assert b[COL["ring_mean"]] == 40.0 and b[COL["ring_max"]] == 40.0
    assert b[COL["contrast"]] == pytest.approx(200.0 - 40.0)
    assert a[COL["thick"]] == b[COL["thick"]] == 2.5


def test_ring_distance_is_in_mm(volume):
    """The slab's last row is 3 rows from A: 1.5 mm at 0.5 mm rows (in the ring, above),
    3 mm at 1 mm rows: out of the 1.5 mm ring, still in the 5 mm shell."""
    prob, hu = volume
    labels, x = component_features(prob, hu, (1.0, 0.4, 2.0), thickness_mm=2.0)
    a = x[labels[8, 11, 4] - 1]
    assert a[COL["ring_bone"]] == 0 and a[COL["near_bone"]] > 0


def test_voxel_volume_can_be_the_grids_own(volume):
    prob, hu = volume
    _, x = component_features(prob, hu, SPACING, 2.0, voxel_mm3=1.0)
    assert sorted(np.exp(x[:, COL["log_vol"]])) == pytest.approx([4.0, 24.0])


def test_no_candidates_gives_no_rows():
    labels, x = component_features(np.zeros((5, 5, 3), np.float32),
                                   np.zeros((5, 5, 3), np.float32), (1, 1, 1), 1.0)
    assert x.shape == (0, len(FEATURES)) and not labels.any()


@pytest.fixture(scope="module")
def fitted():
    """A small ensemble fitted on random data with missing values in two columns."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, len(FEATURES)))
    y = (x[:, 0] + 0.5 * x[:, 4] - x[:, 11] + rng.normal(scale=0.5, size=600) > 0).astype(int)
    x[rng.random(600) < 0.1, 11] = np.nan  # missing seen in training
    clf = HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=15, min_samples_leaf=20,
                                         learning_rate=0.1, random_state=0).fit(x, y)
    return clf, rng


def test_exported_trees_equal_sklearn(fitted):
    clf, rng = fitted
    model = export_hgb(clf)
    x = rng.normal(size=(2000, len(FEATURES)))
    x[rng.random(2000) < 0.2, 11] = np.nan  # where training saw missing values
    x[rng.random(2000) < 0.2, 0] = np.nan  # where it saw none
    x[:5] = np.nan
    ours, theirs = model.score(x), clf.predict_proba(x)[:, 1]
    assert np.abs(ours - theirs).max() < 1e-9
    assert len(model.roots) == clf.n_iter_
    # exactly on a threshold goes left, as sklearn's `<=`
    root = model.roots[0]
    edge = np.zeros((1, len(FEATURES)))
    edge[0, model.feature[root]] = model.threshold[root]
    assert model.score(edge) == pytest.approx(clf.predict_proba(edge)[:, 1], abs=1e-12)


def test_checkpoint_round_trip_is_weights_only(fitted):
    clf, rng = fitted
    config = ComponentFilterConfig(keep_score=0.4)
    model = export_hgb(clf, config)
    buf = io.BytesIO()
    torch.save({"component_filter": model.to_dict()}, buf)
    buf.seek(0)
    loaded = TreeEnsemble.from_dict(torch.load(buf, weights_only=True)["component_filter"])
    x = rng.normal(size=(50, len(FEATURES)))
    assert np.array_equal(loaded.score(x), model.score(x))
    assert loaded.config == config


def test_from_dict_refuses_other_things():
    with pytest.raises(ConfigError, match="not a component filter"):
        TreeEnsemble.from_dict({"format": "cohort.segmenter/1"})


def test_export_refuses_an_unfitted_model():
    with pytest.raises(ConfigError, match="fitted"):
        export_hgb(HistGradientBoostingClassifier())


def stump(feature: str, threshold: float) -> TreeEnsemble:
    """One split: score expit(-5) ~ 0.007 at or below ``threshold``, expit(5) above."""
    return TreeEnsemble(
        feature=np.array([FEATURES.index(feature), 0, 0]), threshold=np.array([threshold, 0, 0]),
        left=np.array([1, 0, 0]), right=np.array([2, 0, 0]),
        is_leaf=np.array([False, True, True]), value=np.array([0.0, -5.0, 5.0]),
        missing_left=np.array([True, False, False]), roots=np.array([0]), baseline=0.0,
        features=FEATURES, config=ComponentFilterConfig())


def test_filter_mask_drops_a_component_scored_low(volume):
    prob, hu = volume
    prob = prob.copy()
    prob[8, 12, 4] = 0.99995  # one sure voxel in A
    model = stump("ring_bone", 0.0)  # keeps components touching bone: A only
    mask, lower, kept = filter_mask(prob, hu, SPACING, 2.0, model.to_dict())
    assert kept.n_candidates == 2 and kept.n_kept == 1
    assert sorted(kept.voxels.tolist()) == [4, 24]
    assert mask.sum() == 24 and mask[8, 11, 4] and not mask[30, 30, 5]
    assert lower.sum() == 1 and lower[8, 12, 4]
    # a looser keep score from the caller keeps both
    mask, _, kept = filter_mask(prob, hu, SPACING, 2.0, model,
                                ComponentFilterConfig(keep_score=0.001))
    assert kept.n_kept == 2 and mask.sum() == 28


def test_config_checks_its_thresholds():
    with pytest.raises(ConfigError, match="candidate_p"):
        ComponentFilterConfig(candidate_p=0.95)
