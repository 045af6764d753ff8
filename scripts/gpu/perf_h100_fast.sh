#!/usr/bin/env bash
# Second GPU step: the fast path's variants (compile mode x decode attention) on the Qwen2.5-3B
# shape, batch 1, prompt 512, 128 new tokens; the fast-vs-HF logits checks on random weights; and
# the HF `generate` headline on the same cell. Results under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 ATTNLAB_CACHE_DIR=/tmp/attnlab-cache PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/perf-out}; mkdir -p "$OUT"; R=/tmp/perf-reports
PLUGIN="-p pytest_attnlab.plugin"
python3 -c "import importlib.metadata as m, sys; sys.exit(not any(e.name == 'attnlab' for e in m.entry_points(group='pytest11')))" && PLUGIN=""
timeout -s INT -k 10 ${T_VARIANTS:-170} python3 scripts/gpu/perf_fast_variants.py --budget ${BUDGET:-120} ${VARIANT_ARGS:-} \
  --json "$OUT/variants.json" 2>&1 | grep -v -i -E "warn|^  " | tee "$OUT/variants.log"
timeout -s INT -k 10 ${T_CHECK:-90} python3 -m pytest $PLUGIN -p no:cacheprovider -q -rs --tb=short \
  suites/perf/test_fast_path.py suites/perf/test_generation_perf.py --attnlab-model ${MODEL:-random:qwen2.5-3b-instruct} \
  --attnlab-device ${DEV:-cuda} --attnlab-report-dir $R/check --attnlab-perf-prompt-lens 512 --attnlab-perf-batch 1 \
  --attnlab-perf-new-tokens ${HEAD_NEW:-128} --attnlab-perf-path hf --attnlab-perf-rounds 1 2>&1 | tail -25 | tee "$OUT/check.log"
python3 scripts/gpu/perf_table.py $R/check/metrics.csv --markdown "$OUT/check.md" | grep -v -E "peak_bandwidth|peak_flops|timer_overhead"
