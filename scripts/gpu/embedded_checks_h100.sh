#!/usr/bin/env bash
# Embedded-model checks on the GPU (phase B of the carry): the fast decode path against HF greedy on
# the trained model, and the correctness suite's tokenizer/component/layer-diff tests in bf16.
set -uo pipefail
. scripts/gpu/setup_device.sh || exit 1
$ATTNLAB_PYTEST suites/perf/test_fast_path.py -k trained --attnlab-device cuda --attnlab-report-dir "$OUT/fast" \
  -q -rs --tb=short 2>&1 | tail -12
$ATTNLAB_PYTEST suites/correctness/test_tokenizer.py suites/correctness/test_components.py \
  suites/correctness/test_layer_diff.py suites/correctness/test_generation.py --attnlab-device cuda \
  --attnlab-report-dir "$OUT/corr" -q -rs --tb=short 2>&1 | tail -12
python3 -m pytest_attnlab table "$OUT/fast" -k greedy --by test,backend,dtype --gates
