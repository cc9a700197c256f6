"""What the one training loop (`cohort.train.loop.train_fold`) trains for the calcium
segmenter (see `cohort.train.tasks` for the protocol every task follows):

* ``segmentation``: a `cohort.model.segmenter` ViT or the `cohort.model.unet3d` baseline on
  windows of the cached arterial crops (`cohort.train.seg_data`); a training window is
  centred on a calcium voxel with probability ``POSITIVE_P`` (calcium is a few hundred of a
  crop's million voxels), else anywhere in the crop; of those, a share ``hard_positive_p``
  is centred on calcium that touches bone (`bone_calcium`: what the segmenter misses most);
  a window may be mirrored left-right and its CT numbers jittered (gain, noise). Loss =
  binary cross-entropy + soft Dice over the batch (nnU-Net's), or with ``fn_weight`` above
  0.5 a soft Tversky index in place of Dice (missed calcium weighs ``fn_weight``, false
  calcium ``1 - fn_weight``: a segmenter that misses calcium is pushed to find it).
  Validation: fixed windows per series (two on its calcium, two anywhere, seeded by its
  UID), metric = 1 - the pooled Dice of the windows at p = 0.5 (lower is better, as every
  loop metric).
* ``pretrain``: the ViT as a masked autoencoder on windows of (unlabelled) crops; loss =
  MSE on the hidden patches (`cohort.model.segmenter.mae_loss`); validation: the same loss
  on fixed windows with fixed masks.

A fine-tuning run (``TrainConfig.init_weights``) starts a segmentation network from a
pre-trained checkpoint's encoder only, or from the whole of a segmentation checkpoint (a
second fine-tuning stage; `SegmentationTask.init_from`).
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn
from torch.nn import functional as F

from cohort.errors import ConfigError
from cohort.model import segmenter, unet3d
from cohort.train.seg_data import load_crop

logger = logging.getLogger(__name__)

POSITIVE_P = 0.6  # training windows centred on calcium
AIR_HU = -1000.0
#: bone for `bone_calcium`: above this a voxel that is not calcium is bone (cortical bone
#: reads 1300-1800 HU, dense plaque 260-1500; the component filter's bone threshold too)
BONE_HU = 700.0


def build_seg_network(name: str, with_mae: bool = False) -> nn.Module:
    """A segmenter by name: a ViT configuration (``default``, ``tiny+patch16``...) or a
    U-Net baseline (``unet``, ``unet-tiny``)."""
    if name in unet3d.CONFIGS:
        if with_mae:
            raise ConfigError(f"{name!r} is a U-Net: only the ViT is pre-trained as an MAE")
        return unet3d.build_model(name)
    return segmenter.build_model(name, with_mae=with_mae)


def save_seg_checkpoint(path, net: nn.Module, **meta) -> None:
    if isinstance(net, unet3d.UNet3D):
        unet3d.save_checkpoint(path, net, **meta)
    else:
        segmenter.save_checkpoint(path, net, **meta)


def _seed_of(uid: str) -> int:
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:4], "little")


def take_window(crop: np.ndarray, window: tuple[int, int, int], centre) -> np.ndarray:
    """The (C, h, w, d) window of a (C, H, W, D) crop centred on ``centre`` (clamped so the
    window stays inside; a crop smaller than the window is padded with air, mask 0)."""
    c, *shape = crop.shape
    out = np.zeros((c, *window), dtype=np.float32)
    out[0] = AIR_HU
    src, dst = [], []
    for size, win, ctr in zip(shape, window, centre, strict=True):
        if size <= win:
            src.append(slice(0, size))
            off = (win - size) // 2
            dst.append(slice(off, off + size))
        else:
            start = int(np.clip(int(ctr) - win // 2, 0, size - win))
            src.append(slice(start, start + win))
            dst.append(slice(0, win))
    out[(slice(None), *dst)] = crop[(slice(None), *src)]
    return out


def window_centre(crop: np.ndarray, rng: np.random.Generator, positive: bool):
    """A random voxel of the mask (when ``positive`` and the crop has calcium), else a
    random voxel of the crop."""
    if positive:
        where = np.argwhere(crop[1] > 0.5)
        if len(where):
            return where[rng.integers(len(where))] + rng.integers(-6, 7, size=3)
    return [rng.integers(s) for s in crop.shape[1:]]


def bone_calcium(crop: np.ndarray) -> np.ndarray:
    """The (K, 3) voxels of a (2, H, W, D) crop's calcium that touch bone: a calcium voxel
    with a bone voxel (not calcium, above `BONE_HU`) among its 26 neighbours."""
    calcium = crop[1] > 0.5
    if not calcium.any():
        return np.zeros((0, 3), dtype=np.int64)
    bone = (crop[0] > BONE_HU) & ~calcium
    near = ndi.binary_dilation(bone, structure=np.ones((3, 3, 3), bool))
    return np.argwhere(calcium & near)


def jitter(window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Left-right mirror (p = 0.5), CT gain 0.97-1.03, Gaussian noise 0-15 HU."""
    if rng.random() < 0.5:
        window = window[:, :, ::-1]
    hu = window[0] * rng.uniform(0.97, 1.03) + rng.normal(0, rng.uniform(0, 15),
                                                             window[0].shape)
    return np.stack([hu, window[1]]).astype(np.float32)


def dice_bce(logits: torch.Tensor, target: torch.Tensor, fn_weight: float = 0.5
             ) -> torch.Tensor:
    """Binary cross-entropy + (1 - soft Dice over the batch); with ``fn_weight`` other than
    0.5, the soft Tversky index in place of Dice: TP / (TP + (1 - w) FP + w FN) (at 0.5
    it is Dice)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    tp = (p * target).sum()
    fp, fn = p.sum() - tp, target.sum() - tp
    index = (tp + 0.5) / (tp + (1 - fn_weight) * fp + fn_weight * fn + 0.5)
    return bce + (1 - index)


class _Pair:
    """Two tensors that move to a device together (the loop calls ``y.to(device)``)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.a, self.b = a, b

    def to(self, device) -> _Pair:
        return _Pair(self.a.to(device), self.b.to(device))


class SegmentationTask:
    """Calcium logits per voxel of crop windows (see module)."""

    metric = "val_loss"
    metric_text = "validation 1 - Dice %.3f (best %.3f)"

    def __init__(self, model: str, *, hard_positive_p: float = 0.0, fn_weight: float = 0.5):
        self.model = model
        cfg = build_seg_network(model).cfg  # fails early on a bad name
        self.window, self.knots = cfg.window, cfg.hu_knots
        self.hard_positive_p, self.fn_weight = hard_positive_p, fn_weight
        self._bone_calcium: dict[str, np.ndarray] = {}  # per crop, found once

    def build(self) -> nn.Module:
        return build_seg_network(self.model)

    def load(self, cache_url, rel, options):
        return load_crop(cache_url, rel, options)

    def augment(self, array, gen):
        return array  # windows are jittered as they are cut (`batch`)

    def init_from(self, net: nn.Module, state: dict, meta: dict | None = None) -> None:
        """Start from a checkpoint: all of a segmentation network of the same configuration
        (``meta`` says it was trained for segmentation: a second fine-tuning stage), else the
        encoder of a ViT pre-trained as an MAE (its segmentation decoder never trained)."""
        task = ((meta or {}).get("train_config") or {}).get("task")
        if isinstance(net, segmenter.CalciumSegmenter) and task != "segmentation":
            enc = {k.removeprefix("encoder."): v for k, v in state.items()
                   if k.startswith("encoder.")}
            net.encoder.load_state_dict(enc)
            logger.info("encoder initialised from a pre-trained checkpoint (%d tensors)",
                        len(enc))
            return
        net.load_state_dict(state)  # strict: the same configuration
        logger.info("whole network initialised from a segmentation checkpoint (%d tensors)",
                    len(state))

    def batch(self, arrays, rows, padding: str, gen: torch.Generator | None = None):
        windows = []
        for a, r in zip(arrays, rows, strict=True):
            a = np.asarray(a, dtype=np.float32)
            if gen is None:  # validation: the series' fixed windows
                rng = np.random.default_rng(_seed_of(r["series_uid"]))
                for positive in (True, True, False, False):
                    windows.append(take_window(a, self.window,
                                               window_centre(a, rng, positive)))
            else:
                rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen)))
                windows.append(jitter(take_window(a, self.window, self._centre(a, r, rng)),
                                      rng))
        w = torch.as_tensor(np.stack(windows))
        x = segmenter.scale_hu(w[:, :1], self.knots)
        y = (w[:, 1:] > 0.5).float()
        return x, torch.zeros(len(x), dtype=torch.long), y

    def _centre(self, crop: np.ndarray, row: dict, rng: np.random.Generator):
        """A training window's centre: on calcium (``POSITIVE_P``), of which a share
        ``hard_positive_p`` on calcium touching bone (when the crop has some)."""
        positive = rng.random() < POSITIVE_P
        if positive and self.hard_positive_p > 0 and rng.random() < self.hard_positive_p:
            key = row.get("path") or row["series_uid"]
            if key not in self._bone_calcium:
                self._bone_calcium[key] = bone_calcium(crop)
            hard = self._bone_calcium[key]
            if len(hard):
                return hard[rng.integers(len(hard))] + rng.integers(-6, 7, size=3)
        return window_centre(crop, rng, positive)

    def loss(self, out, y):
        return dice_bce(out, y, self.fn_weight)

    def validation_sums(self, out, y) -> list[float]:
        """[overlap, predicted, true voxels, BCE sum, voxels]."""
        pred = (out > 0).float()
        bce = F.binary_cross_entropy_with_logits(out, y, reduction="sum")
        return [float((pred * y).sum()), float(pred.sum()), float(y.sum()), float(bce),
                float(y.numel())]

    def validation_metrics(self, sums: list[float]) -> dict[str, float]:
        inter, pred, true, bce, n = sums
        dice = 2 * inter / max(pred + true, 1.0)
        return {"val_loss": 1 - dice, "val_dice": dice, "val_bce": bce / max(n, 1.0)}

    def save(self, path, net: nn.Module, best: float, **meta) -> None:
        save_seg_checkpoint(path, net, best_val_loss=best, **meta)


class MAEPretraining(nn.Module):
    """The segmenter seen by the loop in pre-training: (windows, kept token indices) ->
    reconstructed patches."""

    def __init__(self, net: segmenter.CalciumSegmenter):
        super().__init__()
        self.segmenter = net

    @property
    def cfg(self):
        return self.segmenter.cfg

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.segmenter.reconstruct(x, keep)


class PretrainTask:
    """Masked-autoencoder pre-training of the ViT encoder (see module). The loop's second
    model argument carries the visible token indices."""

    metric = "val_loss"
    metric_text = "validation reconstruction loss %.4f (best %.4f)"

    def __init__(self, model: str):
        if model in unet3d.CONFIGS:
            raise ConfigError(f"{model!r} is a U-Net: only the ViT is pre-trained as an MAE")
        self.model = model
        self.cfg = segmenter.build_config(model)

    def build(self) -> nn.Module:
        return MAEPretraining(segmenter.build_model(self.model, with_mae=True))

    def load(self, cache_url, rel, options):
        return load_crop(cache_url, rel, options)

    def augment(self, array, gen):
        return array

    def init_from(self, net: nn.Module, state: dict, meta: dict | None = None) -> None:
        net.segmenter.load_state_dict(state, strict=False)

    def batch(self, arrays, rows, padding: str, gen: torch.Generator | None = None):
        windows = []
        for a, r in zip(arrays, rows, strict=True):
            a = np.asarray(a, dtype=np.float32)
            seed = _seed_of(r["series_uid"]) if gen is None else int(
                torch.randint(2**31, (1,), generator=gen))
            rng = np.random.default_rng(seed)
            w = take_window(a, self.cfg.window, window_centre(a, rng, False))
            windows.append(w if gen is None else jitter(w, rng))
        x = segmenter.scale_hu(torch.as_tensor(np.stack(windows))[:, :1], self.cfg.hu_knots)
        g = torch.Generator().manual_seed(
            _seed_of("".join(r["series_uid"] for r in rows)) if gen is None
            else int(torch.randint(2**31, (1,), generator=gen)))
        keep = segmenter.random_keep(len(x), self.cfg, generator=g)
        return x, keep, _Pair(x, keep)

    def loss(self, out, y: _Pair):
        return segmenter.mae_loss(out, y.a, y.b, self.cfg.patch)

    def validation_sums(self, out, y: _Pair) -> list[float]:
        return [float(self.loss(out, y)) * len(out), float(len(out)), 0.0]

    def validation_metrics(self, sums: list[float]) -> dict[str, float]:
        total, n, _ = sums
        return {"val_loss": total / max(n, 1.0)}

    def save(self, path, net: nn.Module, best: float, **meta) -> None:
        segmenter.save_checkpoint(path, net.segmenter, keep_mae=True, best_val_loss=best,
                                  **meta)
