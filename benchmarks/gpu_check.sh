#!/usr/bin/env bash
# The job's GPU path, as one short prepared run (a few minutes on one GPU): the DST actor of
# `cohort run` in Ray Data's actor pool with bf16 on a few hundred synthetic 128 x 128 x 64
# volumes, at the paper's size and at the shipped small size: volumes/s per GPU, GPU
# utilisation, peak GPU memory and latency per volume against the paper's 10 ms / 800 MB on
# an A100 (`benchmarks/gpu_dst_actor.py`). SYNTHETIC inputs.
#   bash benchmarks/gpu_check.sh [OUT]
# Needs an NVIDIA GPU. Where the Python in use has a CPU-only torch, the CUDA build is
# installed first (PyPI's Linux wheel of the same version is the CUDA build).
set -euo pipefail
out=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$out"
py=${PYTHON:-python}
nvidia-smi -L || { echo "gpu_check: no NVIDIA GPU here (nvidia-smi -L failed)" >&2; exit 1; }
if ! $py -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    version=$($py -c 'import torch; print(torch.__version__.split("+")[0])')
    echo "== installing the CUDA build of torch $version =="
    $py -m pip install --quiet --force-reinstall --no-deps --index-url https://pypi.org/simple \
        "torch==$version" || { echo "gpu_check: could not install the CUDA build of torch" \
        "$version (no package index reachable?); install it, then run again" >&2; exit 1; }
fi
$py -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
torch.cuda.get_device_name(0))' | tee "$out/device.txt"
for model in paper small; do
    $py benchmarks/gpu_dst_actor.py --model "$model" --volumes 300 --batch 8 \
        2> "$out/$model.log" | tee "$out/$model.txt"
done
