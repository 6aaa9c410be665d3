#!/bin/sh
# The CMS level sweep of BENCHMARKS.md ("CMS levels"): train each config of this
# folder on the comparison recipe, then evaluate it on MQAR at 1x..16x its
# training length (one call per length, as configs/bench/run_recipe.sh does).
# Run from the repository root:
#   sh configs/bench/cms_sweep/run.sh                     # every cell, cheapest first
#   CELLS="L1-C32 L2-C32" sh configs/bench/cms_sweep/run.sh
# A cell that fails is reported and the others go on.
set -u
CELLS=${CELLS:-"L1-C32 L1-C16 L2-C32 L2-C16 L3-C32 L3-C16 L4-C32 L4-C16"}
OUT=${OUT:-bench-results/cms_sweep}
N=${N:-100}
LENGTHS=${LENGTHS:-64,128,256,512,1024}
DEVICE=${DEVICE:-cpu}
status=0
for name in $CELLS; do
  if ! lifelong train "configs/bench/cms_sweep/$name.toml" --no-progress --device "$DEVICE"; then
    echo "FAILED: $name (training)" >&2
    status=1
    continue
  fi
  for len in $(echo "$LENGTHS" | tr , ' '); do
    lifelong bench run --model "runs/bench/cms_sweep/$name" --suite mqar \
      --lengths "$len" --n "$N" --device "$DEVICE" --out "$OUT/$len" ||
      { echo "FAILED: $name at $len tokens" >&2; status=1; }
  done
done
exit $status
