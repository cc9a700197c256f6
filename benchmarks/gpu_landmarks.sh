#!/usr/bin/env bash
# The landmark model's GPU checks, as one short prepared run (about 10 minutes on one
# H200): training throughput of the shipped recipe's small DST against the paper's size at
# 64 and 128 pixels, inference latency, then `small` against `paper` at equal data and
# steps on a fresh synthetic cohort (fold 0, validation only). SYNTHETIC data.
#   bash benchmarks/gpu_landmarks.sh [OUT]
set -euo pipefail
out=${1:-${OUT:-/tmp/gpu-landmarks}}
mkdir -p "$out"
py=${PYTHON:-python}
$py benchmarks/bench_train.py --size 64 --depth 128 --batch 4 --steps 10 | tee "$out/train64.txt"
$py benchmarks/bench_train.py --size 128 --depth 128 --batch 4 --steps 10 | tee "$out/train128.txt"
$py benchmarks/bench_dst.py --quick | tee "$out/dst.txt"
$py -m cohort.cli synth heads --patients 60 --matrix 256 --seed 31 --out "$out/cohort" \
    --workers "$(nproc)" > "$out/synth.txt"
$py benchmarks/ablate_landmarks.py --cohort "$out/cohort" --out "$out/ablation" --gpu \
    --epochs 8 --train-fraction 1.0 --variants recipe paper | tee "$out/ablation.txt"
