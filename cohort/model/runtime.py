"""Where and how a model runs: CUDA with bf16 autocast when a GPU is present, else CPU,
with the same code."""

from __future__ import annotations

import contextlib

import torch


def pick_device(prefer_gpu: bool = True) -> torch.device:
    """The first CUDA device when asked for and present, else the CPU."""
    if prefer_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def autocast(device: torch.device, *, bf16: bool = True):
    """bf16 autocast on CUDA (the paper's GPU setting); full precision on the CPU, where
    bf16 matmuls are slower on most processors."""
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(n: int) -> None:
    """Torch's intra-op threads, set explicitly (Ray workers must not oversubscribe)."""
    torch.set_num_threads(max(1, n))
