"""What the one training loop (`cohort.train.loop.train_fold`) trains: a task says how to
build the network, batch cache rows, compute the loss, and score the validation split.

* ``localization``: the DST's landmark head; loss = sum over landmarks of the cross-entropy
  of each distribution over slices against the true slice (the paper), or, with
  ``target_sigma_mm`` > 0, against a Gaussian in millimetres around it (a neighbour of the
  true slice is then a smaller mistake than a slice 20 mm away, and the width is the same
  in the head whatever the slice thickness); validation metric = MAE in slices (lower is
  better).
* ``classification``: the class head of any `cohort.model.zoo` network (DST [CLS] or a 3-D
  CNN); loss = cross-entropy; validation metric = mean cross-entropy (lower is better; on
  small validation splits it separates checkpoints that accuracy scores alike). Cache rows
  carry the class index in ``label``.

* ``segmentation`` and ``pretrain``: the calcium segmenter (`cohort.train.seg_tasks`).

Every task also says how a cached row is loaded (``load``), augmented (``augment``) and how
a checkpoint to fine-tune from starts its network (``init_from``); `VolumeTaskMixin` gives
the whole-volume tasks theirs.

Validation is summed per rank as plain numbers, so the loop all-reduces them and every rank
takes the same early-stopping decision.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cohort.anatomy import LANDMARKS
from cohort.errors import ConfigError
from cohort.model import zoo
from cohort.model.dst import build_model, save_checkpoint
from cohort.train.augment import augment
from cohort.train.data import load_input, targets

TASKS = ("localization", "classification", "segmentation", "pretrain")


def pad_volumes(arrays: list[np.ndarray], padding: str):
    """Volumes (H, W, D_b) -> (B, 1, H, W, D_max) zero-padded on ``padding``'s side, the
    real depths (B,), and where each volume starts along depth (B,)."""
    d_max = max(a.shape[-1] for a in arrays)
    h, w = arrays[0].shape[:2]
    x = torch.zeros(len(arrays), 1, h, w, d_max)
    starts = []
    for b, a in enumerate(arrays):
        d = a.shape[-1]
        start = d_max - d if padding == "left" else 0
        x[b, 0, :, :, start : start + d] = torch.as_tensor(a)
        starts.append(start)
    depths = torch.tensor([a.shape[-1] for a in arrays])
    return x, depths, torch.tensor(starts, dtype=torch.long)


def collate(arrays: list[np.ndarray], tgts: list[np.ndarray], padding: str):
    """Volumes (H, W, D_b) -> (B, 1, H, W, D_max) padded on ``padding``'s side, depths, and
    landmark targets (B, N) moved by each volume's padding."""
    x, depths, starts = pad_volumes(arrays, padding)
    y = torch.zeros(len(arrays), len(LANDMARKS), dtype=torch.long)
    for b, t in enumerate(tgts):
        y[b] = torch.as_tensor(t) + starts[b]
    return x, depths, y


def _get(row, key: str, default):
    return row.get(key, default) if isinstance(row, dict) else getattr(row, key, default)


class LandmarkTargets:
    """A batch's landmark targets: true slices (B, N), as padded, and slice spacing (B,) in
    mm (for targets whose width is given in mm)."""

    def __init__(self, slices: torch.Tensor, spacing_mm: torch.Tensor):
        self.slices, self.spacing_mm = slices, spacing_mm

    def to(self, device) -> LandmarkTargets:
        return LandmarkTargets(self.slices.to(device), self.spacing_mm.to(device))


def gaussian_targets(slices: torch.Tensor, spacing_mm: torch.Tensor, length: int,
                     sigma_mm: float) -> torch.Tensor:
    """(B, N, length) target distributions: a Gaussian of ``sigma_mm`` around each true slice
    (in mm along depth, so narrower in slices on thick slices), normalised to sum to 1.
    Padded positions are far from every true slice only when the caller masks them; the
    loss does (see `soft_cross_entropy`)."""
    k = torch.arange(length, device=slices.device, dtype=torch.float32)
    d_mm = (k[None, None, :] - slices[..., None].float()) * spacing_mm[:, None, None].float()
    w = torch.exp(-0.5 * (d_mm / sigma_mm) ** 2)
    return w / w.sum(dim=-1, keepdim=True)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum target * log softmax(logits), where logits of -inf (padding)
    count as probability 0 and their target weight is dropped (renormalised)."""
    valid = torch.isfinite(logits)
    target = torch.where(valid, target, torch.zeros_like(target))
    target = target / target.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    logp = torch.log_softmax(logits, dim=-1)
    return -(torch.where(valid, target * logp, torch.zeros_like(logp))).sum(-1).mean()


class VolumeTaskMixin:
    """Loading, augmentation and initialisation of the whole-volume tasks."""

    def load(self, cache_url, rel, options):
        return load_input(cache_url, rel, options)

    def augment(self, array: np.ndarray, gen: torch.Generator) -> np.ndarray:
        return augment(torch.as_tensor(array)[None], gen)[0].numpy()

    def init_from(self, net: nn.Module, state: dict, meta: dict | None = None) -> None:
        net.load_state_dict(state)


class LocalizationTask(VolumeTaskMixin):
    """Six landmark distributions over the slices (the DST's localization head)."""

    metric = "val_mae"  # what early stopping minimises
    metric_text = "validation MAE %.3f slices (best %.3f)"

    def __init__(self, model: str, max_len: int, target_sigma_mm: float = 0.0):
        self.model, self.max_len = model, max_len
        self.target_sigma_mm = float(target_sigma_mm)

    def build(self) -> nn.Module:
        return build_model(self.model, max_len=self.max_len)

    def batch(self, arrays, rows, padding: str, gen=None):
        x, depths, y = collate(arrays, [targets(r) for r in rows], padding)
        spacing = torch.tensor([float(_get(r, "slice_spacing_mm", 1.0) or 1.0) for r in rows])
        return x, depths, LandmarkTargets(y, spacing)

    def loss(self, out, y: LandmarkTargets) -> torch.Tensor:
        logits = out.landmark_logits  # (B, N, D)
        if self.target_sigma_mm > 0:
            soft = gaussian_targets(y.slices, y.spacing_mm, logits.shape[-1],
                                    self.target_sigma_mm)
            return sum(soft_cross_entropy(logits[:, j], soft[:, j])
                       for j in range(len(LANDMARKS)))
        return sum(F.cross_entropy(logits[:, j], y.slices[:, j]) for j in range(len(LANDMARKS)))

    def validation_sums(self, out, y: LandmarkTargets) -> list[float]:
        """[sum |error| in slices, exact hits, scan x landmark pairs]."""
        pred = out.landmark_logits.argmax(-1).cpu()
        y = y.slices.cpu()
        return [float((pred - y).abs().sum()), float((pred == y).sum()), float(y.numel())]

    def validation_metrics(self, sums: list[float]) -> dict[str, float]:
        err, hits, n = sums
        return {"val_mae": err / max(n, 1), "val_top1": hits / max(n, 1)}

    def save(self, path, net: nn.Module, best: float, **meta) -> None:
        save_checkpoint(path, net, best_val_mae=best, **meta)


class ClassificationTask(VolumeTaskMixin):
    """Class logits of a whole volume (the DST's [CLS] head, or a 3-D CNN)."""

    metric = "val_loss"
    metric_text = "validation loss %.3f (best %.3f)"

    def __init__(self, model: str, max_len: int):
        zoo.check_name(model)
        self.model, self.max_len = model, max_len

    def build(self) -> nn.Module:
        return zoo.build_network(self.model, max_len=self.max_len)

    def batch(self, arrays, rows, padding: str, gen=None):
        x, depths, _ = pad_volumes(arrays, padding)
        return x, depths, torch.tensor([int(r["label"]) for r in rows], dtype=torch.long)

    def loss(self, out, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(zoo.class_logits(out), y)

    def validation_sums(self, out, y: torch.Tensor) -> list[float]:
        """[sum of cross-entropies, correct predictions, volumes]."""
        logits = zoo.class_logits(out)
        ce = F.cross_entropy(logits, y, reduction="sum")
        return [float(ce), float((logits.argmax(-1) == y).sum()), float(len(y))]

    def validation_metrics(self, sums: list[float]) -> dict[str, float]:
        ce, hits, n = sums
        return {"val_loss": ce / max(n, 1), "val_accuracy": hits / max(n, 1)}

    def save(self, path, net: nn.Module, best: float, **meta) -> None:
        zoo.save_checkpoint(path, net, best_val_loss=best, **meta)


def make_task(task: str, model: str, max_len: int, target_sigma_mm: float = 0.0, *,
              hard_positive_p: float = 0.0, fn_weight: float = 0.5):
    """The task object ``train_fold`` drives (see module)."""
    if task in ("segmentation", "pretrain"):
        from cohort.train.seg_tasks import PretrainTask, SegmentationTask

        if task == "pretrain":
            return PretrainTask(model)
        return SegmentationTask(model, hard_positive_p=hard_positive_p, fn_weight=fn_weight)
    if task == "localization":
        return LocalizationTask(model, max_len, target_sigma_mm)
    if task == "classification":
        return ClassificationTask(model, max_len)
    raise ConfigError(f"unknown training task {task!r}; choose from {', '.join(TASKS)}")
