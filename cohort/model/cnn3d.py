"""3-D CNN baselines of the paper's Table III: ResNet-50-3D and DenseNet-121-3D (and tiny
versions of both for tests), MONAI's networks behind our config, classifier and checkpoints.

Read top to bottom: config, the MONAI backbone it builds, our classifier, named
configurations, checkpoints.

The backbones are ``monai.networks.nets.ResNet`` (bottleneck blocks, projection shortcuts
"B" without bias, as ``resnet50``) and ``monai.networks.nets.DenseNet`` (as
``DenseNet121``), with one input channel: a 7 x 7 x 7 stem conv, a 3 x 3 x 3 max-pool with
stride 2, then stages that halve every axis. The stem strides 2 in-plane; along depth it
strides 1 in the ResNet (``conv1_t_stride=(2, 2, 1)``, as Hara et al.'s video ResNets) and 2
in the DenseNet (MONAI's DenseNet stem, fixed). That choice is the one that reproduces the
paper's compute: ResNet-50-3D costs 40.5 G multiply-accumulates at 128 x 128 x 64 (the
paper: 40.89 G), DenseNet-121-3D 21.5 G (the paper: 21.45 G); with the other stride either
would be 2x off. Our classifier takes MONAI's globally pooled features (its own last linear
layer removed) through dropout and a linear head.

Shapes: B batch, H x W in-plane, D slices (depth last, as for the DST), C channels. A batch
of volumes of unequal depth arrives zero-padded to a common D; these networks see the
padding (global average pooling over it), which is why the benchmark resizes every volume
to one depth for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from cohort.errors import ConfigError


@dataclass(frozen=True)
class CNN3DConfig:
    """Everything that defines a baseline; checkpoints carry it. MONAI's argument for each
    field is in its comment."""

    name: str = "resnet50_3d"
    arch: str = "resnet"  # "resnet" (monai ResNet, bottleneck blocks) or "densenet"
    stem_channels: int = 64  # resnet: = widths[0]; densenet: init_features
    stem_kernel: int = 7  # resnet: conv1_t_size; densenet: 7 (MONAI's, fixed)
    stem_depth_stride: int = 1  # resnet: conv1_t_stride = (2, 2, this); densenet: 2 (fixed)
    blocks: tuple[int, ...] = (3, 4, 6, 3)  # resnet: layers (4 stages); densenet: block_config
    widths: tuple[int, ...] = (64, 128, 256, 512)  # resnet: block_inplanes (output x4)
    growth: int = 32  # densenet: growth_rate
    bn_size: int = 4  # densenet: bn_size (bottleneck width = bn_size * growth)
    n_classes: int = 3  # Clean-CC-CCII: NCP, CP, Normal
    dropout: float = 0.0  # before our linear head
    max_pool: bool = True  # resnet: not no_max_pool (the tiny one skips it); densenet: True

    def __post_init__(self) -> None:
        if self.arch not in ("resnet", "densenet"):
            raise ConfigError(f"arch must be 'resnet' or 'densenet', got {self.arch!r}")
        if not self.blocks or min(self.blocks) < 1:
            raise ConfigError(f"every stage needs at least one block, got {self.blocks}")
        if self.arch == "resnet" and (len(self.blocks) != 4 or len(self.widths) != 4
                                      or self.stem_channels != self.widths[0]):
            raise ConfigError(
                f"{self.name}: MONAI's ResNet has 4 stages and a stem as wide as the first; "
                f"got blocks {self.blocks}, widths {self.widths}, stem {self.stem_channels} "
                "channels"
            )
        if self.arch == "densenet" and (self.stem_kernel, self.stem_depth_stride,
                                        self.max_pool) != (7, 2, True):
            raise ConfigError(
                f"{self.name}: MONAI's DenseNet stem is a 7 x 7 x 7 conv with stride 2 and a "
                f"max-pool; got kernel {self.stem_kernel}, depth stride "
                f"{self.stem_depth_stride}, max_pool {self.max_pool}"
            )


def _monai_nets():
    with torch.device("cpu"):  # MONAI's import-time tensors never land on a meta device
        from monai.networks import nets
    return nets


def _backbone(cfg: CNN3DConfig) -> tuple[nn.Module, int]:
    """MONAI's network without its last linear layer, (B, 1, H, W, D) -> (B, C) globally
    average-pooled features, and C."""
    nets = _monai_nets()
    if cfg.arch == "resnet":
        net = nets.ResNet(
            block="bottleneck",
            layers=list(cfg.blocks),
            block_inplanes=list(cfg.widths),
            spatial_dims=3,
            n_input_channels=1,
            conv1_t_size=cfg.stem_kernel,
            conv1_t_stride=(2, 2, cfg.stem_depth_stride),
            no_max_pool=not cfg.max_pool,
            shortcut_type="B",
            bias_downsample=False,
            feed_forward=False,
        )
        return net, cfg.widths[-1] * nets.ResNetBottleneck.expansion
    net = nets.DenseNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=cfg.n_classes,
        init_features=cfg.stem_channels,
        growth_rate=cfg.growth,
        block_config=cfg.blocks,
        bn_size=cfg.bn_size,
    )
    channels = net.class_layers.out.in_features
    net.class_layers.out = nn.Identity()  # our head follows
    return net, channels


class CNN3DClassifier(nn.Module):
    """(B, 1, H, W, D) -> (B, n_classes) logits: MONAI backbone (global average pool
    included), dropout, linear."""

    def __init__(self, cfg: CNN3DConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone, self.out_channels = _backbone(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(self.out_channels, cfg.n_classes)

    def forward(self, x: torch.Tensor, depths: torch.Tensor | None = None) -> torch.Tensor:
        """``depths`` is accepted for a common call with the DST and ignored (see module)."""
        h = self.backbone(x)  # (B, C)
        return self.head(self.dropout(h)).float()


# --- named configurations ---------------------------------------------------------------------

CONFIGS: dict[str, CNN3DConfig] = {
    # the paper's baselines (Table III): MONAI's resnet50 and DenseNet121, one input channel
    "resnet50_3d": CNN3DConfig(),
    "densenet121_3d": CNN3DConfig(
        name="densenet121_3d",
        arch="densenet",
        stem_depth_stride=2,
        blocks=(6, 12, 24, 16),
        widths=(),
    ),
    # tiny: for tests and quick demos. A 32 x 32 x 16 input ends at 2 x 2 x 2 (ResNet) and
    # 4 x 4 x 2 (DenseNet), and 12 slices still train: the ResNet skips the max-pool to
    # afford MONAI's 4 stages, the DenseNet has 2 blocks to afford its depth stride 2
    "resnet_tiny_3d": CNN3DConfig(
        name="resnet_tiny_3d",
        stem_channels=4,
        stem_kernel=3,
        blocks=(1, 1, 1, 1),
        widths=(4, 4, 8, 16),
        max_pool=False,
    ),
    "densenet_tiny_3d": CNN3DConfig(
        name="densenet_tiny_3d",
        arch="densenet",
        stem_channels=8,
        stem_depth_stride=2,
        blocks=(2, 2),
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
    _monai_nets()  # imported on the CPU first (see there)
    with torch.device("meta"):
        net = build_model(name).eval()  # train mode would refuse the very case we look for
        pool = next(m for m in net.backbone.modules() if isinstance(m, nn.AdaptiveAvgPool3d))
        seen = []
        pool.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[2:]))
        net.backbone(torch.empty(1, 1, *shape))
        return tuple(seen[0])


# --- checkpoints --------------------------------------------------------------------------------

FORMAT = "cohort.cnn3d/2"
#: before MONAI: our own modules, the same tensors in the same order under other names
FORMAT_OWN_MODULES = "cohort.cnn3d/1"
FORMATS = (FORMAT, FORMAT_OWN_MODULES)


def save_checkpoint(path, model: CNN3DClassifier, **meta) -> None:
    """Weights with their configuration and plain metadata (numbers, strings, lists)."""
    cfg = asdict(model.cfg)
    cfg["blocks"], cfg["widths"] = list(cfg["blocks"]), list(cfg["widths"])
    torch.save(
        {"format": FORMAT, "config": cfg, "state_dict": model.state_dict(), "meta": meta}, path
    )


def load_checkpoint(path, *, map_location: str | torch.device = "cpu"):
    """(model, meta) from a checkpoint, loaded with ``weights_only=True``; checkpoints
    written before the networks were MONAI's (``cohort.cnn3d/1``) load too, where MONAI
    builds their configuration (the paper's two do; the old tiny ones do not).

    Raises:
        ConfigError: not a plain-weights 3-D CNN checkpoint, or weights that do not fit.
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError for pickled code, RuntimeError for garbage
        # PyTorch's message suggests loading the file unsafely: never quoted nor chained
        why = f": {e.strerror or e}" if isinstance(e, OSError) else ""
        raise ConfigError(
            f"refusing checkpoint {path}: it cannot be loaded as plain weights "
            f"({type(e).__name__}{why}); cohort reads checkpoints with "
            "torch.load(weights_only=True) only and never runs pickled code"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") not in FORMATS:
        raise ConfigError(
            f"{path} is not a cohort 3-D CNN checkpoint (no {FORMAT!r} format), as "
            "cohort.model.cnn3d.save_checkpoint writes them"
        )
    try:
        saved = dict(ckpt["config"])
        saved["blocks"], saved["widths"] = tuple(saved["blocks"]), tuple(saved["widths"])
        model = CNN3DClassifier(CNN3DConfig(**saved))
    except ConfigError as e:
        raise ConfigError(f"checkpoint {path} ({ckpt['format']}): {e}; retrain it") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(
            f"checkpoint {path} has a configuration this version of cohort cannot build "
            f"({type(e).__name__}: {e})"
        ) from None
    state = ckpt["state_dict"]
    if ckpt["format"] == FORMAT_OWN_MODULES:
        state = _renamed(state, model.state_dict(), path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ConfigError(
            f"checkpoint {path}: weights do not fit its configuration: {str(e).splitlines()[0]}"
        ) from e
    return model, dict(ckpt.get("meta", {}))


def _renamed(old: dict, new: dict, path) -> dict:
    """A ``cohort.cnn3d/1`` state dict under MONAI's names: our modules registered the same
    tensors in the same order (stem, blocks, shortcuts; BN statistics included), so they
    pair up one to one; any difference in count or shape is refused."""
    pairs = list(zip(old.items(), new.items(), strict=False))
    if len(old) != len(new) or any(a.shape != b.shape for (_, a), (_, b) in pairs):
        raise ConfigError(
            f"checkpoint {path}: its {len(old)} tensors (cohort.cnn3d/1) do not pair up with "
            f"the {len(new)} of MONAI's network for its configuration"
        )
    return {name: tensor for (_, tensor), (name, _) in pairs}
