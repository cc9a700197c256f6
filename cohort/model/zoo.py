"""Every classification network by one name, for training loops and benchmarks that compare
them: the DST with its [CLS] head and the 3-D CNN baselines.

Names:

* ``dst`` (the paper's size), ``dst-small``, ``dst-tiny``, ``dst-paper``, optionally with a
  DST ablation: ``dst+blocks_0``, ``dst-small+blocks_1`` (any ``blocks_<n>``),
  ``dst-tiny+no_attention``;
* the baselines of `cohort.model.cnn3d`: ``resnet50_3d``, ``densenet121_3d``,
  ``resnet_tiny_3d``, ``densenet_tiny_3d``.

All take (B, 1, H, W, D) and depths (B,), and `class_logits` turns what they return into
(B, classes) logits. Checkpoints carry their configuration; `load_checkpoint` reads either
kind.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

import torch
from torch import nn

from cohort.errors import ConfigError
from cohort.model import cnn3d, dst, segmenter, unet3d

DST_SIZES = {"dst": "paper", "dst-paper": "paper", "dst-small": "small", "dst-tiny": "tiny"}
_BLOCKS = re.compile(r"^blocks_(\d+)$")


def names() -> list[str]:
    """The base names (without ablations)."""
    return [*DST_SIZES, *cnn3d.CONFIGS]


def is_dst(name: str) -> bool:
    return name.partition("+")[0] in DST_SIZES


def dst_config(name: str, **overrides) -> dst.DSTConfig:
    """The DST configuration of a ``dst...`` name (its ``name`` field is the zoo name)."""
    base, _, ablation = name.partition("+")
    size = DST_SIZES[base]
    blocks = _BLOCKS.match(ablation)
    if blocks:
        return replace(
            dst.build_config(size, n_blocks=int(blocks.group(1)), **overrides), name=name
        )
    cfg = dst.build_config(f"{size}+{ablation}" if ablation else size, **overrides)
    return replace(cfg, name=name)


def check_name(name: str) -> None:
    """Raise a ConfigError naming the choices unless ``name`` builds a network."""
    base, _, ablation = name.partition("+")
    if base in DST_SIZES:
        dst_config(name)
    elif base in cnn3d.CONFIGS:
        if ablation:
            raise ConfigError(f"{name!r}: ablations (+...) exist for the DST only")
    else:
        raise ConfigError(
            f"unknown model {name!r}; choose from {', '.join(names())} (DST "
            "names take an ablation such as +blocks_0)"
        )


def build_network(name: str, *, max_len: int = 512, n_classes: int = 3) -> nn.Module:
    """A freshly initialised network by zoo name (``max_len`` matters to the DST only)."""
    check_name(name)
    if is_dst(name):
        return dst.DepthSequenceTransformer(dst_config(name, max_len=max_len, n_classes=n_classes))
    return cnn3d.build_model(name, n_classes=n_classes)


def class_logits(output) -> torch.Tensor:
    """(B, classes) logits from what any zoo network returns."""
    return output.class_logits if isinstance(output, dst.DSTOutput) else output


def padding_of(net: nn.Module) -> str:
    """Which side a batch of unequal depths is padded on for ``net`` (the DST's own choice;
    the CNNs do not care)."""
    net = getattr(net, "module", net)  # DDP wraps
    cfg = getattr(net, "cfg", None)
    return getattr(cfg, "padding", "left")


def save_checkpoint(path, net: nn.Module, **meta) -> None:
    """The network's own checkpoint format (``cohort.dst/1`` or ``cohort.cnn3d/1``)."""
    if isinstance(net, dst.DepthSequenceTransformer):
        dst.save_checkpoint(path, net, **meta)
    elif isinstance(net, cnn3d.CNN3DClassifier):
        cnn3d.save_checkpoint(path, net, **meta)
    else:
        raise TypeError(f"no checkpoint format for {type(net).__name__}")


def load_checkpoint(path, *, map_location: str | torch.device = "cpu"):
    """(network, meta) from a DST, 3-D CNN or calcium segmenter checkpoint
    (``weights_only=True`` in every case).

    Raises:
        ConfigError: the file is neither kind, or its weights do not fit.
    """
    try:  # a file is memory-mapped: its weights are not read twice
        mmap = isinstance(path, str | os.PathLike)
        fmt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap).get("format")
    except Exception:  # the format-specific loader below explains the failure
        fmt = None
    if hasattr(path, "seek"):
        path.seek(0)
    if fmt in cnn3d.FORMATS:
        return cnn3d.load_checkpoint(path, map_location=map_location)
    if fmt in (segmenter.FORMAT, unet3d.FORMAT):  # the calcium segmenters
        module = segmenter if fmt == segmenter.FORMAT else unet3d
        return module.load_checkpoint(path, map_location=map_location)
    return dst.load_checkpoint(path, map_location=map_location)
