#!/bin/sh
# The CMS level sweep of BENCHMARKS.md ("CMS levels"): train each config of this
# folder on the comparison recipe, then evaluate it on MQAR at 1x..16x its
# training length, with configs/bench/run_recipe.sh (one call per length).
# Run from the repository root:
#   sh configs/bench/cms_sweep/run.sh                     # every cell, cheapest first
#   CELLS="L1-C32 L2-C32" sh configs/bench/cms_sweep/run.sh
# A cell that fails is reported and the others go on.
set -u
KINDS=${CELLS:-"L1-C32 L1-C16 L2-C32 L2-C16 L3-C32 L3-C16 L4-C32 L4-C16"} \
CONFIGS=configs/bench/cms_sweep RUNS=runs/bench/cms_sweep \
OUT=${OUT:-bench-results/cms_sweep} \
  exec sh configs/bench/run_recipe.sh
