"""What a network costs per volume: multiply-accumulates, parameters, peak memory, latency.

* Multiply-accumulates (MAC) are counted by torch's ``FlopCounterMode`` on one forward pass
  (convolutions, linear layers, matrix products, attention), halved: one MAC is two FLOPs,
  and papers' "GFLOPs" columns such as the DST paper's 35.57 are MAC counts. Normalisation,
  activations and pooling are not counted, as usual. Attention on the CPU runs torch's
  fused ``_scaled_dot_product_flash_attention_for_cpu``, for which torch has no formula (it
  would count 0): `FLOP_FORMULAS` gives it the formula torch uses for the GPU kernels.
* Peak memory of one forward pass, model weights included: on CUDA
  ``torch.cuda.max_memory_allocated``; on the CPU the process's resident high-water mark
  (``VmHWM``, reset through ``/proc/self/clear_refs``: psutil has no resettable peak on
  Linux) minus its resident memory before the model was built (psutil's RSS, sampled by a
  thread where ``clear_refs`` is not writable). Run it in a fresh process for a clean
  number (the benchmarks use a process or Ray task that exits afterwards).
* Latency per volume: the best of ``repeats`` timed forward passes (batch 1 unless asked,
  divided by the batch), after one warm-up pass, under ``torch.inference_mode()`` (bf16
  autocast on CUDA).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import torch
from torch import nn
from torch.utils.flop_counter import sdpa_flop_count

from cohort.model.runtime import autocast

aten = torch.ops.aten


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of (B, H, L, E) attention: Q K^T and the weighted sum of V, as torch counts
    its GPU attention kernels (masks and softmax not counted)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


#: formulas ``FlopCounterMode`` lacks, passed as its ``custom_mapping`` (no global registry)
FLOP_FORMULAS = {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop}


@dataclass(frozen=True)
class Compute:
    """Cost of one network at one input shape on one device."""

    gmac: float  # 1e9 multiply-accumulates per volume
    params_m: float  # 1e6 parameters
    peak_memory_mb: float  # MiB, weights included (see module)
    latency_ms: float  # per volume (batch 1 unless measured otherwise)
    device: str  # "cpu (2 threads)" or the CUDA device name
    input_shape: str  # "128x128x64" (H x W x D)


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of ``model(x)`` (one forward pass, see module)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
        model(x)
    return int(counter.get_total_flops()) // 2


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _peak_rss_bytes() -> int:
    """The process's resident high-water mark (``VmHWM``; Linux only, not in psutil)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _cpu_peak(run: Callable[[], None]) -> int:
    """Resident high-water mark (bytes) while ``run`` runs."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        run()
        return _peak_rss_bytes()
    except OSError:
        process = psutil.Process()
        peak, done = [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                done.wait(0.001)

        thread = threading.Thread(target=sample)
        thread.start()
        try:
            run()
        finally:
            done.set()
            thread.join()
        return max(peak[0], process.memory_info().rss)


def measure(
    build: Callable[[], nn.Module],
    shape: tuple[int, int, int] = (128, 128, 64),
    *,
    device: torch.device | str = "cpu",
    repeats: int = 3,
    batch: int = 1,
) -> Compute:
    """Cost of the network ``build()`` returns, for one (H, W, D) volume.

    ``build`` is called here (not before) so that its weights count in the peak memory; it
    is called twice (once for a warm-up pass). With ``batch`` > 1 the forward passes take
    that many volumes: the latency is per volume, the peak memory that of the whole batch,
    the MAC and parameters still per volume.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    x = torch.randn(batch, 1, *shape, device=device)
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
        before = psutil.Process().memory_info().rss
        peak = max(0, _cpu_peak(build_and_forward) - before)
        name = f"cpu ({torch.get_num_threads()} threads)"
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        forward()
        times.append(time.perf_counter() - t0)
    macs = count_macs(model.cpu(), x[:1].cpu())
    return Compute(
        gmac=macs / 1e9,
        params_m=count_parameters(model) / 1e6,
        peak_memory_mb=peak / 2**20,
        latency_ms=min(times) * 1000 / batch,
        device=name,
        input_shape="x".join(map(str, shape)),
    )
