"""A segmenter checkpoint that carries a component filter: the job reads it, checks it, and
its stage keeps only the components the filter keeps; one without behaves as before."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cohort.errors import ConfigError
from cohort.geometry import Grid
from cohort.job.calcium import CalciumSegmenterStage
from cohort.job.segmenter_checkpoint import describe_segmenter, shipped_segmenter
from cohort.model.component_filter import (
    FEATURES,
    ComponentFilterConfig,
    TreeEnsemble,
    filter_mask,
)
from cohort.train.component_filter import FilterFit, attach_component_filter


def _stump() -> TreeEnsemble:
    """Keeps components with bone (> 700 HU) in the ring around them, drops the others."""
    return TreeEnsemble(
        feature=np.array([FEATURES.index("ring_bone"), 0, 0]),
        threshold=np.array([0.0, 0, 0]), left=np.array([1, 0, 0]), right=np.array([2, 0, 0]),
        is_leaf=np.array([False, True, True]), value=np.array([0.0, -5.0, 5.0]),
        missing_left=np.array([True, False, False]), roots=np.array([0]), baseline=0.0,
        features=FEATURES, config=ComponentFilterConfig())


def _fit(model: dict) -> FilterFit:
    return FilterFit(model=model, oof_scores=np.zeros(0), oof_auc=math.nan,
                     oof_summary={"dice_mean": 0.5}, oof_rows=pd.DataFrame())


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The shipped segmenter without its component filter."""
    out = tmp_path_factory.mktemp("seg") / "segmenter-plain.pt"
    ckpt = torch.load(shipped_segmenter(), weights_only=True)
    ckpt["meta"] = {k: v for k, v in ckpt["meta"].items() if k != "component_filter"}
    torch.save(ckpt, out)
    return str(out)


@pytest.fixture(scope="module")
def with_filter(plain, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg") / "segmenter-filter.pt"
    t = describe_segmenter(plain).temperature
    attach_component_filter(plain, str(out), _fit(_stump().to_dict()), t, "a test")
    return str(out)


def test_the_checkpoint_carries_the_filter_and_its_record(with_filter, plain):
    info = describe_segmenter(with_filter)
    plain = describe_segmenter(plain)
    assert plain.component_filter is None
    assert TreeEnsemble.from_dict(info.component_filter).roots.tolist() == [0]
    assert info.sha256 != plain.sha256 and info.mask_source != plain.mask_source
    meta = torch.load(with_filter, weights_only=True)["meta"]
    assert meta["calibration"]["component_filter"]["fitted_on"] == "a test"
    assert meta["calibration"]["threshold"] == plain.threshold  # the rest is untouched


def test_a_refitted_upper_bound_replaces_the_validation_one(plain, tmp_path):
    from dataclasses import replace

    before = describe_segmenter(plain)
    out = tmp_path / "refit.pt"
    attach_component_filter(plain, str(out), replace(_fit(_stump().to_dict()), upper_p=0.01),
                            before.temperature, "a test")
    info = describe_segmenter(str(out))
    assert info.bounds == (before.bounds[0], 0.01)
    cal = torch.load(out, weights_only=True)["meta"]["calibration"]
    # the validation split's bounds are kept, the first time a filter refits them (the
    # shipped checkpoint's own were refitted once already)
    plain_cal = torch.load(plain, weights_only=True)["meta"]["calibration"]
    assert cal["interval_thresholds_validation"] == plain_cal.get(
        "interval_thresholds_validation", list(before.bounds))
    assert cal["interval_thresholds_validation"] != [before.bounds[0], 0.01]
    assert cal["component_filter"]["interval_upper_p"] == 0.01


def test_a_filter_at_another_temperature_or_of_another_kind_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="temperature"):
        attach_component_filter(shipped_segmenter(), str(tmp_path / "x.pt"),
                                _fit(_stump().to_dict()), 9.0, "a test")
    bad = {**_stump().to_dict(), "features": ["a", "b"]}
    t = describe_segmenter(None).temperature
    attach_component_filter(shipped_segmenter(), str(tmp_path / "bad.pt"), _fit(bad), t, "x")
    with pytest.raises(ConfigError, match="component filter this version cannot use"):
        describe_segmenter(str(tmp_path / "bad.pt"))


def test_the_stage_keeps_only_what_the_filter_keeps(with_filter, plain):
    stage = CalciumSegmenterStage(with_filter, prefer_gpu=False)
    assert CalciumSegmenterStage(plain, prefer_gpu=False).filter is None
    assert CalciumSegmenterStage(None, prefer_gpu=False).filter is not None  # shipped
    # crop (H, W, D) = (rows, columns, slices); 0.5 mm pixels, 2 mm slices
    grid = Grid((0.0, 0.0, 0.0), (0.5, 0, 0), (0, 0.5, 0), (0, 0, 2.0), (10, 40, 40))
    prob = np.zeros((40, 40, 10), dtype=np.float32)
    hu = np.full(prob.shape, 40.0, dtype=np.float32)
    hu[0:5] = 1000.0  # bone along the first rows
    prob[7:10, 10:14, 4:6], hu[7:10, 10:14, 4:6] = 0.95, 300.0  # beside the bone: kept
    prob[30:32, 30:32, 5], hu[30:32, 30:32, 5] = 0.99, 300.0  # far from it: dropped
    mask, low = stage.filtered(prob, hu, grid, {"slice_thickness_mm": 2.0})
    assert mask.sum() == 24 and mask[8, 11, 4] and not mask[30, 30, 5]
    assert not low.any()  # no voxel reaches the lower bound's 0.9999
    same, _, kept = filter_mask(prob, hu, (0.5, 0.5, 2.0), 2.0, stage.filter)
    assert np.array_equal(mask, same) and kept.n_candidates == 2
    # a series without a slice thickness is measured with its slice spacing
    again, _ = stage.filtered(prob, hu, grid, {"slice_thickness_mm": None})
    assert np.array_equal(again, mask)
