"""Correctness across backends: each backend's greedy tokens and top-k logprobs against HF.

Per (backend, quantizer): HF `generate` on the same weights is the reference for tokens; HF's
log_softmax along the backend's own continuation (teacher forcing) is the reference for its
logprobs, so one early divergence does not misalign every later step. vLLM gets a quantizer's
weights as an exported compressed-tensors / GPTQ / AWQ checkpoint from the quantizer cache (the
same weights as the HF reference) or quantizes in flight (paths/vllm_quant.py); the HF
reference then runs at the engine's dtype. Quantizers without a route skip with the reason.
Choose with --attnlab-backend, --attnlab-quant and --attnlab-vllm-quant-format.
"""

from __future__ import annotations

import copy

import torch

from pytest_attnlab.paths import scoring
from pytest_attnlab.prompts import ids_for, load_prompts

NEW_TOKENS = 16
TOP_K = 5
PROMPT_IDS = ("plain-capital", "plain-story", "chat-math")
#: Gates, recorded beside each figure. Kernels differ in summation order, so a backend may break a
#: near-tie the other way (then every later token differs: token_match is recorded, not gated);
#: what is gated is that each greedy choice is HF's argmax up to `regret` nats on the same context,
#: and that the top-k logprobs agree with HF's log_softmax to `logprob_max_diff` nats.
#: bfloat16: healthy vLLM 0.25.1 against HF on the H200 (embedded model) reached a regret of 0.25000006
#: (two bf16 steps of a logit in [16, 32)) and logprob differences of 0.49; the gates sit at twice that,
#: and a dropped attention block still fails them (tests/test_backend_gates.py).
GATES = {
    "float32": {"regret": 1e-3, "logprob_max_diff": 5e-3},
    "bfloat16": {"regret": 0.5, "logprob_max_diff": 1.0},
    "float16": {"regret": 0.1, "logprob_max_diff": 0.2},
}
#: vLLM quantizing in flight vs our quantizer: same format, own rounding and kernels
IN_FLIGHT_GATES = {"regret": 0.5, "logprob_max_diff": 1.0}


def _prompts(loaded):
    chosen = [p for p in load_prompts() if p.id in PROMPT_IDS]
    return [ids_for(loaded, p) for p in chosen]


def _at_dtype(model, dtype: str):
    """`model` at the backend's dtype (a copy when it differs): vLLM's int4 routes run 16-bit activations."""
    if str(next(model.parameters()).dtype).removeprefix("torch.") == dtype:
        return model
    return copy.deepcopy(model).to(getattr(torch, dtype))


def test_backend_agrees_with_hf(
    attnlab_backend,
    backend_path,
    backend_quant,
    attnlab_run_case,
    attnlab_model,
    attnlab_settings,
    metrics,
    pytestconfig,
):
    reference = attnlab_run_case.loaded(pytestconfig)  # skips a pair that cannot run (fast x a quantizer)
    cand_model = reference.model  # vLLM finds a quantized model's route itself
    metrics.update_context(**reference.context(), backend=attnlab_backend)
    prompts = _prompts(attnlab_model)
    ref_tokens, cands, ref_lps = [], [], []
    dtype = str(attnlab_settings.resolved_dtype()).removeprefix("torch.")
    ref_model = reference.model
    for ids in prompts:
        backend_path.prepare(cand_model, 1, ids.shape[1], NEW_TOKENS)
        dtype = getattr(backend_path, "engine_dtype", dtype)
        ref_model = _at_dtype(ref_model, dtype)
        ref = scoring.hf_greedy_logprobs(ref_model, ids, NEW_TOKENS, TOP_K)
        cand = backend_path.greedy_logprobs(ids, NEW_TOKENS, TOP_K)
        ref_tokens += ref.tokens
        cands.append(cand)
        ref_lps.append(scoring.teacher_forced_logprobs(ref_model, ids, cand.tokens))
    merged = scoring.Scored([t for c in cands for t in c.tokens], [s for c in cands for s in c.top])
    lp = torch.nn.utils.rnn.pad_sequence([x[0] for x in ref_lps], batch_first=True)
    agree = scoring.agreement(ref_tokens, merged, lp, banned=scoring.eos_ids(ref_model))
    described = backend_path.describe()  # vLLM: its route, engine dtype and linear kernels
    in_flight = described.get("vllm_route", "").startswith("in-flight") and backend_quant != "none"
    gates = IN_FLIGHT_GATES if in_flight else GATES[dtype]
    metrics.update_context(**described, **({"engine_dtype": dtype} if described else {}))
    metrics.record("backend_token_match", agree.token_match, new_tokens=NEW_TOKENS, prompts=len(prompts))
    metrics.record("backend_greedy_regret", agree.greedy_regret, "nats", threshold=gates["regret"])
    metrics.record("backend_prefix_match", agree.prefix_match)
    metrics.record("backend_top1_match", agree.top1_match)
    metrics.record(
        "backend_logprob_max_diff",
        agree.logprob_max_diff,
        "nats",
        threshold=gates["logprob_max_diff"],
        top_k=TOP_K,
    )
    metrics.record("backend_logprob_mean_diff", agree.logprob_mean_diff, "nats")
    assert agree.greedy_regret <= gates["regret"], f"greedy choices vs HF argmax: {agree.as_dict()}"
    assert agree.logprob_max_diff <= gates["logprob_max_diff"], f"top-{TOP_K} logprobs vs HF: {agree.as_dict()}"
