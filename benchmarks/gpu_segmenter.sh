#!/usr/bin/env bash
# The calcium segmenter's GPU run, prepared for one short device session (about 10 minutes
# on one H200): a synthetic cohort at the generator's defaults, then the segmentation study
# of fold 0 with every variant side by side on the GPU (ViT with and without MAE, patch 16,
# transposed decoder, the DynUNet baseline, the 130 HU rule), then the cost per scan against
# the DST. SYNTHETIC data.
#   bash benchmarks/gpu_segmenter.sh [OUT]
set -euo pipefail
out=${1:-${OUT:-/tmp/gpu-segmenter}}
mkdir -p "$out"
py=${PYTHON:-python}
$py -m cohort.cli synth heads --patients 60 --seed 41 --out "$out/cohort" \
    --workers "$(nproc)" > "$out/synth.txt"
$py -m cohort.cli train segmenter --data "$out/cohort" --out "$out/study" --gpus \
    --threads 4 --only-folds 0 --epochs 30 --pretrain-epochs 20 --batch-size 16 \
    --variants vit vit_no_mae vit_patch16 vit_transposed unet threshold_130hu \
    | tee "$out/study.txt"
cp "$out/study/tables/"*.md "$out/" || true
$py benchmarks/bench_segmenter.py --series 6 --cpus "$(nproc)" | tee "$out/cost.txt"
