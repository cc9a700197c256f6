"""The Ray Train loop of one fold, for every task: the DST's landmark localization and the
whole-volume classification of any `cohort.model.zoo` network (`cohort.train.tasks` says
what differs: network, batches, loss, validation metric).

Runs on every worker of a `TorchTrainer`: DDP through `ray.train.torch.prepare_model`,
shards of the cache index through `ray.train.get_dataset_shard`, a checkpoint every epoch
(resume state plus the best weights so far), early stopping on the validation split agreed
by all ranks (the validation sums are all-reduced, so every rank takes the same decision).
The test split never reaches this loop.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from cohort.errors import ConfigError
from cohort.model.zoo import padding_of
from cohort.storage import StorageOptions
from cohort.testing.faults import drill
from cohort.train.tasks import TASKS, make_task

logger = logging.getLogger(__name__)


OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one fold. Defaults follow the paper and its public code."""

    model: str = "small"  # localization: a cohort.model.dst name; classification: a zoo name
    task: str = "localization"  # or "classification" (see cohort.train.tasks)
    max_len: int = 512
    epochs: int = 60
    batch_size: int = 2  # volumes per worker step, grouped by similar depth
    optimizer: str = "sgd"  # the paper's; or "adamw" (far fewer epochs to a plateau)
    lr: float = 2e-3  # the paper's learning rate
    momentum: float = 0.3  # public code: SGD, momentum 0.3, Nesterov
    nesterov: bool = True
    weight_decay: float = 1e-5
    #: localization targets: 0 = cross-entropy on the true slice (the paper); > 0 = a
    #: Gaussian of this width in mm around it (see cohort.train.tasks)
    target_sigma_mm: float = 0.0
    #: fine-tuning: a checkpoint (path or URL; "{fold}" becomes the fold) whose weights
    #: start the training instead of a fresh initialisation
    init_weights: str | None = None
    grad_clip: float = 5.0
    warmup_epochs: int = 2  # linear warm-up, then cosine decay to 0
    patience: int = 10  # epochs without a better validation metric before stopping
    augment: bool = True  # intensity, noise, small in-plane shifts and rotations
    #: segmentation: the share of calcium-centred windows centred on calcium touching bone
    hard_positive_p: float = 0.0
    #: segmentation: the weight of missed calcium in the overlap loss (0.5: soft Dice; more:
    #: a Tversky index that favours finding calcium over not over-calling it)
    fn_weight: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ConfigError("epochs, batch size and patience must be at least 1")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose from "
                              f"{', '.join(OPTIMIZERS)}")
        if self.target_sigma_mm < 0:
            raise ConfigError(f"target width must be 0 (true slice) or positive mm, got "
                              f"{self.target_sigma_mm}")
        if self.task not in TASKS:
            raise ConfigError(f"unknown training task {self.task!r}; choose from "
                              f"{', '.join(TASKS)}")
        if not 0 <= self.hard_positive_p <= 1:
            raise ConfigError(f"hard_positive_p is a share in 0-1, got {self.hard_positive_p}")
        if not 0 < self.fn_weight < 1:
            raise ConfigError(f"fn_weight must lie strictly between 0 and 1 (0.5: soft Dice), "
                              f"got {self.fn_weight}")


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD as in the paper's public code, or AdamW."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0,
                           weight_decay=cfg.weight_decay)


def initial_weights(url: str, options: StorageOptions | None, *, with_meta: bool = False):
    """The float32 state dict of a checkpoint to fine-tune from (``weights_only`` load);
    ``with_meta``: (state dict, the checkpoint's metadata)."""
    import io

    from cohort.model.zoo import load_checkpoint
    from cohort.storage import read_bytes

    net, meta = load_checkpoint(io.BytesIO(read_bytes(url, options)))
    state = {k: v.float() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    return (state, meta) if with_meta else state


def lr_factor(epoch: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_epochs``, then cosine decay."""
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    span = max(1, cfg.epochs - cfg.warmup_epochs)
    return 0.5 * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))


def batches_by_depth(rows: list[dict], batch_size: int, rng: np.random.Generator):
    """Rows grouped into batches of similar depth, in a shuffled order."""
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["depth"], rng.random()))
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(groups)
    return [[rows[i] for i in g] for g in groups]


def _all_reduce(values: list[float], device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t.tolist()


def train_fold(config: dict) -> None:
    """The per-worker training function (``train_loop_per_worker``)."""
    import ray.train
    import ray.train.torch

    cfg = TrainConfig(**config["train"])
    logging.basicConfig(level=config.get("log_level", logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cache_url = config["cache_url"]
    options = StorageOptions(**config["storage"]) if config.get("storage") else None
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(cfg.seed * 1000 + rank)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    rng = np.random.default_rng([cfg.seed, rank])
    device = ray.train.torch.get_device()
    task = make_task(cfg.task, cfg.model, cfg.max_len, cfg.target_sigma_mm,
                     hard_positive_p=cfg.hard_positive_p, fn_weight=cfg.fn_weight)
    net = task.build()
    if cfg.init_weights:  # a resumed run overwrites these with its own below
        task.init_from(net, *initial_weights(cfg.init_weights.format(fold=config.get("fold")),
                                             options, with_meta=True))
    padding = padding_of(net)
    model = ray.train.torch.prepare_model(net)
    opt = make_optimizer(model.parameters(), cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(e, cfg))
    start, best, bad = 0, float("inf"), 0
    best_state = None
    best_at, best_epoch = 0.0, 0
    history: list[dict] = []  # per epoch: the validation curve, kept in the checkpoints
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # resume after a crash: exactly where the last epoch ended
        with checkpoint.as_directory() as d:
            path = os.path.join(d, "state.pt")
            state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, best, bad = state["epoch"] + 1, state["best"], state["bad_epochs"]
        best_state = state["best_model"]
        best_at = state.get("best_at_s", 0.0)
        best_epoch = state.get("best_epoch", state["epoch"])
        history = list(state.get("history", []))
    t_start = time.perf_counter() - (state.get("elapsed_s", 0.0) if checkpoint else 0.0)
    train_rows = list(ray.train.get_dataset_shard("train").iter_rows())
    val_rows = list(ray.train.get_dataset_shard("validation").iter_rows())
    cache: dict[str, np.ndarray] = {}

    def volume(row):
        if row["path"] not in cache:
            cache[row["path"]] = task.load(cache_url, row["path"], options)
        return cache[row["path"]]

    for epoch in range(start, cfg.epochs):
        # a test may kill this worker once here, after the previous epoch's checkpoint
        drill("epoch_start", epoch=epoch)
        model.train()
        losses = []
        for batch in batches_by_depth(train_rows, cfg.batch_size, rng):
            arrays = [volume(r) for r in batch]
            if cfg.augment:
                arrays = [task.augment(a, gen) for a in arrays]
            x, depths, y = task.batch(arrays, batch, padding, gen)
            loss = task.loss(model(x.to(device), depths.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        model.eval()
        sums = None
        with torch.no_grad():
            for batch in batches_by_depth(val_rows, cfg.batch_size, rng):
                x, depths, y = task.batch([volume(r) for r in batch], batch, padding)
                got = task.validation_sums(model(x.to(device), depths.to(device)), y.to(device))
                sums = got if sums is None else [a + b for a, b in zip(sums, got, strict=True)]
        sums = sums or [0.0] * 3
        *sums, loss_sum, loss_n = _all_reduce([*sums, sum(losses), len(losses)], device)
        val = task.validation_metrics(sums)
        value = val[task.metric]
        elapsed = time.perf_counter() - t_start
        if value < best - 1e-9:
            best, bad, best_at, best_epoch = value, 0, elapsed, epoch
            best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
        stop = bad >= cfg.patience
        metrics = {"epoch": epoch, "train_loss": loss_sum / max(loss_n, 1), **val,
                   f"best_{task.metric}": best, "stopped": stop,
                   "lr": sched.get_last_lr()[0], "started_at_epoch": start,
                   "elapsed_s": elapsed, "best_at_s": best_at}
        history.append({"epoch": epoch, "train_loss": metrics["train_loss"],
                        **{k: float(v) for k, v in val.items()}, "lr": metrics["lr"],
                        "elapsed_s": elapsed})
        if rank == 0:
            logger.info("epoch %d/%d: train loss %.3f, " + task.metric_text + ", %.0f s",
                        epoch + 1, cfg.epochs, metrics["train_loss"], value, best, elapsed)
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if rank == 0:
                torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "epoch": epoch, "best": best,
                            "bad_epochs": bad, "best_model": best_state,
                            "elapsed_s": elapsed, "best_at_s": best_at,
                            "best_epoch": best_epoch, "history": history},
                           os.path.join(d, "state.pt"))
                best_net = task.build()
                best_net.load_state_dict(best_state)
                task.save(os.path.join(d, "best.pt"), best_net, best, epoch=epoch,
                          best_epoch=best_epoch, best_at_s=best_at, train_config=asdict(cfg),
                          history=history)
                ckpt = ray.train.Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=ckpt)
        if stop:
            break
