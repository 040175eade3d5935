#!/usr/bin/env bash
# The freezing study of docs/results/freezing.md: which freezing carries signal, ranked against LSQ + SAGM.
# Resumable: every finished run is loaded, not retrained, so the script can be stopped and run again.
# Runs are trained until training-domain validation stops rising (--patience evaluations without a new best,
# at most --steps) and selected on training-domain validation only; cells (held-out domain, seed) are paired.
# Usage: bash bench/dg/freezing_study.sh [w3|w4|extra|report]...   (default: w3 w4 extra report)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench/dg/freezing}
JOBS=${JOBS:-2}
COMMON=(--steps 2000 --patience 4 --eval-every 100 --batch-size 64 --lr 1e-3 --threads 1 --jobs "$JOBS"
        --no-checkpoint --no-progress --no-plots --model mnist_cnn_small --seeds 0 1 2)
CORE=(sagm-qat gaqat gaqat-cal-sagm osc-qat gaqat-osc qat-delayed)   # LSQ + SAGM and what must beat it
EXTRA=(sam-qat gaqat-cal osc-damp-qat)                               # the rest of the grid
declare -A DOMAINS=([rotated_mnist]="75 0" [mnist_c]="fog canny_edges")

sweep() {  # sweep BITS METHODS...: every benchmark, held-out domain by held-out domain, both benchmarks in turn
  local bits=$1; shift
  for index in 0 1; do
    for dataset in rotated_mnist mnist_c; do
      read -ra held <<< "${DOMAINS[$dataset]}"
      "$PY" recipes/sweep_dg.py "${COMMON[@]}" --dataset "$dataset" --bits "$bits" --methods "$@" \
        --test-domains "${held[$index]}" --output-dir "$OUT/${dataset}_cnn_w$bits/heldout_${held[$index]}"
    done
  done
}

w3() { sweep 3 "${CORE[@]}"; }
w4() { sweep 4 "${CORE[@]}"; }
extra() { sweep 3 "${EXTRA[@]}"; sweep 4 "${EXTRA[@]}"; }
report() {  # paired tables over both held-out domains of each benchmark and precision (no training)
  for grid in "$OUT"/*_w?; do
    [[ -d $grid ]] && "$PY" recipes/report_dg.py --sweeps "$grid"/heldout_* --output-dir "$grid" > /dev/null
  done
}

for part in "${@:-w3 w4 extra report}"; do
  for p in $part; do "$p"; done
done
