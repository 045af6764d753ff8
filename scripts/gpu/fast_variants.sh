#!/usr/bin/env bash
# The fast path's variants on one shape, measured by suites/perf/test_fast_path.py (issue 18): each run is
# the suite with one set of --attnlab-perf-* options; rows land in REPORTS/NAME/metrics.csv, and PART
# table prints them with `python -m pytest_attnlab table`.
#   scripts/gpu/fast_variants.sh REPORTS [PART]     PART: measure (timings), gemv (torch vs Triton GEMVs),
#                                                   triton (the Triton GEMVs' grid, int4 checks, per-linear
#                                                   kernels), fused (--attnlab-perf-fast-gemv triton-fused
#                                                   against triton, its grid and checks), checks (greedy and
#                                                   logits), scaling (issue 29: the CUDA candidate, triton-
#                                                   fused + Triton attention, over batch 1/8/32 and prompt
#                                                   512/2048, its checks, cuBLAS, the 7B shape, int4,
#                                                   the rows GEMVs; in that order, so a short budget cuts
#                                                   the last), targets (the candidate's grid and the 7B
#                                                   shape only), batch (the candidate beside the compiled
#                                                   cuBLAS step at batch 1/8/32: auto's pick per batch) or
#                                                   table
# measure also profiles 20 decode steps of each main variant after its timed rounds (--attnlab-perf-profile-steps:
# wall vs kernel time, GEMV / attention / copy / elementwise shares, top kernels); table prints them.
# Environment: MODEL (random:qwen2.5-3b-instruct), BUDGET_S (seconds for the whole part, default 330),
# INDUCTOR (the persistent inductor cache dir, default /tmp/ind: the second compile of a run reads it),
# PROFILE_STEPS (decode steps profiled per main variant, default 20; 0: none).
set -uo pipefail
cd "$(dirname "$0")/../.."
R=${1:?REPORTS}; PART=${2:-measure}
MODEL=${MODEL:-random:qwen2.5-3b-instruct}; END=$((SECONDS + ${BUDGET_S:-330}))
[ "$PART" = table ] || { . .ci/gpu-setup || exit 1; }
BASE=(--attnlab-device cuda --attnlab-dtype bfloat16 --attnlab-perf-new-tokens 128
      --attnlab-perf-rounds 3 --attnlab-perf-warmup 1 --attnlab-perf-inductor-cache "${INDUCTOR:-/tmp/ind}")
# the parts were measured with torch / math as the defaults: pinned (a later flag wins), whatever auto picks
BASE+=(--attnlab-perf-fast-gemv torch --attnlab-perf-fast-attention math)
B1=(--attnlab-perf-prompt-lens 512 --attnlab-perf-batch 1); V=(-k test_fast_variant)
P=(--attnlab-perf-profile-steps "${PROFILE_STEPS:-20}")
L=(--attnlab-perf-compile default --attnlab-perf-compile-scope layer)
# the CUDA candidate (triton-fused GEMVs, Triton attention, no compile) and the compiled cuBLAS step beside it
C=(--attnlab-perf-fast-gemv triton-fused --attnlab-perf-fast-attention triton)
W=(--attnlab-perf-compile default --attnlab-perf-fast-gemv torch --attnlab-perf-fast-attention triton)
run() {  # name, options...: one pytest run inside what is left of the budget; a cut run keeps its rows
  local n=$1; shift; local left=$((END - SECONDS)) start=$SECONDS
  if [ "$left" -lt 30 ]; then echo "[$n] skipped: budget"; return; fi
  timeout -s INT -k 10 "$left" "${PYTEST[@]}" -q -rs --tb=line "${FILE:-suites/perf/test_fast_path.py}" "${BASE[@]}" \
    --attnlab-model "${M:-$MODEL}" \
    --attnlab-report-dir "$R/$n" -p no:html "$@" 2>&1 | grep -i -E "passed|failed|error" | tail -4 | sed "s/^/[$n] /"
  echo "[$n] $((SECONDS - start)) s"
}
case $PART in
  measure)
    run eager         "${V[@]}" "${B1[@]}" "${P[@]}" --attnlab-perf-compile none
    run step-cold     "${V[@]}" "${B1[@]}" --attnlab-perf-compile default
    run step-hot      "${V[@]}" "${B1[@]}" "${P[@]}" --attnlab-perf-compile default
    run int4-g32      "${V[@]}" "${B1[@]}" "${P[@]}" "${L[@]}" --attnlab-perf-fast-quant int4-g32
    run int4-g128     "${V[@]}" "${B1[@]}" "${P[@]}" "${L[@]}" --attnlab-perf-fast-quant int4-g128
    run layer-grid    "${V[@]}" "${L[@]}" --attnlab-perf-prompt-lens 512,2048 --attnlab-perf-batch 1,8
    run separate      "${V[@]}" "${B1[@]}" "${P[@]}" "${L[@]}" --attnlab-perf-fast-weights separate
    run sdpa          "${V[@]}" "${B1[@]}" "${P[@]}" "${L[@]}" --attnlab-perf-fast-attention sdpa ;;
  gemv)  # the decode GEMVs' kernels, torch's against the Triton ones (--attnlab-perf-fast-gemv), bf16 and int4
    run gemv-torch        "${V[@]}" "${B1[@]}" "${P[@]}" --attnlab-perf-compile default
    run gemv-triton       "${V[@]}" "${B1[@]}" "${P[@]}" --attnlab-perf-compile default --attnlab-perf-fast-gemv triton
    run gemv-int4-torch   "${V[@]}" "${B1[@]}" "${P[@]}" "${L[@]}" --attnlab-perf-fast-quant int4-g128
    run gemv-int4-triton  "${V[@]}" "${B1[@]}" "${P[@]}" "${L[@]}" --attnlab-perf-fast-quant int4-g128 \
      --attnlab-perf-fast-gemv triton
    run checks-triton     --attnlab-perf-compile default --attnlab-perf-fast-gemv triton ;;
  triton)  # Triton GEMVs + Triton decode attention: the scaling grid, the checks, int4, each linear's kernels
    T=(--attnlab-perf-fast-gemv triton --attnlab-perf-fast-attention triton)
    run triton-grid "${V[@]}" "${P[@]}" --attnlab-perf-compile default "${T[@]}" \
      --attnlab-perf-prompt-lens 512,2048 --attnlab-perf-batch 1,8
    run checks-triton-attn -k "not test_fast_variant" --attnlab-perf-compile default "${T[@]}"
    run int4-g32-triton "${L[@]}" --attnlab-perf-fast-quant int4-g32 "${T[@]}" \
      -k "not test_fast_variant or p512-b1" "${P[@]}"
    run int4-g128-triton "${V[@]}" "${B1[@]}" "${L[@]}" --attnlab-perf-fast-quant int4-g128 "${T[@]}"
    FILE=suites/perf/test_decode_gemv.py run decode-gemv ;;
  fused)  # triton-fused (norms, RoPE, cache writes, residual adds in the GEMVs) against triton, same machine
    F=(--attnlab-perf-compile default --attnlab-perf-fast-gemv triton-fused)
    run fused-math    "${V[@]}" "${B1[@]}" "${P[@]}" "${F[@]}"
    run triton-math   "${V[@]}" "${B1[@]}" --attnlab-perf-compile default --attnlab-perf-fast-gemv triton
    run checks-fused  -k "not test_fast_variant" "${F[@]}"
    run fused-triton  "${V[@]}" "${P[@]}" "${F[@]}" --attnlab-perf-fast-attention triton \
      --attnlab-perf-prompt-lens 512,2048 --attnlab-perf-batch 1,8
    run checks-fused-attn -k "not test_fast_variant" "${F[@]}" --attnlab-perf-fast-attention triton ;;
  scaling)  # issue 29: the CUDA candidate (triton-fused GEMVs, Triton attention, CUDA graph, no compile) and its checks
    G=(--attnlab-perf-prompt-lens 512,2048 --attnlab-perf-batch 1,8,32)
    run checks-candidate -k "not test_fast_variant" "${C[@]}"
    run candidate-grid "${V[@]}" "${P[@]}" "${G[@]}" "${C[@]}"
    run torch-compiled "${V[@]}" "${P[@]}" --attnlab-perf-prompt-lens 512 --attnlab-perf-batch 1,8,32 \
      --attnlab-perf-compile default --attnlab-perf-fast-gemv torch --attnlab-perf-fast-attention math
    M=random:qwen2.5-7b-instruct run 7b-candidate "${V[@]}" "${P[@]}" "${C[@]}" --attnlab-perf-prompt-lens 512 \
      --attnlab-perf-batch 1,8
    # int4-g128: the fast path's best int4 step so far (tinygemm, layers compiled) and the candidate's
    run int4-compiled "${V[@]}" "${P[@]}" "${L[@]}" --attnlab-perf-prompt-lens 512 --attnlab-perf-batch 1,8 \
      --attnlab-perf-fast-quant int4-g128
    run int4-candidate "${V[@]}" "${B1[@]}" "${P[@]}" "${C[@]}" --attnlab-perf-fast-quant int4-g128
    run fused-math-compiled "${V[@]}" "${B1[@]}" "${P[@]}" --attnlab-perf-compile default \
      --attnlab-perf-fast-gemv triton-fused --attnlab-perf-fast-attention math
    # the 2+ row GEMVs at other tiles and split-K (kSPLIT), beside cuBLAS and the default tiles
    FILE=suites/perf/test_decode_gemv.py run gemv-rows -k "not tinygemm and not marlin" --attnlab-perf-batch 8,32 \
      --attnlab-perf-gemv-configs "${GEMV_CONFIGS:-16x256w4s3k2,16x256w4s3k4,16x512w4s2k4,32x256w4s3k4,16x128w4s4k8}" ;;
  targets)  # issue 29's targets alone, for a short device budget: the candidate's grid, then the 7B shape at batch 1
    run candidate-grid "${V[@]}" "${P[@]}" "${C[@]}" --attnlab-perf-prompt-lens 512,2048 --attnlab-perf-batch 1,8,32
    M=random:qwen2.5-7b-instruct run 7b-candidate "${V[@]}" "${P[@]}" "${C[@]}" "${B1[@]}" ;;
  batch)  # auto's pick per batch size, side by side on one machine: the candidate (triton-fused GEMVs, Triton
    # attention, no compile) against the compiled cuBLAS step with the same attention, at batch 1/8/32
    run batch-candidate "${V[@]}" "${P[@]}" "${C[@]}" --attnlab-perf-prompt-lens 512 --attnlab-perf-batch 1,8,32
    run batch-cublas-compiled "${V[@]}" "${P[@]}" "${W[@]}" --attnlab-perf-prompt-lens 512 --attnlab-perf-batch 8,32
    run batch-cublas-compiled-b1 "${V[@]}" "${P[@]}" "${W[@]}" "${B1[@]}" ;;
  batch2)  # the same between the first measured batches: 2 and 4, and 16
    run batch2-candidate "${V[@]}" "${C[@]}" --attnlab-perf-prompt-lens 512 --attnlab-perf-batch 2,4,16
    run batch2-cublas-compiled "${V[@]}" "${W[@]}" --attnlab-perf-prompt-lens 512 --attnlab-perf-batch 4,16,2 ;;
  checks)  # every test of the file (greedy on the trained model, logits on the random shape) per variant
    run checks-int4-g32 "${L[@]}" --attnlab-perf-fast-quant int4-g32
    run checks-step   --attnlab-perf-compile default
    run checks-layer  "${L[@]}"
    run checks-int4-g128 "${L[@]}" --attnlab-perf-fast-quant int4-g128 ;;
  table)  # TPOT, MBU, TTFT, compile time per variant and cell; what the inductor cache did; the checks
    RUNS=("$R"/*/metrics.csv)
    python3 -m pytest_attnlab table "${RUNS[@]}" -k test_fast_variant -m tpot,mbu,ttft,compile_s \
      --by run,compile,compile_scope,fast_attention,fast_weights,fast_quant,fast_gemv,prompt_len,batch
    python3 -m pytest_attnlab table "${RUNS[@]}" -k test_fast_variant -m compile_s --by run,inductor_cache
    python3 -m pytest_attnlab table "${RUNS[@]}" -m greedy_tokens_agree,int4_logit_cosine_min,logits_cosine_min \
      --by run,test --gates
    # each linear's GEMV per kernel (suites/perf/test_decode_gemv.py): time per call, % of the bandwidth limit
    python3 -m pytest_attnlab table "${RUNS[@]}" -k test_decode_gemv -m gemv_time,gemv_bandwidth --by linear,gemv_kernel
    # where a profiled step's time goes (pytest_attnlab.perf.profile_step): its wall time untraced and traced,
    # kernel time, busy = kernel / traced wall, kernel count, the share of each class of KERNEL_CLASSES; then
    # the top kernels with their calls per step
    M=profile_step_wall,profile_traced_wall,profile_kernel_time,profile_busy,profile_kernel_count  # + class shares
    M+=,profile_share_gemv,profile_share_attention,profile_share_copy,profile_share_elementwise,profile_share_other
    python3 -m pytest_attnlab table "${RUNS[@]}" -k test_fast_variant -m "$M" --by run,prompt_len,batch,profile_note
    python3 -m pytest_attnlab table "${RUNS[@]}" -k test_fast_variant -m profile_top_kernel \
      --by run,rank,kernel_class,calls_per_step,kernel ;;
  *) echo "unknown part '$PART'; choose from: measure gemv triton fused scaling targets batch batch2 checks table"; exit 2 ;;
esac
