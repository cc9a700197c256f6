"""The nnU-Net-style baseline of the calcium segmenter: MONAI's ``DynUNet`` (nnU-Net's
design: two 3 x 3 x 3 convolutions per level, instance norm, leaky ReLU, strided
convolutions down and transposed convolutions up, skip connections), configured for the
same windows as the ViT (`cohort.model.segmenter`), so both are trained, calibrated and
tested alike. nnU-Net v2 itself plans its own preprocessing, patches and 1000-epoch
schedule around a dataset folder and is not used: its network, at the windows we use, is
this one.

Shapes as the segmenter: (B, 1, H, W, D) scaled CT in, (B, 1, H, W, D) calcium logits out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from monai.networks.nets import DynUNet
from torch import nn

from cohort.errors import ConfigError
from cohort.model.segmenter import (
    CALCIUM_HU,
    HU_KNOTS,
    LEGACY_HU_KNOTS,
    PRIOR_LOGIT,
    check_knots,
    gate,
)


@dataclass(frozen=True)
class UNetConfig:
    name: str = "unet"
    window: tuple[int, int, int] = (64, 64, 16)  # H, W, D voxels per forward pass
    filters: tuple[int, ...] = (16, 32, 64, 96, 128)  # per level, full resolution first
    #: per level after the first: (2, 2, 2) halves every axis, (2, 2, 1) in-plane only (as
    #: nnU-Net does for anisotropic voxels)
    strides: tuple[tuple[int, int, int], ...] = ((2, 2, 2), (2, 2, 2), (2, 2, 1), (2, 2, 1))
    #: candidate voxels only, as the ViT (`cohort.model.segmenter.gate`)
    gate_hu: float | None = CALCIUM_HU
    #: the input map (`cohort.model.segmenter.scale_hu`), as the ViT's
    hu_knots: tuple[tuple[float, float], ...] = HU_KNOTS

    def __post_init__(self) -> None:
        check_knots(self.hu_knots)
        if len(self.filters) != len(self.strides) + 1:
            raise ConfigError(f"{len(self.strides)} down-sampling steps need "
                              f"{len(self.strides) + 1} filter counts, got {self.filters}")
        total = [1, 1, 1]
        for s in self.strides:
            total = [t * f for t, f in zip(total, s, strict=True)]
        if any(w % t for w, t in zip(self.window, total, strict=True)):
            raise ConfigError(f"window {self.window} does not divide by the total stride "
                              f"{tuple(total)}")


class UNet3D(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        strides = [(1, 1, 1), *cfg.strides]
        self.net = DynUNet(spatial_dims=3, in_channels=1, out_channels=1,
                           kernel_size=[(3, 3, 3)] * len(strides), strides=strides,
                           upsample_kernel_size=list(cfg.strides), filters=list(cfg.filters),
                           norm_name=("INSTANCE", {"affine": True}),
                           act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}))

        torch.nn.init.constant_(self.net.output_block.conv.conv.bias, PRIOR_LOGIT)

    def forward(self, x: torch.Tensor, depths: torch.Tensor | None = None) -> torch.Tensor:
        return gate(self.net(x), x, self.cfg.gate_hu, self.cfg.hu_knots)


CONFIGS = {
    "unet": UNetConfig(),
    "unet-tiny": UNetConfig(name="unet-tiny", window=(32, 32, 8), filters=(8, 16, 16, 32),
                            strides=((2, 2, 2), (2, 2, 2), (2, 2, 1))),
}


def build_config(name: str, **overrides) -> UNetConfig:
    if name not in CONFIGS:
        raise ConfigError(f"unknown U-Net configuration {name!r}; choose from "
                          f"{', '.join(CONFIGS)}")
    return replace(CONFIGS[name], **overrides)


def build_model(name: str = "unet", **overrides) -> UNet3D:
    return UNet3D(build_config(name, **overrides))


FORMAT = "cohort.unet3d/1"


def save_checkpoint(path, net: UNet3D, **meta) -> None:
    cfg = asdict(net.cfg)
    torch.save({"format": FORMAT, "config": cfg, "state_dict": net.state_dict(), "meta": meta},
               path)


def load_checkpoint(path, *, map_location: str | torch.device = "cpu"):
    """(network, meta), loaded with ``weights_only=True``."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ConfigError(f"refusing checkpoint {path}: not a tensors-only PyTorch "
                          f"checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a cohort U-Net checkpoint ({FORMAT!r})")
    c = ckpt["config"]
    cfg = UNetConfig(name=c["name"], window=tuple(c["window"]), filters=tuple(c["filters"]),
                     strides=tuple(tuple(s) for s in c["strides"]),
                     gate_hu=c.get("gate_hu", CALCIUM_HU),
                     hu_knots=tuple(tuple(k) for k in c.get("hu_knots", LEGACY_HU_KNOTS)))
    net = UNet3D(cfg)
    net.load_state_dict(ckpt["state_dict"])
    return net, dict(ckpt.get("meta", {}))
