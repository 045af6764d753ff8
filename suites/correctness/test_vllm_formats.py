"""One quantized state, every checkpoint format vLLM reads it from: the same tokens and logprobs.

The quantizer's packed state is exported as compressed-tensors, GPTQ and AWQ (pytest_attnlab.quant.export);
vLLM converts each layout to its kernel's own, so equal outputs show each export holds the same weights
as read by vLLM's own loaders, not only by ours. Runs only through vLLM (skips with the install hint).
"""

from __future__ import annotations

import pytest

from pytest_attnlab.prompts import ids_for, load_prompts

NEW_TOKENS = 12
TOP_K = 5
#: quantizer -> the formats that can hold it (GPTQ here is symmetric only)
CASES = {
    "rtn-int4-g64-sym": ("compressed-tensors", "gptq", "awq"),
    "rtn-int4-g64-zp": ("compressed-tensors", "awq"),
}
#: same weights, same kernel after vLLM's repacking: differences are summation-order noise at most
MAX_LOGPROB_DIFF = 1e-3


def _logprob_diff(a, b) -> float:
    pairs = ((sa, sb) for ra, rb in zip(a.top, b.top, strict=True) for sa, sb in zip(ra, rb, strict=True))
    return max((abs(sa[t] - sb[t]) for sa, sb in pairs for t in sa.keys() & sb.keys()), default=0.0)


@pytest.mark.parametrize("quant", list(CASES))
def test_every_format_gives_vllm_the_same_weights(quant, attnlab_model, backend_state, metrics):
    from pytest_attnlab.paths.vllm_engine import VLLMUnavailable, import_vllm
    from pytest_attnlab.quant import QuantizerUnavailable, quantize

    try:
        import_vllm()
        qm = quantize(attnlab_model, quant)
    except (VLLMUnavailable, QuantizerUnavailable) as exc:
        pytest.skip(str(exc))
    path = backend_state.path("vllm")
    prompt = ids_for(attnlab_model, next(p for p in load_prompts() if p.id == "chat-math"))
    metrics.update_context(**qm.context(), backend="vllm")
    saved_format = path.export_format
    results = {}
    try:
        for fmt in CASES[quant]:
            path.export_format = fmt
            path.prepare(qm.model, 1, prompt.shape[1], NEW_TOKENS)
            assert path.route.how == f"{fmt} export"
            results[fmt] = path.greedy_logprobs(prompt, NEW_TOKENS, TOP_K)
    finally:
        path.export_format = saved_format
    first, *others = CASES[quant]
    for fmt in others:
        diff = _logprob_diff(results[first], results[fmt])
        same = results[fmt].tokens == results[first].tokens
        metrics.record(
            "vllm_format_logprob_max_diff",
            diff,
            "nats",
            threshold=MAX_LOGPROB_DIFF,
            formats=f"{first} vs {fmt}",
            tokens_equal=same,
        )
        assert same, f"{fmt} vs {first}: {results[fmt].tokens} != {results[first].tokens}"
        assert diff <= MAX_LOGPROB_DIFF, f"{fmt} vs {first}: top-{TOP_K} logprobs differ by {diff:.3g} nats"
