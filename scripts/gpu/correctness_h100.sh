#!/usr/bin/env bash
# The correctness suite on the GPU with the embedded model, in bf16 (auto) and float32.
set -uo pipefail
. scripts/gpu/setup_device.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
$ATTNLAB_PYTEST suites/correctness --attnlab-device cuda --attnlab-report-dir "$OUT/bf16" -q -rs \
  -k "not quant and not attention" 2>&1 | tail -25
$ATTNLAB_PYTEST suites/correctness --attnlab-device cuda --attnlab-dtype float32 --attnlab-report-dir "$OUT/fp32" \
  -q -k "not quant and not attention" 2>&1 | tail -8
python3 -m pytest_attnlab table "$OUT/bf16" -k layer_diff --by test,device \
  -m logits_cosine,min_layer_cosine,first_divergent_layer
