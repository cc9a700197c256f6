"""The calcium segmenter of the second paper: a 3-D vision transformer over small patches,
pre-trained as a masked autoencoder (MAE) and fine-tuned to segment intracranial carotid
calcium.

Read top to bottom: config, encoder, MAE head (pre-training), segmentation decoder, the
segmenter, named configurations, checkpoints.

The paper's findings are the design: small patches are crucial (the default patch is 8 x 8
pixels in-plane by 2 slices, ~3.5 mm at 0.45 mm pixels); the decoder upsamples by
interpolation followed by ordinary convolutions (``decoder="interp"``), with transposed
convolutions as the ablation (``decoder="transposed"``); the last convolutions see the CT
itself at full resolution beside the upsampled tokens, so mask edges follow the image, as
the 130 HU annotation rule does, while the transformer says which bright voxels are artery
wall and which are bone.

The network sees a fixed window (``window``, H x W x D voxels at the scan's native
resolution); a crop around the arteries (`cohort.preprocess.arterial_crop`) is segmented
window by window (MONAI's ``sliding_window_inference``, `crop_logits`). Encoder building
blocks are MONAI's (``PatchEmbeddingBlock`` with fixed sin-cos positions, and
``TransformerBlock``); the MAE masking and the decoders are ours, because MONAI's
``MaskedAutoEncoderViT`` owns its encoder and could not share weights with a segmentation
network.

Shapes: B batch, C channels, H x W in-plane, D slices (depth last, as everywhere in
cohort), N tokens, E token width. Inputs are CT numbers scaled by `scale_hu`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from monai.networks.blocks import PatchEmbeddingBlock, TransformerBlock
from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding
from torch import nn
from torch.nn import functional as F

from cohort.anatomy import CALCIUM_HU
from cohort.errors import ConfigError

#: the network input: CT numbers mapped piecewise-linearly through (HU, input) knots,
#: clamped at both ends. Most of the range goes to [-100, 700] HU: calcium starts at 130 HU
#: (0.23), soft tissue reads ~45 (0.15), so the partial-volume voxels around the 130 HU rule
#: keep the contrast of a narrow window (with it, the prior bias below and a higher learning
#: rate, training went several times faster than in a plain [-200, 1800] one). The top fifth
#: goes to 700-1800 HU, so dense plaque (260-1500 HU) stays distinct from the cortical bone
#: it touches in the carotid canal (1300-1800 HU): in a [-100, 700] window (`WINDOW_HU_KNOTS`,
#: the first segmenters' input, the ablation ``+windowhu``) both saturate, and on an unseen
#: synthetic cohort 28% of the calcium voxels and 59% of the bright voxels next to them read
#: > 700 HU. With this map the shipped segmenter gained on both test sets (docs/segmenter.md)
HU_KNOTS: tuple[tuple[float, float], ...] = ((-100.0, 0.0), (700.0, 0.8), (1800.0, 1.0))
WINDOW_HU_KNOTS: tuple[tuple[float, float], ...] = ((-100.0, 0.0), (700.0, 1.0))
#: the input map of checkpoints saved before the knots were part of their configuration
LEGACY_HU_KNOTS = WINDOW_HU_KNOTS
#: the output bias at initialisation: logit of a 1% prior, so that the loss does not start
#: by unlearning calcium everywhere (calcium is well under 1% of a crop)
PRIOR_LOGIT = -4.6
#: the annotation rule's floor: calcium was annotated by keeping voxels >= 130 HU inside a
#: circle drawn around it (method.md section 2). The network is asked only which of those
#: candidate voxels are calcium (``gate_hu``): below it the logit is ``GATED_LOGIT``
#: (probability ~0 at any temperature), so mask edges are the image's own, as an
#: annotator's are, and all of the network's capacity goes to telling plaque from bone
GATED_LOGIT = -40.0

DECODERS = ("interp", "transposed")


def scale_hu(hu: np.ndarray | torch.Tensor,
             knots: tuple[tuple[float, float], ...] = HU_KNOTS):
    """CT numbers -> network input (piecewise linear through ``knots``, clamped)."""
    torch_in = isinstance(hu, torch.Tensor)
    clip = torch.clamp if torch_in else np.clip
    x = hu if torch_in else np.asarray(hu, dtype=np.float32)
    out = x * 0 + knots[0][1]
    for (h0, y0), (h1, y1) in zip(knots, knots[1:], strict=False):
        out = out + (clip(x, h0, h1) - h0) * ((y1 - y0) / (h1 - h0))
    return out if torch_in else out.astype(np.float32)


def check_knots(knots) -> None:
    hus = [h for h, _ in knots]
    ys = [y for _, y in knots]
    if len(knots) < 2 or any(b <= a for a, b in zip(hus, hus[1:], strict=False)) \
            or any(b < a for a, b in zip(ys, ys[1:], strict=False)):
        raise ConfigError(f"hu_knots must be two or more (HU, input) pairs, HU increasing and "
                          f"input not decreasing; got {knots}")


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything that defines a segmenter; checkpoints carry it."""

    name: str = "default"
    window: tuple[int, int, int] = (64, 64, 16)  # H, W, D voxels the network sees at once
    patch: tuple[int, int, int] = (8, 8, 2)  # H, W, D of one token
    width: int = 96  # E
    depth: int = 4  # transformer blocks of the encoder
    heads: int = 4
    mlp_ratio: int = 3
    decoder: str = "interp"  # "interp" (the paper's finding) or "transposed" (ablation)
    decoder_channels: tuple[int, ...] = (32, 16, 8)  # per upsampling stage, coarse to fine
    mae_width: int = 48  # the MAE decoder (pre-training only); widths divide by 6 (3-D sin-cos)
    mae_depth: int = 2
    mask_ratio: float = 0.75  # fraction of tokens hidden in pre-training
    #: candidate voxels only (`gate`): the logit is GATED_LOGIT below this CT number;
    #: None: every voxel is the network's (the ablation)
    gate_hu: float | None = CALCIUM_HU
    #: the input map (`scale_hu`)
    hu_knots: tuple[tuple[float, float], ...] = HU_KNOTS

    def __post_init__(self) -> None:
        check_knots(self.hu_knots)
        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder must be one of {', '.join(DECODERS)}, got "
                              f"{self.decoder!r}")
        if any(w % p for w, p in zip(self.window, self.patch, strict=True)):
            raise ConfigError(f"window {self.window} is not a whole number of patches "
                              f"{self.patch}")
        if self.width % 6 or self.mae_width % 6:
            raise ConfigError(f"token widths must divide by 6 (3-D sin-cos positions), got "
                              f"{self.width} and {self.mae_width}")
        if self.width % self.heads:
            raise ConfigError(f"width {self.width} is not divisible by {self.heads} heads")
        if not 0 < self.mask_ratio < 1:
            raise ConfigError(f"mask ratio must lie in (0, 1), got {self.mask_ratio}")
        if len(upsampling_stages(self.patch)) > len(self.decoder_channels):
            raise ConfigError(f"patch {self.patch} needs {len(upsampling_stages(self.patch))} "
                              f"upsampling stages; decoder_channels has "
                              f"{len(self.decoder_channels)}")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Tokens along H, W, D."""
        return tuple(w // p for w, p in zip(self.window, self.patch, strict=True))

    @property
    def tokens(self) -> int:
        return math.prod(self.grid)


def upsampling_stages(patch: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Per stage, the factor along each axis (2 or 1) that brings tokens back to voxels:
    (8, 8, 2) -> [(2, 2, 2), (2, 2, 1), (2, 2, 1)]."""
    stages = []
    left = list(patch)
    while any(f > 1 for f in left):
        step = tuple(2 if f > 1 else 1 for f in left)
        stages.append(step)
        left = [f // s for f, s in zip(left, step, strict=True)]
    return stages


# --- encoder --------------------------------------------------------------------------


class Encoder(nn.Module):
    """Patches -> tokens (fixed sin-cos positions) -> transformer blocks. ``keep`` (B, n)
    token indices encode only those tokens (MAE pre-training)."""

    def __init__(self, cfg: SegmenterConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = PatchEmbeddingBlock(in_channels=1, img_size=cfg.window,
                                         patch_size=cfg.patch, hidden_size=cfg.width,
                                         num_heads=cfg.heads, proj_type="conv",
                                         pos_embed_type="sincos", spatial_dims=3)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.width, cfg.mlp_ratio * cfg.width, cfg.heads, qkv_bias=True,
                             use_flash_attention=True)
            for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, H, W, D) -> (B, N, E), or (B, n, E) for the kept tokens."""
        h = self.embed(x)  # patch embedding plus positions
        if keep is not None:
            h = torch.gather(h, 1, keep[..., None].expand(-1, -1, h.shape[-1]))
        for block in self.blocks:
            h = block(h)
        return self.norm(h)


# --- MAE head (pre-training) -----------------------------------------------------------


def gate(logits: torch.Tensor, x: torch.Tensor, gate_hu: float | None,
         knots: tuple[tuple[float, float], ...] = HU_KNOTS) -> torch.Tensor:
    """Logits of the candidate voxels (CT ``x`` scaled through ``knots``, at or above
    ``gate_hu``), and `GATED_LOGIT` elsewhere; no gradient flows to the gated voxels."""
    if gate_hu is None:
        return logits
    floor = float(scale_hu(np.array([gate_hu], dtype=np.float32), knots)[0])
    return torch.where(x >= floor, logits, torch.full_like(logits, GATED_LOGIT))


def is_gated(logits: np.ndarray) -> np.ndarray:
    """Voxels `gate` ruled out (blending of overlapping windows keeps them near
    GATED_LOGIT); calibration leaves them out: they are the rule's, not the network's."""
    return np.asarray(logits) <= GATED_LOGIT / 2


def patchify(x: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, 1, H, W, D) -> (B, N, ph*pw*pd) in the token order of the patch embedding
    (a strided convolution flattened: H-major, then W, then D)."""
    b = x.shape[0]
    ph, pw, pd = patch
    gh, gw, gd = (s // p for s, p in zip(x.shape[2:], patch, strict=True))
    t = x.reshape(b, gh, ph, gw, pw, gd, pd).permute(0, 1, 3, 5, 2, 4, 6)
    return t.reshape(b, gh * gw * gd, ph * pw * pd)


class MAEHead(nn.Module):
    """Masked-autoencoder decoder: visible tokens plus mask tokens at their positions ->
    a small transformer -> the voxels of every patch."""

    def __init__(self, cfg: SegmenterConfig):
        super().__init__()
        self.cfg = cfg
        self.project = nn.Linear(cfg.width, cfg.mae_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.mae_width))
        nn.init.normal_(self.mask_token, std=0.02)
        pos = build_sincos_position_embedding(cfg.grid, cfg.mae_width, spatial_dims=3)
        self.register_buffer("positions", pos.detach().clone(), persistent=False)
        heads = max(1, cfg.mae_width // 32)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.mae_width, 2 * cfg.mae_width, heads, qkv_bias=True,
                             use_flash_attention=True)
            for _ in range(cfg.mae_depth))
        self.norm = nn.LayerNorm(cfg.mae_width)
        self.out = nn.Linear(cfg.mae_width, math.prod(cfg.patch))

    def forward(self, visible: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(B, n, E) visible tokens at indices ``keep`` -> (B, N, patch voxels)."""
        b, n_tokens = visible.shape[0], self.cfg.tokens
        h = self.mask_token.expand(b, n_tokens, -1).clone()
        h.scatter_(1, keep[..., None].expand(-1, -1, h.shape[-1]), self.project(visible))
        h = h + self.positions
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm(h))


def random_keep(b: int, cfg: SegmenterConfig, generator: torch.Generator | None = None,
                device=None) -> torch.Tensor:
    """(B, n) indices of the tokens left visible: a random ``1 - mask_ratio`` of them."""
    n_keep = max(1, round(cfg.tokens * (1 - cfg.mask_ratio)))
    noise = torch.rand(b, cfg.tokens, generator=generator)
    return noise.argsort(dim=1)[:, :n_keep].sort(dim=1).values.to(device)


def mae_loss(pred: torch.Tensor, x: torch.Tensor, keep: torch.Tensor,
             patch: tuple[int, int, int]) -> torch.Tensor:
    """Mean squared error on the hidden patches only, each patch normalised to zero mean and
    unit variance (the MAE paper's target)."""
    target = patchify(x, patch)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    target = (target - mean) / (var + 1e-6).sqrt()
    hidden = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
    hidden.scatter_(1, keep, False)
    err = ((pred - target) ** 2).mean(-1)
    return (err * hidden).sum() / hidden.sum().clamp_min(1)


# --- segmentation decoder --------------------------------------------------------------


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1, bias=False),
                         nn.InstanceNorm3d(c_out, affine=True), nn.LeakyReLU(0.01, inplace=True))


class UpStage(nn.Module):
    """One upsampling stage: interpolation then a convolution (``interp``), or a transposed
    convolution then a convolution (``transposed``)."""

    def __init__(self, c_in: int, c_out: int, factor: tuple[int, int, int], kind: str):
        super().__init__()
        self.factor, self.kind = factor, kind
        if kind == "transposed":
            self.up = nn.ConvTranspose3d(c_in, c_in, kernel_size=factor, stride=factor)
        self.conv = _conv(c_in, c_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "transposed":
            h = self.up(h)
        else:
            h = F.interpolate(h, scale_factor=self.factor, mode="trilinear",
                              align_corners=False)
        return self.conv(h)


class SegDecoder(nn.Module):
    """Tokens (B, N, E) and the input (B, 1, H, W, D) -> calcium logits (B, 1, H, W, D)."""

    def __init__(self, cfg: SegmenterConfig):
        super().__init__()
        self.cfg = cfg
        chans = cfg.decoder_channels
        self.bottleneck = nn.Conv3d(cfg.width, chans[0], 1)
        stages = upsampling_stages(cfg.patch)
        ins = [chans[0], *chans[: len(stages) - 1]]
        self.stages = nn.ModuleList(UpStage(ci, co, f, cfg.decoder)
                                    for ci, co, f in zip(ins, chans, stages, strict=False))
        c_last = chans[len(stages) - 1] if stages else chans[0]
        self.image = _conv(1, c_last)  # the CT at full resolution, beside the tokens
        self.fuse = _conv(2 * c_last, c_last)
        self.out = nn.Conv3d(c_last, 1, 1)
        nn.init.constant_(self.out.bias, PRIOR_LOGIT)

    def forward(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        h = tokens.transpose(1, 2).reshape(b, self.cfg.width, *self.cfg.grid)
        h = self.bottleneck(h)
        for stage in self.stages:
            h = stage(h)
        return self.out(self.fuse(torch.cat([h, self.image(x)], dim=1)))


# --- the segmenter ---------------------------------------------------------------------


class CalciumSegmenter(nn.Module):
    """Encoder + segmentation decoder (+ the MAE head, used in pre-training only and not
    shipped in fine-tuned checkpoints)."""

    def __init__(self, cfg: SegmenterConfig, with_mae: bool = False):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = SegDecoder(cfg)
        self.mae = MAEHead(cfg) if with_mae else None

    def forward(self, x: torch.Tensor, depths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, H, W, D) scaled CT (`scale_hu`) -> (B, 1, H, W, D) calcium logits.
        ``depths`` is accepted for the training loop's common call and ignored."""
        return gate(self.decoder(self.encoder(x), x), x, self.cfg.gate_hu, self.cfg.hu_knots)

    def reconstruct(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """MAE pre-training: (B, N, patch voxels) predicted from the ``keep`` tokens."""
        if self.mae is None:
            raise RuntimeError("this segmenter was built without its MAE head")
        return self.mae(self.encoder(x, keep), keep)


def crop_logits(net: nn.Module, crop_hu: np.ndarray, *, overlap: float = 0.25,
                batch: int = 4, device: torch.device | str | None = None) -> np.ndarray:
    """Calcium logits (H, W, D) of a crop of CT numbers (H, W, D), window by window
    (MONAI's ``sliding_window_inference``, Gaussian blending of overlapping windows; a crop
    smaller than the window is padded with air). Works for any network with a
    ``cfg.window`` that maps (B, 1, H, W, D) to logits of the same shape."""
    from monai.inferers import sliding_window_inference

    net.eval()
    knots = net.cfg.hu_knots
    x = torch.as_tensor(scale_hu(np.asarray(crop_hu, dtype=np.float32), knots))[None, None]
    air = float(scale_hu(np.array([-1000.0]), knots)[0])
    with torch.inference_mode():
        logits = sliding_window_inference(x, net.cfg.window, batch, net, overlap=overlap,
                                          mode="gaussian", padding_mode="constant", cval=air,
                                          sw_device=device, device="cpu")
    return logits[0, 0].float().numpy()


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Calibrated calcium probabilities sigmoid(logits / T), float32."""
    z = np.asarray(logits, dtype=np.float32) / np.float32(temperature)
    return (0.5 * (1 + np.tanh(0.5 * z))).astype(np.float32)  # a sigmoid without overflow


# --- named configurations ---------------------------------------------------------------

CONFIGS: dict[str, SegmenterConfig] = {
    # our reading of the paper's size: ViT-B (768 wide, 12 blocks, 12 heads) over small
    # patches, a larger window (the paper's exact window is not in its abstract)
    "paper": SegmenterConfig(name="paper", window=(96, 96, 32), patch=(8, 8, 2), width=768,
                             depth=12, heads=12, mlp_ratio=4, decoder_channels=(128, 64, 32),
                             mae_width=384, mae_depth=4),
    # the CPU-sized default (shipped)
    "default": SegmenterConfig(name="default"),
    # tests and quick demos
    "tiny": SegmenterConfig(name="tiny", window=(32, 32, 8), patch=(8, 8, 2), width=48,
                            depth=2, heads=2, mlp_ratio=2, decoder_channels=(16, 8, 8),
                            mae_width=48, mae_depth=1),
}
#: architecture ablations (``default+patch16``); MAE or not is a training choice
ABLATIONS: dict[str, dict] = {
    "transposed": {"decoder": "transposed"},
    "patch16": {"patch": (16, 16, 4), "decoder_channels": (32, 24, 16, 8)},
    "patch4": {"patch": (4, 4, 2), "decoder_channels": (32, 16)},
    "nogate": {"gate_hu": None},
    "windowhu": {"hu_knots": WINDOW_HU_KNOTS},
}


def build_config(name: str, **overrides) -> SegmenterConfig:
    """A named configuration, optionally with ablations: ``default+transposed``,
    ``tiny+patch16+transposed``."""
    base, *ablations = name.split("+")
    if base not in CONFIGS:
        raise ConfigError(f"unknown segmenter configuration {base!r}; choose one of "
                          f"{', '.join(CONFIGS)} (optionally +{'/+'.join(ABLATIONS)})")
    cfg = CONFIGS[base]
    for a in ablations:
        if a not in ABLATIONS:
            raise ConfigError(f"unknown segmenter ablation {a!r}; choose from "
                              f"{', '.join(ABLATIONS)}")
        cfg = replace(cfg, **ABLATIONS[a])
    try:
        return replace(cfg, name=name, **overrides)
    except TypeError as e:
        raise ConfigError(f"bad override for segmenter configuration {name!r}: {e}") from e


def is_segmenter(name: str) -> bool:
    return name.split("+")[0] in CONFIGS


def build_model(name: str = "default", with_mae: bool = False, **overrides) -> CalciumSegmenter:
    return CalciumSegmenter(build_config(name, **overrides), with_mae=with_mae)


# --- checkpoints ------------------------------------------------------------------------

FORMAT = "cohort.segmenter/1"


def _config_dict(cfg: SegmenterConfig) -> dict:
    d = asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def save_checkpoint(path, net: CalciumSegmenter, *, keep_mae: bool = False, **meta) -> None:
    """Weights (without the MAE head unless ``keep_mae``) with their configuration and plain
    metadata."""
    state = {k: v for k, v in net.state_dict().items()
             if keep_mae or not k.startswith("mae.")}
    torch.save({"format": FORMAT, "config": _config_dict(net.cfg), "state_dict": state,
                "with_mae": keep_mae and net.mae is not None, "meta": meta}, path)


def load_checkpoint(path, *, map_location: str | torch.device = "cpu", with_mae: bool = False):
    """(segmenter, meta), loaded with ``weights_only=True``. ``with_mae``: build the MAE
    head too (fresh when the file has none: fine-tuning from a pre-trained encoder).

    Raises:
        ConfigError: not a segmenter checkpoint, or weights that do not fit.
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # never suggest weights_only=False: say what the file is
        raise ConfigError(f"refusing checkpoint {path}: it is not a tensors-only PyTorch "
                          f"checkpoint ({type(e).__name__}); cohort loads checkpoints with "
                          "torch.load(weights_only=True) only") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ConfigError(f"{path} is not a cohort segmenter checkpoint ({FORMAT!r}); it "
                          f"holds {found!r}")
    try:
        saved = {k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["config"].items()}
        saved["hu_knots"] = tuple(tuple(k) for k in saved.get("hu_knots", LEGACY_HU_KNOTS))
        cfg = SegmenterConfig(**saved)
    except (KeyError, TypeError) as e:
        raise ConfigError(f"checkpoint {path} has a segmenter configuration this version of "
                          f"cohort cannot build ({e})") from None
    net = CalciumSegmenter(cfg, with_mae=with_mae)
    state = ckpt["state_dict"]
    strict = not with_mae or bool(ckpt.get("with_mae"))
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ConfigError(f"checkpoint {path}: weights do not fit its configuration: "
                          f"{str(e).splitlines()[0]}") from e
    missing = [k for k in missing if strict or not k.startswith("mae.")]
    unexpected = [k for k in unexpected if not k.startswith("mae.")]
    if missing or unexpected:
        raise ConfigError(f"checkpoint {path}: weights do not fit its configuration "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return net, dict(ckpt.get("meta", {}))
