"""The fast decode path (static KV cache, hand-written step, CUDA graph on GPU) against HF greedy.

On a trained model (the embedded SmolLM2) the greedy tokens must be the same token for token;
on random weights argmaxes are near-ties, so the per-step logits are compared within tolerance.
"""

from __future__ import annotations

import pytest
import torch

from pytest_attnlab.perf.bench import make_prompt
from pytest_attnlab.perf.paths import FastPath, PathOptions

#: per dtype (atol, rtol) for per-step logits of the static path vs HF with the same tokens fed
LOGIT_TOL = {torch.float32: (2e-4, 2e-4), torch.bfloat16: (0.25, 0.05), torch.float16: (0.05, 0.01)}


def _agreement(ref: torch.Tensor, got: torch.Tensor, eos: int | None) -> int:
    """Tokens that agree, each row compared up to and including its first EOS in `ref`
    (HF stops or pads there; the fast path always decodes the full length)."""
    agree = []
    for r, g in zip(ref, got, strict=True):
        stop = len(r)
        if eos is not None and (r == eos).any():
            stop = int((r == eos).nonzero()[0]) + 1
        diff = (r[:stop] != g[:stop]).nonzero()
        agree.append(int(diff[0]) if len(diff) else stop)
    return min(agree)


@pytest.mark.parametrize("batch", [1, 2], ids=["b1", "b2"])
def test_fast_matches_hf_greedy_on_trained_model(model_factory, perf_settings, metrics, batch):
    from pytest_attnlab.generation import hf_generate
    from pytest_attnlab.models.embedded import EmbeddedModelMissing
    from pytest_attnlab.prompts import load_prompts

    try:
        loaded = model_factory("embedded")
    except EmbeddedModelMissing as exc:
        pytest.skip(str(exc))
    prompts = [p.encode(loaded.tokenizer)[0] for p in load_prompts()[:batch]]
    width = min(len(p) for p in prompts)
    ids = torch.stack([p[-width:] for p in prompts]).to(loaded.device)
    n = 32 if batch == 1 else 12
    eos = loaded.model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    # Both paths produce exactly n tokens: HF through min_new_tokens, the fast path by banning EOS.
    ref = hf_generate(
        loaded.model, ids, n, do_sample=False, temperature=None, top_p=None, top_k=None, min_new_tokens=n
    ).tokens
    fast = FastPath(PathOptions(compile=perf_settings.compile, decode_attention=perf_settings.fast_attention))
    fast.prepare(loaded.model, batch, width, n)
    got = fast.generate(ids, n, lambda: None).cpu()
    agree = _agreement(ref, got[:, : ref.shape[1]], eos)
    expected = _agreement(ref, ref, eos)
    metrics.record("greedy_tokens_agree", agree, "tokens", threshold=expected, batch=batch)
    assert agree == expected, f"fast path diverges from HF greedy at token {agree}: {ref} vs {got}"


@pytest.mark.parametrize("spec", ["random:tiny-qwen2", "model"])
@pytest.mark.parametrize("attention", ["sdpa", "math"])
def test_fast_logits_close_on_random_model(attnlab_session, attnlab_settings, spec, attention):
    if spec == "model" and attnlab_settings.model.source != "random":
        pytest.skip("--attnlab-model is not a random shape (the trained model is checked token for token)")
    from pytest_attnlab.perf.loading import load

    loaded = load(attnlab_session, None if spec == "model" else spec)
    from pytest_attnlab.generation import decode_loop
    from pytest_attnlab.perf import static_decode as sd

    model = loaded.model
    ids = make_prompt(model.config.vocab_size, 2, 24, loaded.device)
    n = 8
    ref = decode_loop(model, ids, n)  # HF forward with a DynamicCache: logits of every step
    sm = sd.from_hf(model)
    sm.decode_attention = attention
    cache = sd.new_cache(sm, ids.shape[0], ids.shape[1] + n)
    with torch.no_grad():
        logits = [sd.prefill(sm, cache, ids)]
        for i in range(n - 1):  # feed HF's tokens, so both see the same sequence
            tok = ref.tokens[:, i : i + 1].to(loaded.device)
            pos = torch.tensor([ids.shape[1] + i], device=loaded.device)
            logits.append(sd.decode_one_token(sm, cache, tok, pos))
    got = torch.stack([x.float().cpu() for x in logits], dim=1)
    atol, rtol = LOGIT_TOL[next(model.parameters()).dtype]
    torch.testing.assert_close(got, ref.logits, atol=atol, rtol=rtol)
