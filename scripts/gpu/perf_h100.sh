#!/usr/bin/env bash
# The perf suite on one GPU with a random-init Qwen2.5-3B shape (bf16): the prompt x batch table for
# both decode paths, the timing-error and monitor-overhead checks, then the batch-1 headline
# (prompt 512, 128 new tokens) for hf, fast, and fast under torch.compile. Needs nothing carried.
#   run from the repo root on the device; results under $OUT (table.md, metrics CSVs, JSON, log).
set -uo pipefail
export PYTHONUNBUFFERED=1 ATTNLAB_CACHE_DIR=/tmp/attnlab-cache PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/perf-out}; mkdir -p "$OUT"; R=/tmp/perf-reports
# Not pip-installed on the device: load the plugin by module name there (not where it is installed).
PLUGIN="-p pytest_attnlab.plugin"
python3 -c "import importlib.metadata as m, sys; sys.exit(not any(e.name == 'attnlab' for e in m.entry_points(group='pytest11')))" && PLUGIN=""
PYTEST="python3 -m pytest $PLUGIN -p no:cacheprovider -q -rs --tb=short"
MODEL=${MODEL:-random:qwen2.5-3b-instruct}; DEV=${DEV:-cuda}
GRID="--attnlab-perf-prompt-lens ${PROMPTS:-128,512,2048} --attnlab-perf-batch ${BATCH:-small,medium,large} --attnlab-perf-new-tokens ${NEW:-32}"
PERF_METRICS=ttft,tpot,itl_p99,prefill_tok_s,decode_tok_s,e2e_tok_s,mbu,mfu,peak_mem
CHECKS=timing_error,timer_overhead,monitor_overhead,tpot_monitor_off,tpot_monitor_on,e2e_latency_fixture,e2e_latency_raw_events,greedy_tokens_agree
HEAD="--attnlab-perf-prompt-lens ${HEAD_PROMPT:-512} --attnlab-perf-batch 1 --attnlab-perf-new-tokens ${HEAD_NEW:-128}"
{
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.mem --format=csv,noheader
python3 -c "import torch, transformers, pytest_benchmark; print('torch', torch.__version__, 'transformers', transformers.__version__, 'pytest-benchmark', pytest_benchmark.__version__)"
python3 -c "import pynvml, psutil; print('nvml + psutil ok')" || echo "nvml/psutil missing"
T0=$SECONDS
# 1) table: prompt {128,512,2048} x batch {1,8,32} x path {hf,fast}, 32 new tokens; quality checks
timeout -s INT -k 15 ${T_GRID:-150} $PYTEST suites/perf/test_generation_perf.py suites/perf/test_measurement_quality.py \
  suites/perf/test_fast_path.py --attnlab-model $MODEL --attnlab-device $DEV --attnlab-report-dir $R/grid \
  $GRID --attnlab-perf-rounds 2 --attnlab-perf-warmup 1 --benchmark-json="$OUT/perf.json"
echo "grid done at $((SECONDS - T0)) s"
# 2) headline: batch 1, prompt 512, 128 new tokens (fast: 5 rounds; hf: 1 round, it is slow)
timeout -s INT -k 15 ${T_HEAD:-35} $PYTEST suites/perf/test_generation_perf.py --attnlab-model $MODEL --attnlab-device $DEV \
  --attnlab-report-dir $R/headline $HEAD --attnlab-perf-path fast --attnlab-perf-rounds 5 --benchmark-json="$OUT/headline.json"
timeout -s INT -k 15 ${T_HEADHF:-25} $PYTEST suites/perf/test_generation_perf.py --attnlab-model $MODEL --attnlab-device $DEV \
  --attnlab-report-dir $R/headline-hf $HEAD --attnlab-perf-path hf --attnlab-perf-rounds 1
echo "headline done at $((SECONDS - T0)) s"
# 3) the fast path's step under torch.compile (no cudagraphs), then captured in our CUDA graph
timeout -s INT -k 15 ${T_COMPILE:-75} $PYTEST suites/perf/test_generation_perf.py --attnlab-model $MODEL --attnlab-device $DEV \
  --attnlab-report-dir $R/compile $HEAD --attnlab-perf-path fast --attnlab-perf-rounds 5 \
  --attnlab-perf-compile ${COMPILE_MODE:-default}
echo "compile done at $((SECONDS - T0)) s"
} 2>&1 | tee "$OUT/log.txt" | grep -v -E "Warning|warn\(|^  " 
# the table per step (run) x path x cell, then the single checks (timing error, monitor overhead...)
python3 -m pytest_attnlab table $R/grid $R/headline $R/headline-hf $R/compile -k test_generation \
  --by run,compile,backend,prompt_len,batch,new_tokens -m "$PERF_METRICS" | tee "$OUT/table.md"
python3 -m pytest_attnlab table $R/grid $R/headline $R/headline-hf $R/compile --by run,test,backend \
  -m "$CHECKS" | tee -a "$OUT/table.md"
# metrics.csv of every step and the monitor timelines travel in one archive (8 files come back at most)
tar czf "$OUT/reports.tar.gz" --exclude='*.html' -C $R . 2>/dev/null
ls "$OUT"
