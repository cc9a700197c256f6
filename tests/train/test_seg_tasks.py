"""The segmentation task's hard-positive sampling and its recall-weighted loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cohort.errors import ConfigError
from cohort.train.loop import TrainConfig
from cohort.train.seg_tasks import BONE_HU, SegmentationTask, bone_calcium, dice_bce


def crop_with_two_plaques() -> np.ndarray:
    """(2, H, W, D): soft tissue, a bone slab, a plaque against it and one far from it."""
    crop = np.zeros((2, 40, 40, 12), np.float32)
    crop[0] = 40.0
    crop[0, 10:14, :, :] = 1500.0  # bone: rows 10-13
    crop[0, 14:16, 5:8, 4:6] = 600.0  # plaque on the bone (rows 14-15)
    crop[1, 14:16, 5:8, 4:6] = 1
    crop[0, 30:32, 30:33, 6:8] = 400.0  # plaque in soft tissue, far from bone
    crop[1, 30:32, 30:33, 6:8] = 1
    return crop


def test_bone_calcium_is_the_calcium_next_to_bone_only():
    crop = crop_with_two_plaques()
    hard = bone_calcium(crop)
    assert len(hard) == 3 * 2  # row 14 touches row 13's bone; row 15 does not
    assert set(hard[:, 0]) == {14}
    # dense calcium is not bone: a plaque above BONE_HU alone is no bone neighbour
    crop[0, 30:32, 30:33, 6:8] = BONE_HU + 300
    assert len(bone_calcium(crop)) == 6
    assert bone_calcium(np.zeros((2, 4, 4, 4), np.float32)).shape == (0, 3)


def test_hard_positive_windows_centre_on_calcium_touching_bone():
    crop = crop_with_two_plaques()
    row = {"path": "a.npz", "series_uid": "1.2.3"}
    rng = np.random.default_rng(0)
    hard = SegmentationTask("tiny", hard_positive_p=1.0)
    plain = SegmentationTask("tiny")

    def near_bone_plaque(c) -> bool:  # within the +-6 voxel jitter of its voxels
        return 8 <= c[0] <= 21 and -1 <= c[1] <= 13

    # calcium-centred windows (POSITIVE_P = 0.6) all go to the bone plaque, the rest
    # anywhere (13% of the crop is near it): 0.65 expected; half as many without
    share = np.mean([near_bone_plaque(hard._centre(crop, row, rng)) for _ in range(600)])
    plain_share = np.mean([near_bone_plaque(plain._centre(crop, row, rng))
                           for _ in range(600)])
    assert 0.58 < share < 0.72
    assert 0.28 < plain_share < 0.42


def test_a_crop_without_bone_calcium_falls_back_to_any_calcium():
    crop = crop_with_two_plaques()
    crop[0, 10:14] = 40.0  # no bone left
    task = SegmentationTask("tiny", hard_positive_p=1.0)
    rng = np.random.default_rng(1)
    centres = [task._centre(crop, {"series_uid": "x"}, rng) for _ in range(200)]
    assert any(c[0] >= 24 for c in centres)  # the soft-tissue plaque still gets windows


def test_fn_weight_half_is_dice_and_more_punishes_misses():
    target = torch.zeros(1, 1, 4, 4, 2)
    target[..., :2, :2, :] = 1
    missing = torch.full_like(target, -6.0)  # calls nothing
    over = torch.full_like(target, 6.0)  # calls everything
    p = torch.sigmoid(missing)
    dice = (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(missing, target)
    assert torch.isclose(dice_bce(missing, target), bce + 1 - dice, atol=1e-2)
    # with more weight on misses, missing calcium costs more and over-calling less
    assert dice_bce(missing, target, 0.8) > dice_bce(missing, target, 0.5)
    assert dice_bce(over, target, 0.8) < dice_bce(over, target, 0.5)


@pytest.mark.parametrize("field,value", [("hard_positive_p", 1.5), ("fn_weight", 1.0),
                                         ("fn_weight", 0.0)])
def test_training_config_refuses_shares_out_of_range(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(task="segmentation", **{field: value})
