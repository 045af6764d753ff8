#!/usr/bin/env bash
# On the H200, once install.sh has put vLLM in /tmp/vllm-site: issue 19's runs, each a plain pytest
# command of the plugin's own suites and options (nothing here times anything itself).
#   bash scripts/vllm_h200/run.sh OUT STAGE...
# Stages (each under its own time limit; logs in OUT/<stage>.log, reports under /tmp/h200/<stage>/, packed
# into OUT/reports.tgz at the end, since a call brings back at most 8 files):
#   ci           the GPU entry point's vLLM stage (.ci/gpu, ATTNLAB_GPU_STAGES=vllm) on the embedded model
#   seed003      experiments/paged_vs_quant.yaml (seed 003) on the embedded model
#   backends3b   suites/correctness/test_backends.py, vllm vs hf, random:qwen2.5-3b-instruct, bfloat16
#   perf3b       suites/perf/test_generation_perf.py through vllm, fast, hf: 3B, prompt 512, batch 1/8/32
#   quant3b      the same through vllm for the 4-bit routes (compressed-tensors and AWQ exports; GPTQ needs
#                gptqmodel, which the image lacks)
#                against bf16 at batch 1 and 8: seed 000's claim
#   marlin3b     quant3b's bf16 and int4 cells with Machete disabled (VLLM_DISABLED_KERNELS): on the 3B shape vLLM
#                picks Machete for every linear, and int4 ran at 0.86x of bf16 there (issue 29). Cold (first vLLM
#                import, the int4 export, both engines' compiles) it printed nothing in 240 s on 2026-12-06; warm,
#                int4 alone took 90 s and bf16 alone 56 s: hence 480 s
#   rows3b       the docs' table in one session (docs/backends.md): HF, the fast path as `auto` picks it and vLLM in
#                bf16, beside vLLM's int4-g128-zp with Marlin forced (Machete disabled; bf16 linears are
#                unaffected), 3B shape, prompt 512, batch 1 and 8: perf3b's and marlin3b's cells with one vLLM import
#   marlingemv   the 3B shape's int4 GEMVs one linear at a time, Marlin (through vLLM) beside tinygemm and
#                cuBLAS at 1 and 8 rows (suites/perf/test_decode_gemv.py), after Marlin's checks with their
#                planted zero point (tests/test_marlin_int4.py, logged as marlintest)
#   fastmarlin   the fast path's int4-g128-zp step, layers compiled, through Marlin (--attnlab-perf-fast-gemv marlin)
#                and through tinygemm beside it, with its checks (suites/perf/test_fast_path.py), batch 1 and 8
# STAGE_LIMIT_<stage> overrides a stage's seconds.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=$1; shift
REP=/tmp/h200
mkdir -p "$OUT" "$REP"
[ -f /tmp/vllm-site.env ] && . /tmp/vllm-site.env
. .ci/gpu-setup || exit 1
export VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-INFO}
M3B=random:qwen2.5-3b-instruct
COMMON=(--attnlab-device cuda --attnlab-dtype bfloat16 -q -rfEs)
# vLLM with CUDA graphs and its torch.compile, as served: the perf figures; correctness keeps eager.
GRAPHS=(--attnlab-vllm-enforce-eager off --attnlab-vllm-gpu-memory-utilization 0.45 --attnlab-vllm-max-model-len 1024)
PERF=(suites/perf/test_generation_perf.py --attnlab-perf-models "$M3B" --attnlab-perf-prompt-lens 512
      --attnlab-perf-new-tokens 64 --attnlab-perf-compile default)
# seed 000's claim with Marlin forced (vLLM picks Machete on the 3B shape; bf16 linears are unaffected): bf16 and
# int4-g128-zp at batch 1 and 8 (marlin3b through vLLM alone, rows3b through the three paths)
MARLIN=(env VLLM_DISABLED_KERNELS=MacheteLinearKernel "${PYTEST[@]}" "${PERF[@]}" "${COMMON[@]}" "${GRAPHS[@]}"
        --attnlab-perf-batch 1,8 --attnlab-quant none,rtn-int4-g128-zp)

stage() {  # name, default seconds, command...
  local name=$1 limit=$2; shift 2
  local var="STAGE_LIMIT_$name"; limit=${!var:-$limit}
  mkdir -p "$REP/$name"; local start=$SECONDS
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  echo "run.sh: $name exit $rc in $((SECONDS - start)) s (limit $limit s)"
  grep -E "^(FAILED|ERROR)|passed|failed|skipped|error" "$OUT/$name.log" | tail -6
}

for s in "$@"; do
  case $s in
    ci) stage ci 540 env ATTNLAB_GPU_STAGES=vllm bash .ci/gpu "$REP/ci" ;;
    seed003) stage seed003 150 "${PYTEST[@]}" suites/perf/test_vllm_paged_vs_quant.py "${COMMON[@]}" \
        --attnlab-config experiments/paged_vs_quant.yaml --attnlab-vllm-gpu-memory-utilization 0.3 \
        --attnlab-report-dir "$REP/seed003" ;;
    backends3b) stage backends3b 180 "${PYTEST[@]}" suites/correctness/test_backends.py "${COMMON[@]}" \
        --attnlab-model "$M3B" --attnlab-backend vllm,hf --attnlab-quant rtn-int4-g128 \
        --attnlab-vllm-gpu-memory-utilization 0.45 --attnlab-report-dir "$REP/backends3b" ;;
    perf3b) stage perf3b 330 "${PYTEST[@]}" "${PERF[@]}" "${COMMON[@]}" "${GRAPHS[@]}" \
        --attnlab-backend vllm,fast,hf --attnlab-perf-batch 1,8,32 --attnlab-quant none \
        --attnlab-report-dir "$REP/perf3b" --benchmark-json "$REP/perf3b/benchmark.json" ;;
    quant3b) stage quant3b 480 "${PYTEST[@]}" "${PERF[@]}" "${COMMON[@]}" "${GRAPHS[@]}" \
        --attnlab-backend vllm --attnlab-perf-batch 1,8 \
        --attnlab-quant none,rtn-int4-g128-zp,awq-int4-g128 \
        --attnlab-report-dir "$REP/quant3b" --benchmark-json "$REP/quant3b/benchmark.json" ;;
    marlin3b) stage marlin3b 480 "${MARLIN[@]}" --attnlab-backend vllm \
        --attnlab-report-dir "$REP/marlin3b" --benchmark-json "$REP/marlin3b/benchmark.json" ;;
    rows3b) stage rows3b 560 "${MARLIN[@]}" --attnlab-backend vllm,fast,hf --attnlab-perf-compile auto \
        --attnlab-report-dir "$REP/rows3b" --benchmark-json "$REP/rows3b/benchmark.json" ;;
    marlingemv) stage marlintest 120 "${PYTEST[@]}" tests/test_marlin_int4.py -q -rs
      stage marlingemv 240 "${PYTEST[@]}" suites/perf/test_decode_gemv.py "${COMMON[@]}" --attnlab-model "$M3B" \
        --attnlab-perf-batch 1,8 -k "cublas or tinygemm-g128 or marlin" --attnlab-report-dir "$REP/marlingemv" \
        --benchmark-json "$REP/marlingemv/benchmark.json" ;;
    fastmarlin)
      FAST=(suites/perf/test_fast_path.py "${COMMON[@]}" --attnlab-model "$M3B" --attnlab-perf-prompt-lens 512
            --attnlab-perf-batch 1,8 --attnlab-perf-new-tokens 128 --attnlab-perf-rounds 3 --attnlab-perf-warmup 1
            --attnlab-perf-compile default --attnlab-perf-compile-scope layer --attnlab-perf-fast-quant int4-g128-zp
            --attnlab-perf-fast-attention math --attnlab-perf-profile-steps 20)
      stage fastmarlin 300 "${PYTEST[@]}" "${FAST[@]}" --attnlab-perf-fast-gemv marlin \
        --attnlab-report-dir "$REP/fastmarlin" --benchmark-json "$REP/fastmarlin/benchmark.json"
      stage fasttinygemm 200 "${PYTEST[@]}" "${FAST[@]}" --attnlab-perf-fast-gemv torch -k test_fast_variant \
        --attnlab-report-dir "$REP/fasttinygemm" --benchmark-json "$REP/fasttinygemm/benchmark.json" ;;
    *) echo "run.sh: unknown stage '$s'; choose from: ci seed003 backends3b perf3b quant3b marlin3b rows3b marlingemv fastmarlin"
       exit 2 ;;
  esac
done
# What comes back: at most 8 files, so one tar of the reports (figures' PNGs left out) beside the logs.
stages=("$@"); [[ " $* " == *" fastmarlin "* ]] && stages+=(fasttinygemm)
tar -czf "$OUT/reports.tgz" --exclude='*.png' --exclude='*.html' -C "$REP" "${stages[@]}" 2>/dev/null
ls -la "$OUT"
