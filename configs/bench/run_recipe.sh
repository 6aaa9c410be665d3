#!/bin/sh
# The comparison by length with a training recipe that learns on a 2-core CPU
# (BENCHMARKS.md, "The comparison by length, with a recipe that learns"): every
# model trained on 4-pair MQAR at 64 tokens with the same sizes, steps, data and
# seed, then evaluated on N sequences at 1x, 2x, 4x, 8x and 16x the training
# length. Run from the repository root.
#
#   sh configs/bench/run_recipe.sh                  # all models
#   KINDS="lmm mal" sh configs/bench/run_recipe.sh  # a subset
#   KINDS="ttt_dynamic_eval hope hope_attention" sh configs/bench/run_recipe.sh  # the rest
#   python configs/bench/summarize_recipe.py        # the table
#
# A model that fails is reported and the others go on.
set -u
KINDS=${KINDS:-"transformer swa deltanet lmm mac mag mal ttt"}
OUT=${OUT:-bench-results/recipe}
CONFIGS=${CONFIGS:-configs/bench/recipe}   # where KINDS' configs live
RUNS=${RUNS:-runs/bench/recipe}            # where those configs' runs land
N=${N:-100}
LENGTHS=${LENGTHS:-64,128,256,512,1024}
DEVICE=${DEVICE:-cpu}
status=0
for kind in $KINDS; do
  if ! lifelong train "$CONFIGS/$kind.toml" --no-progress --device "$DEVICE"; then
    echo "FAILED: $kind (training)" >&2
    status=1
    continue
  fi
  # One call per length: a memory that overflows at 8x keeps its 1x..4x results.
  for len in $(echo "$LENGTHS" | tr , ' '); do
    lifelong bench run --model "$RUNS/$kind" --suite mqar \
      --lengths "$len" --n "$N" --device "$DEVICE" --out "$OUT/$len" ||
      { echo "FAILED: $kind at $len tokens" >&2; status=1; }
  done
done
exit $status
