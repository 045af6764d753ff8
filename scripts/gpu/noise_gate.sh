#!/usr/bin/env bash
# The compare gate's noise experiment (issue 16): K identical perf runs and M runs with a planted 10 %
# decode slowdown (--attnlab-perf-plant-slowdown 0.1), interleaved, of one cell grid: MODEL, prompt 128,
# batch 1 and 8, 64 new tokens, hf and fast paths, 5 rounds. Each run is its own pytest process.
#   scripts/gpu/noise_gate.sh [OUT]        then: python scripts/gpu/noise_gate_tally.py OUT
# Environment: K (default 8), M (4), MODEL (random:qwen2.5-0.5b-instruct), DEVICE (cuda).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-reports/noise-gate}
K=${K:-8}; M=${M:-4}; MODEL=${MODEL:-random:qwen2.5-0.5b-instruct}; DEVICE=${DEVICE:-cuda}
. .ci/gpu-setup || exit 1
one() {  # name, extra args...
  local dir="$OUT/$1"; shift; mkdir -p "$dir"; local start=$SECONDS
  "${PYTEST[@]}" suites/perf/test_generation_perf.py --attnlab-device "$DEVICE" --attnlab-model "$MODEL" \
    --attnlab-perf-prompt-lens 128 --attnlab-perf-batch 1,8 --attnlab-perf-new-tokens 64 \
    --attnlab-perf-path hf,fast --attnlab-perf-rounds 5 -q -p no:html \
    --attnlab-report-dir "$dir" --benchmark-json "$dir/benchmark.json" "$@" | tail -1
  echo "noise-gate: $(basename "$dir") in $((SECONDS - start)) s"
}
for i in $(seq 1 "$K"); do
  one "identical-$i"
  if [ "$i" -le "$M" ]; then one "planted-$i" --attnlab-perf-plant-slowdown 0.1; fi
done
