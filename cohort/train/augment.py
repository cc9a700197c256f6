"""Augmentation of whole volumes (the DST's and the classifiers' training inputs)."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(1, H, W, D) -> augmented copy: intensity gain/offset, noise, an in-plane shift, zoom
    and rotation shared by all slices. Nothing moves along depth, so labels stay valid. The
    shift (up to 15% of the half-width: 10 mm of a 128 mm skull-base field of view) is what
    a misplaced centre of the field of view does; the zoom, +-8%, is head size."""
    gain = 1 + (torch.rand(1, generator=gen).item() - 0.5) * 0.2
    offset = (torch.rand(1, generator=gen).item() - 0.5) * 0.1
    noise = torch.rand(1, generator=gen).item() * 0.02
    angle = math.radians((torch.rand(1, generator=gen).item() - 0.5) * 10)
    zoom = 1 + (torch.rand(1, generator=gen).item() - 0.5) * 0.16
    shift = (torch.rand(2, generator=gen) - 0.5) * 0.3
    c, s = math.cos(angle) * zoom, math.sin(angle) * zoom
    theta = torch.tensor([[c, -s, shift[0]], [s, c, shift[1]]], dtype=x.dtype)
    slices = x[0].permute(2, 0, 1)[:, None]  # (D, 1, H, W)
    grid = F.affine_grid(theta.expand(slices.shape[0], 2, 3), list(slices.shape),
                         align_corners=False)
    moved = F.grid_sample(slices, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    out = moved[:, 0].permute(1, 2, 0)[None] * gain + offset
    out = out + noise * torch.randn(out.shape, generator=gen)
    return out.clamp(0, 1)
