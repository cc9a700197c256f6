"""Localization targets: the paper's true slice, or a Gaussian in millimetres around it."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cohort.errors import ConfigError
from cohort.train.loop import TrainConfig
from cohort.train.tasks import (
    LocalizationTask,
    gaussian_targets,
    soft_cross_entropy,
)


def test_gaussian_targets_are_distributions_as_wide_in_mm_whatever_the_thickness():
    slices = torch.tensor([[10], [40]])
    spacing = torch.tensor([3.0, 0.75])
    t = gaussian_targets(slices, spacing, 80, sigma_mm=1.5)
    assert torch.allclose(t.sum(-1), torch.ones(2, 1))
    assert t[0, 0].argmax() == 10 and t[1, 0].argmax() == 40
    # width in mm: the share within +-1.5 mm of the truth is the same on both grids
    for b, (s, dz) in enumerate(((10, 3.0), (40, 0.75))):
        k = np.arange(80)
        near = np.abs((k - s) * dz) <= 3.0
        share = float(t[b, 0, near].sum())
        assert share > 0.9
    assert float(t[0, 0, 10]) > 0.7 > 0.3 > float(t[1, 0, 40])  # thick slices: nearly one-hot


def test_soft_cross_entropy_equals_cross_entropy_for_one_hot_and_ignores_padding():
    torch.manual_seed(0)
    logits = torch.randn(3, 12)
    logits[0, :4] = float("-inf")  # left padding of a shorter volume
    y = torch.tensor([7, 2, 11])
    one_hot = F.one_hot(y, 12).float()
    got = soft_cross_entropy(logits, one_hot)
    assert torch.isfinite(got)
    assert torch.allclose(got, F.cross_entropy(logits, y))
    # weight a target puts on padding is dropped, not a NaN
    spread = torch.full((3, 12), 1 / 12)
    assert torch.isfinite(soft_cross_entropy(logits, spread))


def test_the_task_trains_on_soft_targets_when_asked():
    task = LocalizationTask("tiny", 64, target_sigma_mm=2.0)
    arrays = [np.random.default_rng(0).random((32, 32, 20), dtype=np.float32)] * 2
    rows = [{f"{n}_target": 5 + i for i, n in enumerate(
        ["right_carotid_canal", "right_petrolingual", "right_anterior_clinoid",
         "left_carotid_canal", "left_petrolingual", "left_anterior_clinoid"])},
        {f"{n}_target": 3 for n in ["right_carotid_canal", "right_petrolingual",
                                      "right_anterior_clinoid", "left_carotid_canal",
                                      "left_petrolingual", "left_anterior_clinoid"]}]
    rows[0]["slice_spacing_mm"], rows[1]["slice_spacing_mm"] = 1.0, 5.0
    x, depths, y = task.batch(arrays, rows, "left")
    assert y.spacing_mm.tolist() == [1.0, 5.0]
    net = task.build()
    loss = task.loss(net(x, depths), y)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert task.validation_sums(net(x, depths), y)[2] == 12


def test_training_options_are_checked():
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ConfigError, match="target width"):
        TrainConfig(target_sigma_mm=-1)
