"""The static-KV decode step against HF: greedy tokens on the trained embedded model, logits on a
random Qwen2 (q/k/v bias), for both decode attentions."""

from __future__ import annotations

import pytest
import torch

from pytest_attnlab.generation import decode_loop, hf_generate
from pytest_attnlab.paths import FastPath, PathOptions
from pytest_attnlab.paths import static_decode as sd
from pytest_attnlab.paths.options import FAST_ATTENTION


def test_option_choices_match_implementations():
    assert set(FAST_ATTENTION) == set(sd.DECODE_ATTENTION)


@pytest.mark.parametrize("attention", FAST_ATTENTION)
def test_logits_match_hf_on_random_qwen2(model_factory, attention):
    model = model_factory("random:tiny-qwen2", device="cpu", dtype=torch.float32).model
    ids = torch.randint(16, 4000, (2, 10), generator=torch.Generator().manual_seed(1))
    ref = decode_loop(model, ids, 5)
    sm = sd.from_hf(model)
    try:
        sd.check_decode_attention(sm, attention)
    except sd.UnsupportedModel as exc:  # triton: CUDA only (tests/test_triton_kernels.py runs it on CPU)
        pytest.skip(str(exc))
    sm.decode_attention = attention
    cache = sd.new_cache(sm, 2, 64)
    with torch.no_grad():
        got = [sd.prefill(sm, cache, ids)]
        for i in range(4):
            got.append(sd.decode_one_token(sm, cache, ref.tokens[:, i : i + 1], torch.tensor([10 + i])))
    torch.testing.assert_close(torch.stack(got, dim=1), ref.logits, atol=2e-5, rtol=2e-5)


def test_fusion_keeps_hf_weights_shared(model_factory):
    model = model_factory("random:tiny-qwen2", device="cpu", dtype=torch.float32).model
    sm = sd.from_hf(model)
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.weight.data_ptr() == sm.layers[0].qkv.weight.data_ptr()
    assert sd.from_hf(model).layers[0].qkv.weight.data_ptr() == sm.layers[0].qkv.weight.data_ptr()  # idempotent


def test_greedy_tokens_equal_hf_on_embedded(model_factory):
    from pytest_attnlab.prompts import load_prompts

    loaded = model_factory("embedded", device="cpu", dtype=torch.float32)
    ids = load_prompts()[0].encode(loaded.tokenizer)
    n = 12
    ref = hf_generate(loaded.model, ids, n, do_sample=False, temperature=None, top_p=None, top_k=None).tokens
    path = FastPath(PathOptions())
    path.prepare(loaded.model, 1, ids.shape[1], n)
    got = path.generate(ids, n, lambda: None)
    assert torch.equal(got[:, : ref.shape[1]], ref)


def test_unsupported_architecture_is_named():
    class Cfg:
        model_type = "gpt2"

    class M:
        config = Cfg()

    with pytest.raises(sd.UnsupportedModel, match="llama, qwen2"):
        sd.from_hf(M())
