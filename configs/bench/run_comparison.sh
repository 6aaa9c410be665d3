#!/bin/sh
# The Titans-vs-baselines comparison of BENCHMARKS.md ("Titans models and baselines"):
# every model trained with the same parameter count, steps, data and seed, then
# evaluated at 1x, 2x, 4x and 8x its training length. Run from the repository root.
#
#   sh configs/bench/run_comparison.sh            # all models, both tasks
#   KINDS="mac swa" SUITES=mqar sh configs/bench/run_comparison.sh
#
# Budget: each training is sized to stay within about 30 minutes on a 2-core CPU
# (MQAR: 500 steps of 16 x 256 tokens; S-NIAH: 500 steps of 8 x 512 tokens).
set -eu
KINDS=${KINDS:-"transformer swa deltanet lmm mac mag mal"}
SUITES=${SUITES:-"mqar niah"}
OUT=${OUT:-bench-results/comparison}
N=${N:-50}

for suite in $SUITES; do
  for kind in $KINDS; do
    lifelong train "configs/bench/$suite/$kind.toml" --no-progress
  done
done

for kind in $KINDS; do
  case " $SUITES " in *" mqar "*)
    lifelong bench run --model "runs/bench/mqar/$kind" --suite mqar \
      --lengths 256,512,1k,2k --n "$N" --out "$OUT/mqar" ;;
  esac
  case " $SUITES " in *" niah "*)
    lifelong bench run --model "runs/bench/niah/$kind" --suite s_niah \
      --lengths 512,1k,2k,4k --n "$N" --out "$OUT/niah" ;;
  esac
done

# Speed and inference memory by length, same configs.
lifelong bench models configs/bench/mqar/*.toml --lengths 1k,2k,4k,8k --json "$OUT/models-mqar.json"
