#!/bin/sh
# The CMS level sweep of BENCHMARKS.md: train every config of this folder, then
# evaluate it on MQAR at 1x-8x its training length. Run from the repository root:
#   sh configs/bench/cms_sweep/run.sh
set -u
OUT=${OUT:-bench-results/cms_sweep}
N=${N:-50}
status=0
for cfg in configs/bench/cms_sweep/*.toml; do
  name=$(basename "$cfg" .toml)
  if lifelong train "$cfg" --no-progress &&
     lifelong bench run --model "runs/bench/cms_sweep/$name" --suite mqar --lengths 256,512,1k,2k \
       --n "$N" --out "$OUT"; then :; else echo "FAILED: $name" >&2; status=1; fi
done
exit $status
