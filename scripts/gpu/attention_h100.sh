#!/usr/bin/env bash
# Long-context attention variants on one GPU: prefill time/memory for 1k..32k tokens, decode memory.
# Random-init Qwen2.5-0.5B shape in bf16 (nothing to download or carry). Usage, from the repo root:
#   bash scripts/gpu/attention_h100.sh [extra args for attention_long_context.py]
set -euo pipefail
cd "$(dirname "$0")/../.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
PYTHONPATH=. python scripts/gpu/attention_long_context.py "$@" 2>&1 | grep -v -i "warn" | tee "${OUT:-/tmp}/attention_long_context.md"
