"""3-D CNN baselines of the paper's Table III, in plain torch: ResNet-50-3D and
DenseNet-121-3D (and tiny versions of both for tests).

Read top to bottom: config, ResNet bottleneck block and network, DenseNet layer, block,
transition and network, named configurations, checkpoints.

They follow the common 3-D ResNets / DenseNets with one input channel: a 7 x 7 x 7 stem
conv, a 3 x 3 x 3 max-pool with stride 2, then stages that halve every axis. The stem
strides 2 in-plane; along depth it strides 1 in the ResNet (as Hara et al.'s video ResNets)
and 2 in the DenseNet (as MONAI's DenseNet121). That choice is the one that reproduces the
paper's compute: ResNet-50-3D costs 40.5 G multiply-accumulates at 128 x 128 x 64 (the
paper: 40.89 G), DenseNet-121-3D 21.5 G (the paper: 21.45 G); with the other stride either
would be 2x off.

Shapes: B batch, H x W in-plane, D slices (depth last, as for the DST), C channels. A batch
of volumes of unequal depth arrives zero-padded to a common D; these networks see the
padding (global average pooling over it), which is why the benchmark resizes every volume
to one depth for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from cohort.errors import ConfigError


@dataclass(frozen=True)
class CNN3DConfig:
    """Everything that defines a baseline; checkpoints carry it."""

    name: str = "resnet50_3d"
    arch: str = "resnet"  # "resnet" (bottleneck blocks) or "densenet"
    stem_channels: int = 64  # channels of the 7 x 7 x 7 stem
    stem_kernel: int = 7
    stem_depth_stride: int = 1  # the stem always strides 2 in-plane; along depth 1 or 2
    blocks: tuple[int, ...] = (3, 4, 6, 3)  # resnet: blocks per stage; densenet: layers
    widths: tuple[int, ...] = (64, 128, 256, 512)  # resnet: bottleneck width (output x4)
    growth: int = 32  # densenet: channels each layer adds
    bn_size: int = 4  # densenet: bottleneck width = bn_size * growth
    n_classes: int = 3  # Clean-CC-CCII: NCP, CP, Normal
    dropout: float = 0.0  # before the classifier

    def __post_init__(self) -> None:
        if self.arch not in ("resnet", "densenet"):
            raise ConfigError(f"arch must be 'resnet' or 'densenet', got {self.arch!r}")
        if not self.blocks or min(self.blocks) < 1:
            raise ConfigError(f"every stage needs at least one block, got {self.blocks}")
        if self.arch == "resnet" and len(self.widths) != len(self.blocks):
            raise ConfigError(
                f"one width per stage: {len(self.blocks)} stages, {len(self.widths)} widths"
            )


def _stem(cfg: CNN3DConfig) -> nn.Sequential:
    """(B, 1, H, W, D) -> (B, C0, H/4, W/4, D/(2s)): strided conv and max-pool."""
    k, s = cfg.stem_kernel, cfg.stem_depth_stride
    return nn.Sequential(
        nn.Conv3d(1, cfg.stem_channels, k, stride=(2, 2, s), padding=k // 2, bias=False),
        nn.BatchNorm3d(cfg.stem_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(3, stride=2, padding=1),
    )


# --- ResNet ---------------------------------------------------------------------------------


class Bottleneck(nn.Module):
    """1x1x1 reduce -> 3x3x3 (strided) -> 1x1x1 expand (x4), plus a projected shortcut."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv3d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(c_out)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(
                nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm3d(c_out)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))  # (B, width, H/s, W/s, D/s)
        return F.relu(self.bn3(self.conv3(h)) + self.shortcut(x))


class ResNet3D(nn.Module):
    def __init__(self, cfg: CNN3DConfig):
        super().__init__()
        self.stem = _stem(cfg)
        stages, c = [], cfg.stem_channels
        for i, (n, width) in enumerate(zip(cfg.blocks, cfg.widths, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(c, width, stride=2 if i > 0 and j == 0 else 1))
                c = width * Bottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))  # (B, C, h, w, d)


# --- DenseNet -------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    """BN-ReLU-1x1x1 (bn_size * growth) -> BN-ReLU-3x3x3 (growth), concatenated to the input."""

    def __init__(self, c_in: int, growth: int, bn_size: int):
        super().__init__()
        self.norm1 = nn.BatchNorm3d(c_in)
        self.conv1 = nn.Conv3d(c_in, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm3d(bn_size * growth)
        self.conv2 = nn.Conv3d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        h = self.conv2(F.relu(self.norm2(h)))
        return torch.cat([x, h], dim=1)  # (B, C + growth, H, W, D)


class Transition(nn.Sequential):
    """BN-ReLU-1x1x1 halving the channels, then 2 x 2 x 2 average pooling."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.BatchNorm3d(c_in),
            nn.ReLU(inplace=True),
            nn.Conv3d(c_in, c_out, 1, bias=False),
            nn.AvgPool3d(2, stride=2),
        )


class DenseNet3D(nn.Module):
    def __init__(self, cfg: CNN3DConfig):
        super().__init__()
        self.stem = _stem(cfg)
        parts, c = [], cfg.stem_channels
        for i, n in enumerate(cfg.blocks):
            for _ in range(n):
                parts.append(DenseLayer(c, cfg.growth, cfg.bn_size))
                c += cfg.growth
            if i < len(cfg.blocks) - 1:
                parts.append(Transition(c, c // 2))
                c //= 2
        parts += [nn.BatchNorm3d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*parts)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.stem(x))  # (B, C, h, w, d)


# --- the classifier ---------------------------------------------------------------------------


class CNN3DClassifier(nn.Module):
    """(B, 1, H, W, D) -> (B, n_classes) logits: backbone, global average pool, linear."""

    def __init__(self, cfg: CNN3DConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet3D(cfg) if cfg.arch == "resnet" else DenseNet3D(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(self.backbone.out_channels, cfg.n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor, depths: torch.Tensor | None = None) -> torch.Tensor:
        """``depths`` is accepted for a common call with the DST and ignored (see module)."""
        h = self.backbone(x).mean(dim=(2, 3, 4))  # (B, C)
        return self.head(self.dropout(h)).float()


# --- named configurations ---------------------------------------------------------------------

CONFIGS: dict[str, CNN3DConfig] = {
    # the paper's baselines (Table III)
    "resnet50_3d": CNN3DConfig(),
    "densenet121_3d": CNN3DConfig(
        name="densenet121_3d",
        arch="densenet",
        stem_depth_stride=2,
        blocks=(6, 12, 24, 16),
        widths=(),
    ),
    # tiny: for tests and quick demos
    "resnet_tiny_3d": CNN3DConfig(
        name="resnet_tiny_3d", stem_channels=8, stem_kernel=3, blocks=(1, 1, 1), widths=(4, 8, 16)
    ),
    "densenet_tiny_3d": CNN3DConfig(
        name="densenet_tiny_3d",
        arch="densenet",
        stem_channels=8,
        stem_kernel=3,
        blocks=(2, 2, 2),
        widths=(),
        growth=4,
        bn_size=2,
    ),
}


def build_config(name: str, **overrides) -> CNN3DConfig:
    """A named configuration (see ``CONFIGS``) with optional field overrides."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown 3-D CNN {name!r}; choose one of {', '.join(CONFIGS)}")
    try:
        return replace(CONFIGS[name], **overrides)
    except TypeError as e:
        raise ConfigError(f"bad override for 3-D CNN {name!r}: {e}") from e


def build_model(name: str, **overrides) -> CNN3DClassifier:
    """A freshly initialised baseline by configuration name."""
    return CNN3DClassifier(build_config(name, **overrides))


def feature_extent(name: str, shape: tuple[int, int, int]) -> tuple[int, ...]:
    """(h, w, d) of the last feature map for an (H, W, D) input (computed on the meta device:
    no memory, no time). BatchNorm cannot train on one value per channel, so a batch of one
    volume fails when this is 1 x 1 x 1."""
    with torch.device("meta"):
        net = build_model(name).eval()  # train mode would refuse the very case we look for
        return tuple(net.backbone(torch.empty(1, 1, *shape)).shape[2:])


# --- checkpoints --------------------------------------------------------------------------------

FORMAT = "cohort.cnn3d/1"


def save_checkpoint(path, model: CNN3DClassifier, **meta) -> None:
    """Weights with their configuration and plain metadata (numbers, strings, lists)."""
    cfg = asdict(model.cfg)
    cfg["blocks"], cfg["widths"] = list(cfg["blocks"]), list(cfg["widths"])
    torch.save(
        {"format": FORMAT, "config": cfg, "state_dict": model.state_dict(), "meta": meta}, path
    )


def load_checkpoint(path, *, map_location: str | torch.device = "cpu"):
    """(model, meta) from a checkpoint, loaded with ``weights_only=True``.

    Raises:
        ConfigError: not a plain-weights 3-D CNN checkpoint, or weights that do not fit.
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError for pickled code, RuntimeError for garbage
        raise ConfigError(
            f"refusing checkpoint {path}: it cannot be loaded as plain weights "
            f"(weights_only=True): {str(e).splitlines()[0]}"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a cohort 3-D CNN checkpoint (no {FORMAT!r} format)")
    saved = dict(ckpt["config"])
    saved["blocks"], saved["widths"] = tuple(saved["blocks"]), tuple(saved["widths"])
    model = CNN3DClassifier(CNN3DConfig(**saved))
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise ConfigError(
            f"checkpoint {path}: weights do not fit its configuration: {str(e).splitlines()[0]}"
        ) from e
    return model, dict(ckpt.get("meta", {}))
