#!/usr/bin/env bash
# Long-context attention variants on one GPU: prefill time/memory for 1k..32k tokens, decode memory and step
# time, measured by suites/scaling/test_attention_long_context.py. Random-init Qwen2.5-0.5B shape in bf16
# (nothing to download or carry). Usage, from the repo root:
#   bash scripts/gpu/attention_h100.sh [extra pytest args]      table: $OUT/attention_long_context.md
# Environment: CONTEXTS (1024,...,32768), MODEL (random:qwen2.5-0.5b-instruct), BUDGET_S (200: a cut run keeps its rows).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp}; R=$OUT/attention-long-context
. .ci/gpu-setup || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout -s INT -k 15 "${BUDGET_S:-200}" "${PYTEST[@]}" suites/scaling/test_attention_long_context.py -q -rs -p no:html \
  --attnlab-model "${MODEL:-random:qwen2.5-0.5b-instruct}" --attnlab-device cuda --attnlab-dtype bfloat16 \
  --attnlab-perf-prompt-lens "${CONTEXTS:-1024,2048,4096,8192,16384,32768}" --attnlab-report-dir "$R" "$@" 2>&1 \
  | grep -v -i "warn" | tail -15
python3 -m pytest_attnlab table "$R/metrics.csv" --by attention,prompt_len \
  -m prefill_s,prefill_peak_bytes,decode_held_bytes,decode_step_s,state_bytes | tee "$OUT/attention_long_context.md"
