#!/usr/bin/env bash
# Second GPU step: the fast path's variants (compile mode x decode attention x inductor coordinate-descent
# tuning) on the Qwen2.5-3B shape, batch 1, prompt 512, 128 new tokens, each one run of
# suites/perf/test_fast_path.py::test_fast_variant; the fast-vs-HF logits checks on random weights; and
# the HF `generate` headline on the same cell. Results under $OUT (variants.md, check.md, logs).
# Environment: VARIANTS ("COMPILE/ATTENTION/CDT ..."), BUDGET (s for all variants, 120), MODEL, DEV.
set -uo pipefail
export PYTHONUNBUFFERED=1 ATTNLAB_CACHE_DIR=/tmp/attnlab-cache PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/perf-out}; mkdir -p "$OUT"; R=/tmp/perf-reports
PLUGIN="-p pytest_attnlab.plugin"
python3 -c "import importlib.metadata as m, sys; sys.exit(not any(e.name == 'attnlab' for e in m.entry_points(group='pytest11')))" && PLUGIN=""
MODEL=${MODEL:-random:qwen2.5-3b-instruct}; DEV=${DEV:-cuda}; END=$((SECONDS + ${BUDGET:-120}))
CELL="--attnlab-perf-prompt-lens 512 --attnlab-perf-batch 1 --attnlab-perf-new-tokens ${HEAD_NEW:-128}"
runs=()
for v in ${VARIANTS:-none/sdpa/0 none/math/0 default/math/0 default/math/1 default/sdpa/0 max-autotune-no-cudagraphs/math/1}; do
  IFS=/ read -r compile attention cdt <<<"$v"; name="variant-$compile-$attention-cdt$cdt"
  left=$((END - SECONDS)); if [ "$left" -lt 20 ]; then echo "budget spent: skipping $v"; continue; fi
  TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=$cdt timeout -s INT -k 10 "$left" python3 -m pytest $PLUGIN \
    -p no:cacheprovider -p no:html -q -rs --tb=line suites/perf/test_fast_path.py -k test_fast_variant \
    --attnlab-model "$MODEL" --attnlab-device "$DEV" --attnlab-dtype bfloat16 --attnlab-report-dir "$R/$name" $CELL --attnlab-perf-rounds 5 \
    --attnlab-perf-warmup 1 --attnlab-perf-compile "$compile" --attnlab-perf-fast-attention "$attention" 2>&1 \
    | grep -v -i -E "warn|^  " | tail -3 | sed "s/^/[$name] /" | tee -a "$OUT/variants.log"
  runs+=("$R/$name")
done
[ ${#runs[@]} -gt 0 ] && python3 -m pytest_attnlab table "${runs[@]}" --by run,compile,fast_attention \
  -m tpot,mbu,ttft,decode_tok_s,compile_s,convert_s | tee "$OUT/variants.md"
timeout -s INT -k 10 ${T_CHECK:-90} python3 -m pytest $PLUGIN -p no:cacheprovider -q -rs --tb=short \
  suites/perf/test_fast_path.py suites/perf/test_generation_perf.py --attnlab-model $MODEL \
  --attnlab-device $DEV --attnlab-report-dir $R/check $CELL --attnlab-perf-path hf --attnlab-perf-rounds 1 2>&1 \
  | tail -25 | tee "$OUT/check.log"
python3 -m pytest_attnlab table $R/check --by test,backend,prompt_len,batch,new_tokens \
  -m ttft,tpot,decode_tok_s,e2e_tok_s,mbu,greedy_tokens_agree,logits_cosine_min --gates | tee "$OUT/check.md"
