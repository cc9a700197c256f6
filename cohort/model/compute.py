"""What a network costs per volume: multiply-accumulates, parameters, peak memory, latency.

* Multiply-accumulates (MAC) are counted by torch's ``FlopCounterMode`` on one forward pass
  (convolutions, linear layers, matrix products, attention), halved: one MAC is two FLOPs,
  and papers' "GFLOPs" columns such as the DST paper's 35.57 are MAC counts. Normalisation,
  activations and pooling are not counted, as usual.
* Peak memory of one forward pass at batch 1, model weights included: on CUDA
  ``torch.cuda.max_memory_allocated``; on the CPU the process's resident high-water mark
  (``VmHWM``, reset through ``/proc/self/clear_refs``) minus its resident memory before the
  model was built (a sampling thread where ``clear_refs`` is not writable). Run it in a fresh
  process for a clean number (the benchmark uses a Ray task that exits afterwards).
* Latency per volume: the best of ``repeats`` timed forward passes at batch 1, after one
  warm-up pass, under ``torch.inference_mode()`` (bf16 autocast on CUDA).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cohort.model.runtime import autocast


@dataclass(frozen=True)
class Compute:
    """Cost of one network at one input shape on one device."""

    gmac: float  # 1e9 multiply-accumulates per volume
    params_m: float  # 1e6 parameters
    peak_memory_mb: float  # MiB, weights included (see module)
    latency_ms: float  # per volume, batch 1
    device: str  # "cpu (2 threads)" or the CUDA device name
    input_shape: str  # "128x128x64" (H x W x D)


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of ``model(x)`` (one forward pass, see module)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops()) // 2


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _rss_bytes(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def _cpu_peak(run: Callable[[], None]) -> int:
    """Resident high-water mark (bytes) while ``run`` runs."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        run()
        return _rss_bytes("VmHWM")
    except OSError:
        peak, running = [0], [True]

        def sample() -> None:
            while running[0]:
                peak[0] = max(peak[0], _rss_bytes())
                time.sleep(0.001)

        thread = threading.Thread(target=sample)
        thread.start()
        try:
            run()
        finally:
            running[0] = False
            thread.join()
        return peak[0]


def measure(
    build: Callable[[], nn.Module],
    shape: tuple[int, int, int] = (128, 128, 64),
    *,
    device: torch.device | str = "cpu",
    repeats: int = 3,
) -> Compute:
    """Cost of the network ``build()`` returns, for one (H, W, D) volume.

    ``build`` is called here (not before) so that its weights count in the peak memory; it
    is called twice (once for a warm-up pass).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    x = torch.randn(1, 1, *shape, device=device)
    with torch.inference_mode():  # first-use set-up of torch's kernels is not the model's
        build().eval().to(device)(x)
    model: nn.Module | None = None

    def forward() -> None:
        with torch.inference_mode(), autocast(device):
            model(x)
        if cuda:
            torch.cuda.synchronize(device)

    def build_and_forward() -> None:
        nonlocal model
        model = build().eval().to(device)
        forward()

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        build_and_forward()
        peak = torch.cuda.max_memory_allocated(device)
        name = torch.cuda.get_device_name(device)
    else:
        before = _rss_bytes()
        peak = max(0, _cpu_peak(build_and_forward) - before)
        name = f"cpu ({torch.get_num_threads()} threads)"
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        forward()
        times.append(time.perf_counter() - t0)
    macs = count_macs(model.cpu(), x.cpu())
    return Compute(
        gmac=macs / 1e9,
        params_m=count_parameters(model) / 1e6,
        peak_memory_mb=peak / 2**20,
        latency_ms=min(times) * 1000,
        device=name,
        input_shape="x".join(map(str, shape)),
    )
