#!/bin/sh
# The Titans-vs-baselines comparison of BENCHMARKS.md ("Titans models and baselines"):
# every model trained with the same parameter count, steps, data and seed, then
# evaluated at 1x, 2x, 4x and 8x its training length. Run from the repository root.
#
#   sh configs/bench/run_comparison.sh            # all models, both tasks
#   KINDS="mac swa" SUITES=mqar sh configs/bench/run_comparison.sh
#
# Budget: every training stays well within 30 minutes on a 2-core CPU
# (MQAR: 500 steps of 16 x 256 tokens; S-NIAH: 500 steps of 8 x 512 tokens).
# Each model is evaluated right after its training; a model that fails (for
# example, a memory that overflows) is reported and the others go on.
set -u
KINDS=${KINDS:-"transformer swa deltanet lmm mac mag mal hope hope_attention ttt"}
SUITES=${SUITES:-"mqar niah"}
OUT=${OUT:-bench-results/comparison}
N=${N:-50}
SPEED=${SPEED:-1}  # 0: skip the speed and memory measurement at the end
status=0

for suite in $SUITES; do
  case $suite in
    mqar) bench_suite=mqar; lengths=256,512,1k,2k ;;
    niah) bench_suite=s_niah; lengths=512,1k,2k,4k ;;
    *) echo "unknown suite $suite (mqar, niah)" >&2; exit 2 ;;
  esac
  for kind in $KINDS; do
    if lifelong train "configs/bench/$suite/$kind.toml" --no-progress &&
       lifelong bench run --model "runs/bench/$suite/$kind" --suite "$bench_suite" \
         --lengths "$lengths" --n "$N" --out "$OUT/$suite"; then
      :
    else
      echo "FAILED: $suite $kind" >&2
      status=1
    fi
  done
done

# Speed and inference memory by length, same configs.
if [ "$SPEED" = 1 ]; then
  lifelong bench models configs/bench/mqar/*.toml --lengths 1k,2k,4k,8k --json "$OUT/models-mqar.json" || status=1
fi
exit $status
