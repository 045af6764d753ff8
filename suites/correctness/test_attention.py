"""Attention variants on the model under test: quality vs dense, KV-cache size, hot swap and back.

pytest suites/correctness -k attention --attnlab-attn all
"""

from __future__ import annotations

import math

import pytest
import torch

from pytest_attnlab.attention import ATTENTION, applied
from pytest_attnlab.attention.evaluate import greedy_agreement, measure
from pytest_attnlab.generation import decode_loop
from pytest_attnlab.hf_compat import with_cache

GREEDY_PROMPT, GREEDY_TOKENS = 128, 16


@pytest.fixture(scope="session")
def greedy_reference(attnlab_model, attention_sample):
    ids, _ = attention_sample
    return decode_loop(attnlab_model.model, ids[:, :GREEDY_PROMPT], GREEDY_TOKENS).tokens


def test_attention_variant_quality(attnlab_model, attention_patch, attention_sample, greedy_reference, metrics):
    """Each selected variant vs dense sdpa on 512 tokens of the embedded sample: recorded, not gated."""
    ids, reference = attention_sample
    model = attnlab_model.model
    with attention_patch.apply(model) as a:
        q = measure(model, ids, reference)
        agree = greedy_agreement(model, ids[:, :GREEDY_PROMPT], greedy_reference)
    cost = a.report()
    metrics.record("logits_cosine", q.logits_cosine)
    metrics.record("min_layer_cosine", q.min_layer_cosine, first_divergent=q.layer_diff.first_divergent)
    metrics.record("perplexity", q.perplexity, tokens=ids.shape[1])
    metrics.record("top1_agreement", q.top1_agreement)
    metrics.record("greedy_agreement", agree, tokens=GREEDY_TOKENS)
    metrics.record("forward_seconds", q.forward_seconds, "s", tokens=ids.shape[1])
    metrics.record(
        "kv_bytes_per_token",
        cost["kv_bytes_per_token_after"],
        "B",
        cap_tokens=cost["kv_cap_tokens"],
        state_bytes=cost["kv_state_bytes"],
    )
    metrics.record("attn_params", cost["attn_params_after"], before=cost["attn_params_before"])
    metrics.table(f"{attention_patch.name}: per-layer diff vs dense", q.layer_diff.table())
    assert math.isfinite(q.perplexity) and math.isfinite(q.logits_cosine), q.as_dict()
    assert 0.0 <= q.top1_agreement <= 1.0


def test_attention_swap_back_is_bit_identical(attnlab_model, attention_sample):
    """Swapping every runnable variant in and out of one loaded model leaves its logits bit-identical."""
    ids = attention_sample[0][:, :64]
    model = attnlab_model.model
    with torch.inference_mode():
        before = model(ids).logits
        swapped = []
        for name in ATTENTION.names():
            if ATTENTION.get(name).unavailable(model):
                continue
            with applied(model, name):
                model(ids)
            swapped.append(name)
        after = model(ids).logits
    assert len(swapped) >= 2, swapped
    assert torch.equal(before, after), f"logits changed after swapping {swapped} in and out"
    assert model.config._attn_implementation == attnlab_model.options.attn_implementation


@pytest.mark.parametrize("name", [n for n in ATTENTION.names() if ATTENTION.get(n).kind == "conversion"])
def test_attention_conversion_cache_holds_what_it_reports(attnlab_model, attention_sample, name, metrics):
    """Measured DynamicCache bytes per token after a prefill equal the variant's reported KV bytes/token."""
    from transformers import DynamicCache

    ids = attention_sample[0][:, :32]
    model = attnlab_model.model
    variant = ATTENTION.get(name)
    if variant.unavailable(model):
        pytest.skip(variant.unavailable(model))
    cache = DynamicCache(config=model.config)
    with applied(model, variant) as a, torch.inference_mode():
        model(ids, **with_cache(model, cache), use_cache=True)
    measured = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    per_token = measured / ids.shape[1]
    metrics.update_context(attention=name)
    for key, value in a.report().items():
        if key != "attention" and value is not None:
            metrics.record(key, value)
    assert per_token == a.kv_after.bytes_per_token, (per_token, a.report())
