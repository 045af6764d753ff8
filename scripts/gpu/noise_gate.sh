#!/usr/bin/env bash
# The compare gate's noise experiment: .ci/gpu's noise stage (K identical perf runs and M with a planted
# slowdown of twice the TPOT threshold, of one small grid, each its own process, interleaved) and its
# per-cell tally (python -m pytest_attnlab noise-tally OUT, also OUT/noise/tally.txt).
#   scripts/gpu/noise_gate.sh [OUT]
# Environment: K (default 7), M (3), MODEL (embedded).
set -uo pipefail
cd "$(dirname "$0")/../.."
ATTNLAB_GPU_STAGES=noise ATTNLAB_GPU_NOISE_K=${K:-7} ATTNLAB_GPU_NOISE_M=${M:-3} \
  ATTNLAB_GPU_SMALL_MODEL=${MODEL:-embedded} exec bash .ci/gpu "${1:-reports/noise-gate}"
