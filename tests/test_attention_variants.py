"""Fast checks of the variants on the tiny random Qwen2 (q/k/v bias, 4 heads, 2 KV heads)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from pytest_attnlab.attention import (
    ATTENTION,
    applied,
    block_sparse,
    gqa,
    linear_attention,
    mla,
    sliding_window,
)
from pytest_attnlab.models import random_models
from pytest_attnlab.registry import UnknownNameError


@pytest.fixture(scope="module")
def tiny():
    return random_models.build("tiny-qwen2", attn_implementation="sdpa")


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 1000, (2, 40), generator=torch.Generator().manual_seed(1))


def logits(model, ids, variant=None):
    with torch.inference_mode():
        if variant is None:
            return model(ids).logits
        with applied(model, variant):
            return model(ids).logits


def test_factories_name_variants():
    assert sliding_window(256).name == "sliding_window_256"
    assert sliding_window(256, sinks=4).name == "sliding_window_256_sink4"
    assert block_sparse(64, 4).name == "block_sparse_b64_k4"
    assert gqa(1).name == "mqa" and gqa(2).name == "gqa_2"
    assert mla(128).name == "mla_128" and mla(64, joint=True).name == "mla_joint_64"
    assert linear_attention("hedgehog", "recurrent").name == "linear_hedgehog_recurrent"
    with pytest.raises(UnknownNameError, match="choose from: elu, hedgehog"):
        linear_attention("relu")


@pytest.mark.parametrize(
    "variant", [sliding_window(40), block_sparse(8, 10), gqa(2), mla(64, joint=True)], ids=lambda v: v.name
)
def test_full_budget_is_dense_on_tiny_qwen2(tiny, ids, variant):
    assert_close(logits(tiny, ids, variant), logits(tiny, ids), rtol=1e-4, atol=1e-4)


def test_swap_in_and_out_is_bit_identical(tiny, ids):
    before = logits(tiny, ids)
    for name in ATTENTION.names():
        if not ATTENTION.get(name).unavailable(tiny):
            logits(tiny, ids, name)
    assert torch.equal(logits(tiny, ids), before)


def test_unavailable_variant_raises_with_reason(tiny):
    with pytest.raises(ValueError, match="g=3 must divide the model's 2 KV heads"):
        with applied(tiny, "gqa_3"):
            pass


def test_mqa_pools_heads_and_reports_costs(tiny, ids):
    with applied(tiny, "mqa") as a:
        k_proj = tiny.model.layers[0].self_attn.k_proj
        out = tiny(ids).logits
    original = tiny.model.layers[0].self_attn.k_proj
    assert k_proj.out_features == original.out_features // 2
    assert_close(k_proj.weight, original.weight.view(2, 1, 16, 64).mean(0).view(16, 64))
    assert a.kv_reduction == pytest.approx(0.5)
    assert a.attn_params_after < a.attn_params_before
    assert torch.isfinite(out).all()


def test_linear_decode_with_full_kv_cache_matches_full_pass(tiny, ids):
    """Decode through a normal DynamicCache (keys of the prefix + one new query) equals one full pass."""
    from pytest_attnlab.generation import decode_loop

    with applied(tiny, linear_attention("elu")), torch.inference_mode():
        gen = decode_loop(tiny, ids[:1, :20], 5)
        full = tiny(torch.cat([ids[:1, :20], gen.tokens], 1)).logits
    assert_close(gen.logits, full[:, 19:24], rtol=1e-4, atol=1e-4)
