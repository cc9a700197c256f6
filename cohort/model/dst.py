"""The Depth-Sequence Transformer (DST): landmark slices from a whole head CT.

Read top to bottom: config, slice encoder, sequence assembly (left padding, [CLS],
positions), DepthAttentionBlock, heads, model, named configurations, checkpoints.

Idea (paper: "Depth-Sequence Transformer", 2025): keep the full depth resolution, collapse
each axial slice to one feature vector with 3-D convolutions that stride in-plane only
(stride (2, 2, 1)), and let a transformer attend over the sequence of slices. The
localization head gives one softmax over the slices per landmark (N = 6).

Two flaws of the authors' public code are fixed here:
* padding never leaks into real slices: padded depth positions are zeroed after every
  encoder layer (so each layer sees exactly the zero padding a lone volume sees) and
  before every depthwise convolution of the sequence blocks; attention masks them;
* depth is never cropped at random: a volume deeper than ``max_len`` is refused with an
  explicit error (`cohort.preprocess.model_input` decimates such volumes by a whole factor
  beforehand, keeping native slice positions, and records it).

Shapes: B batch, H x W in-plane, D slices (depth last, as in the paper), C width,
L = max_len, N landmarks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from cohort.errors import ConfigError


@dataclass(frozen=True)
class DSTConfig:
    """Everything that defines a DST; checkpoints carry it and are refused when it differs."""

    name: str = "small"
    encoder_channels: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 256)  # stem, then 1 per block
    stem_kernel: int = 5  # the paper's stem uses 7
    width: int = 256  # C: token width of the sequence model
    n_blocks: int = 4  # DepthAttentionBlocks
    n_heads: int = 4
    mlp_ratio: int = 3  # MLP hidden width = mlp_ratio * C
    max_len: int = 512  # L: longest sequence (slices) the model accepts
    n_landmarks: int = 6
    n_classes: int = 3  # classification head on [CLS] (Clean-CC-CCII: NCP, CP, Normal)
    mixer: str = "attention"  # "attention" or "conv" (ablation: attention -> 1-D convs)
    padding: str = "left"  # "left" (paper) or "right" (ablation)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.mixer not in ("attention", "conv"):
            raise ConfigError(f"mixer must be 'attention' or 'conv', got {self.mixer!r}")
        if self.padding not in ("left", "right"):
            raise ConfigError(f"padding must be 'left' or 'right', got {self.padding!r}")
        if self.width % self.n_heads:
            raise ConfigError(f"width {self.width} is not divisible by {self.n_heads} heads")
        if len(self.encoder_channels) < 2:
            raise ConfigError("encoder_channels needs the stem and at least one block")


# --- slice encoder --------------------------------------------------------------------


def _zero_padding(x: torch.Tensor, depth_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded depth positions of (B, C, H, W, D) activations."""
    if depth_mask is None:
        return x
    return x * depth_mask[:, None, None, None, :].to(x.dtype)


class EncoderBlock(nn.Module):
    """Residual block that halves the in-plane size and never the depth: stride (2, 2, 1)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, 3, stride=(2, 2, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(c_out)
        self.dw = nn.Conv3d(c_out, c_out, 3, padding=1, groups=c_out, bias=False)
        self.bn2 = nn.BatchNorm3d(c_out)
        self.shortcut = nn.Sequential(nn.Conv3d(c_in, c_out, 1, stride=(2, 2, 1), bias=False),
                                      nn.BatchNorm3d(c_out))

    def forward(self, x: torch.Tensor, depth_mask: torch.Tensor | None) -> torch.Tensor:
        h = _zero_padding(F.relu(self.bn1(self.conv(x))), depth_mask)  # (B, Co, H/2, W/2, D)
        h = self.bn2(self.dw(h))
        return _zero_padding(F.relu(h + self.shortcut(x)), depth_mask)


class SliceEncoder(nn.Module):
    """(B, 1, H, W, D) -> (B, D, C_enc): one token per axial slice."""

    def __init__(self, cfg: DSTConfig):
        super().__init__()
        ch = cfg.encoder_channels
        self.stem = nn.Sequential(
            nn.Conv3d(1, ch[0], cfg.stem_kernel, padding=cfg.stem_kernel // 2, bias=False),
            nn.BatchNorm3d(ch[0]), nn.LeakyReLU(0.1))
        self.blocks = nn.ModuleList(EncoderBlock(a, b) for a, b in zip(ch[:-1], ch[1:],
                                                                        strict=True))

    def forward(self, x: torch.Tensor, depth_mask: torch.Tensor | None) -> torch.Tensor:
        x = _zero_padding(x, depth_mask)  # whatever a loader left in the padding
        x = _zero_padding(self.stem(x), depth_mask)
        for block in self.blocks:
            x = block(x, depth_mask)
        return x.mean(dim=(2, 3)).transpose(1, 2)  # in-plane average pool -> (B, D, C_enc)


# --- sequence ---------------------------------------------------------------------------


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """(length, width) fixed sinusoidal position encodings."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    pe = torch.zeros(length, width)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: width // 2])
    return pe


class DepthAttentionBlock(nn.Module):
    """Pre-norm block: LN -> pointwise Conv1d (C -> 3C) -> depthwise Conv1d (k 3) along the
    slices -> q, v, k -> multi-head attention with the padding mask -> projection ->
    residual; then LN -> MLP (C -> 3C -> C, GELU) -> residual."""

    def __init__(self, cfg: DSTConfig):
        super().__init__()
        c = cfg.width
        self.norm1 = nn.LayerNorm(c)
        self.pointwise = nn.Conv1d(c, 3 * c, 1)
        self.depthwise = nn.Conv1d(3 * c, 3 * c, 3, padding=1, groups=3 * c)
        self.attn = nn.MultiheadAttention(c, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.proj = nn.Linear(c, c)
        self.norm2 = nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, cfg.mlp_ratio * c), nn.GELU(),
                                 nn.Dropout(cfg.dropout), nn.Linear(cfg.mlp_ratio * c, c))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # x: (B, T, C); valid: (B, T) True for [CLS] and real slices
        h = self.norm1(x) * valid[..., None].to(x.dtype)  # padding must not reach the convs
        h = self.depthwise(self.pointwise(h.transpose(1, 2))).transpose(1, 2)  # (B, T, 3C)
        q, v, k = h.chunk(3, dim=-1)
        h, _ = self.attn(q, k, v, key_padding_mask=~valid, need_weights=False)
        x = x + self.proj(h)
        return x + self.mlp(self.norm2(x))


class DepthConvBlock(nn.Module):
    """Ablation "without attention": the same block with the attention replaced by two
    1-D convolutions along the slices (receptive field grows by 4 slices per block)."""

    def __init__(self, cfg: DSTConfig):
        super().__init__()
        c = cfg.width
        self.norm1 = nn.LayerNorm(c)
        self.conv1 = nn.Conv1d(c, c, 3, padding=1)
        self.conv2 = nn.Conv1d(c, c, 3, padding=1)
        self.norm2 = nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, cfg.mlp_ratio * c), nn.GELU(),
                                 nn.Linear(cfg.mlp_ratio * c, c))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        m = valid[..., None].to(x.dtype)
        h = (self.norm1(x) * m).transpose(1, 2)  # (B, C, T)
        h = self.conv2(F.gelu(self.conv1(h)) * m.transpose(1, 2))
        x = x + h.transpose(1, 2)
        return x + self.mlp(self.norm2(x))


# --- the model --------------------------------------------------------------------------


@dataclass
class DSTOutput:
    landmark_logits: torch.Tensor  # (B, N, D): -inf at padded slices
    class_logits: torch.Tensor  # (B, n_classes)
    valid: torch.Tensor  # (B, D) True at real slices
    depths: torch.Tensor  # (B,) real slices per volume

    def landmark_probabilities(self) -> list[torch.Tensor]:
        """Per volume, (N, D_b) probabilities over its own slices (padding removed)."""
        probs = self.landmark_logits.float().softmax(dim=-1)
        return [probs[b][:, self.valid[b]] for b in range(probs.shape[0])]


class DepthSequenceTransformer(nn.Module):
    def __init__(self, cfg: DSTConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = SliceEncoder(cfg)
        c_enc = cfg.encoder_channels[-1]
        self.embed = nn.Identity() if c_enc == cfg.width else nn.Linear(c_enc, cfg.width)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.norm_in = nn.LayerNorm(cfg.width)
        self.register_buffer("positions", sinusoidal_positions(cfg.max_len + 1, cfg.width),
                             persistent=False)
        block = DepthAttentionBlock if cfg.mixer == "attention" else DepthConvBlock
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.n_blocks))
        self.norm_out = nn.LayerNorm(cfg.width)
        self.landmark_head = nn.Linear(cfg.width, cfg.n_landmarks)
        self.class_head = nn.Linear(cfg.width, cfg.n_classes)
        nn.init.trunc_normal_(self.cls, std=0.02)

    def depth_mask(self, depths: torch.Tensor, length: int) -> torch.Tensor:
        """(B, length) True at real slices, placed by the padding side."""
        idx = torch.arange(length, device=depths.device)[None, :]
        if self.cfg.padding == "left":
            return idx >= (length - depths)[:, None]
        return idx < depths[:, None]

    def forward(self, x: torch.Tensor, depths: torch.Tensor | None = None) -> DSTOutput:
        """x: (B, 1, H, W, D) volumes padded on the configured side to a common D; depths:
        (B,) real slices of each (None: all D).

        The sequence is defined over all ``max_len`` positions (a real slice's position is
        fixed relative to the padded end), but only the positions some volume of the batch
        uses are computed, plus the one padding position that separates [CLS] from the
        slices: padded positions are masked and zeroed, so this gives exactly the full
        computation, at a cost that grows with the batch's depth, not with ``max_len``.
        """
        b, _, _, _, d = x.shape
        cfg = self.cfg
        if d > cfg.max_len:
            raise ValueError(f"{d} slices exceed this model's max_len of {cfg.max_len}; "
                             "prepare the input with cohort.preprocess.model_input, which "
                             "decimates deeper volumes by a whole factor")
        if depths is None:
            depths = torch.full((b,), d, device=x.device, dtype=torch.long)
        dmask = self.depth_mask(depths, d)  # (B, D)
        # nothing to zero when no volume of the batch is padded
        tokens = self.embed(self.encoder(x, None if bool(dmask.all()) else dmask))
        if cfg.padding == "left":  # [CLS] (gap) t_0 .. t_D-1 at the end of max_len
            keep = min(cfg.max_len, d + 1)
            pos = torch.arange(cfg.max_len + 1 - keep, cfg.max_len + 1, device=x.device)
            seq = torch.cat([tokens.new_zeros(b, keep - d, cfg.width), tokens], dim=1)
            valid = torch.cat([dmask.new_zeros(b, keep - d), dmask], dim=1)  # (B, T)
        else:  # [CLS] t_0 .. t_D-1 (padding after)
            pos = torch.arange(1, d + 1, device=x.device)
            seq, valid = tokens, dmask
        pos = torch.cat([pos.new_zeros(1), pos])  # [CLS] sits at position 0
        seq = torch.cat([self.cls.expand(b, -1, -1), seq], dim=1)  # (B, 1 + T, C)
        valid_all = torch.cat([valid.new_ones(b, 1), valid], dim=1)
        h = self.norm_in(seq) + self.positions[pos][None].to(seq.dtype)
        h = h * valid_all[..., None].to(h.dtype)
        for block in self.blocks:
            h = block(h, valid_all)
        h = self.norm_out(h)
        logits = self.landmark_head(h[:, -d:] if cfg.padding == "left" else h[:, 1:1 + d])
        logits = logits.transpose(1, 2).float()  # (B, N, D)
        logits = logits.masked_fill(~dmask[:, None, :], float("-inf"))
        return DSTOutput(logits, self.class_head(h[:, 0]).float(), dmask, depths)


# --- named configurations ---------------------------------------------------------------

CONFIGS: dict[str, DSTConfig] = {
    # the published size: ~137 M parameters, ~36.4 G multiply-accumulates at 128x128x64
    "paper": DSTConfig(name="paper", encoder_channels=(16, 32, 64, 128, 256, 512, 1024),
                       stem_kernel=7, width=1024, n_blocks=8, n_heads=4),
    # production default: ~1/5 of the paper's compute at the same input
    "small": DSTConfig(name="small"),
    # tiny: for tests and quick demos
    "tiny": DSTConfig(name="tiny", encoder_channels=(4, 8, 16, 32, 32), stem_kernel=3,
                      width=32, n_blocks=2, n_heads=2, max_len=256),
}
ABLATIONS: dict[str, dict] = {
    "no_attention": {"mixer": "conv"},
    "right_padding": {"padding": "right"},
    "blocks_0": {"n_blocks": 0},
    "blocks_1": {"n_blocks": 1},
    "blocks_8": {"n_blocks": 8},
}


def build_config(name: str, **overrides) -> DSTConfig:
    """A named configuration (``paper``, ``small``, ``tiny``), optionally with an ablation
    (``small+no_attention``, ``paper+blocks_1``) and field overrides."""
    base, _, ablation = name.partition("+")
    if base not in CONFIGS:
        raise ConfigError(f"unknown DST configuration {base!r}; choose one of "
                          f"{', '.join(CONFIGS)} (optionally +{'/+'.join(ABLATIONS)})")
    cfg = CONFIGS[base]
    if ablation:
        if ablation not in ABLATIONS:
            raise ConfigError(f"unknown ablation {ablation!r}; choose one of "
                              f"{', '.join(ABLATIONS)}")
        cfg = replace(cfg, name=name, **ABLATIONS[ablation])
    try:
        return replace(cfg, **overrides)
    except TypeError as e:
        raise ConfigError(f"bad override for DST configuration {name!r}: {e}") from e


def build_model(name: str = "small", **overrides) -> DepthSequenceTransformer:
    """A freshly initialised DST by configuration name (see `build_config`)."""
    return DepthSequenceTransformer(build_config(name, **overrides))


# --- checkpoints ------------------------------------------------------------------------


def save_checkpoint(path, model: DepthSequenceTransformer, **meta) -> None:
    """Weights with their configuration and plain metadata (numbers, strings, lists)."""
    cfg = asdict(model.cfg)
    cfg["encoder_channels"] = list(cfg["encoder_channels"])
    torch.save({"format": "cohort.dst/1", "config": cfg, "state_dict": model.state_dict(),
                "meta": meta}, path)


def load_checkpoint(path, *, expect: DSTConfig | str | None = None,
                    map_location: str | torch.device = "cpu"):
    """(model, meta) from a checkpoint, loaded with ``weights_only=True`` (no pickled code).

    Args:
        expect: a configuration (or its name) the checkpoint must match; None accepts the
            checkpoint's own.

    Raises:
        ConfigError: the file holds pickled objects, is not a DST checkpoint, or its
            configuration or weights do not match ``expect``.
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        # PyTorch's text advises loading with weights_only=False, i.e. running whatever code
        # the file carries: it is never quoted nor chained; we say what the file is instead.
        import io
        import os
        import re

        head = b""
        if isinstance(path, io.BytesIO):
            head = path.getvalue()[:8]
        elif isinstance(path, (str, os.PathLike)) and os.path.isfile(path):
            with open(path, "rb") as f:
                head = f.read(8)
        named = re.search(r"GLOBAL ([\w.]+)", str(e))
        if isinstance(e, OSError):
            what = f"it cannot be opened ({type(e).__name__}: {e.strerror or e})"
        elif named:
            what = f"it is a pickle that names Python code or classes ({named.group(1)})"
        elif head[:1] == b"\x80":
            what = "it is a pickle of Python objects, not of tensors and plain values"
        elif head[:4] == b"PK\x03\x04":
            what = ("it is a zip archive that PyTorch cannot read as a checkpoint (damaged, "
                    "truncated, or not written by torch.save)")
        elif not head:
            what = "it is empty, not a PyTorch checkpoint"
        else:
            what = (f"it is not a PyTorch checkpoint at all: it begins with {head!r}, "
                    "neither a zip archive nor a pickle")
        raise ConfigError(f"refusing checkpoint {path}: {what}. Pickled code is never loaded: "
                          "cohort reads checkpoints with torch.load(weights_only=True) only"
                          ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "cohort.dst/1":
        if isinstance(ckpt, dict) and "format" in ckpt:
            found = f"a {ckpt['format']!r} checkpoint"
        elif isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor)
                                                     for v in ckpt.values()):
            found = "bare weights (a state_dict) without cohort's metadata"
        else:
            found = f"a {type(ckpt).__name__} without cohort's metadata"
        raise ConfigError(f"{path} is not a cohort DST checkpoint: it holds {found}; a DST "
                          "checkpoint is a dict with format 'cohort.dst/1', the model's "
                          "config and its state_dict, as cohort.model.dst.save_checkpoint "
                          "writes it")
    try:
        saved = dict(ckpt["config"])
        saved["encoder_channels"] = tuple(saved["encoder_channels"])
        cfg = DSTConfig(**saved)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"checkpoint {path} has a model configuration this version of "
                          f"cohort cannot build ({type(e).__name__}: {e}); DSTConfig takes "
                          f"{', '.join(DSTConfig.__dataclass_fields__)}") from None
    if expect is not None:
        want = build_config(expect) if isinstance(expect, str) else expect
        diff = {k: (getattr(cfg, k), getattr(want, k)) for k in asdict(want)
                if k != "name" and getattr(cfg, k) != getattr(want, k)}
        if diff:
            raise ConfigError(f"checkpoint {path} was trained as {cfg.name!r}, which differs "
                              f"from the requested {want.name!r} in " + ", ".join(
                                  f"{k}={a!r} (want {b!r})" for k, (a, b) in diff.items()))
    model = DepthSequenceTransformer(cfg)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise ConfigError(f"checkpoint {path}: weights do not fit its configuration: "
                          f"{str(e).splitlines()[0]}") from e
    return model, dict(ckpt.get("meta", {}))
