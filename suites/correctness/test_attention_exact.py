"""Where a variant must equal dense attention (or another form of itself), check it with assert_close."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from pytest_attnlab.attention import (
    applied,
    block_sparse,
    eager,
    gqa,
    linear_attention,
    linear_state_cache,
    mla,
    sliding_window,
)
from pytest_attnlab.attention.base import model_shape
from pytest_attnlab.attention.variants import linear
from pytest_attnlab.attention.variants.block_sparse import dense_keep, flex_path
from pytest_attnlab.attention.variants.dense import masked_attention
from pytest_attnlab.hf_compat import with_cache

# linear attention in an untrained model amplifies float32 summation-order differences over 30 layers;
# the forms themselves agree to 1e-10 in float64 (test_attention_linear_forms_agree)
LINEAR_MODEL = {"rtol": 1e-3, "atol": 2e-3}


@pytest.fixture(scope="module")
def ids(attention_sample, attnlab_model):
    return attention_sample[0][:, :96].to(attnlab_model.device)


@pytest.fixture(scope="module")
def dense_logits(attnlab_model, ids):
    with torch.inference_mode():
        return attnlab_model.model(ids).logits


@pytest.fixture(scope="module")
def same_function(attnlab_model, ids, dense_logits):
    """assert_close tolerance for "the same function through other kernels": 8x the logits gap between
    eager and SDPA attention on the same weights (float32, 2 CPU threads: 1.5e-4 of logits up to 42;
    it grows with bfloat16 and differs between CPUs), and at least 1e-4."""
    noise = (_logits(attnlab_model.model, eager(), ids) - dense_logits).abs().max().item()
    return {"rtol": 1e-4, "atol": max(1e-4, 8 * noise)}


def _runnable(model, variant):
    """Skip with the variant's reason where it cannot run on this model (fused projections, soft-capping...)."""
    reason = variant.unavailable(model)
    if reason:
        pytest.skip(reason)
    return variant


def _logits(model, variant, ids):
    with applied(model, _runnable(model, variant)), torch.inference_mode():
        return model(ids).logits


@pytest.mark.parametrize(
    "variant",
    [sliding_window(96), sliding_window(200, sinks=4), block_sparse(16, 6), block_sparse(32, 99)],
    ids=lambda v: v.name,
)
def test_attention_full_budget_equals_dense(attnlab_model, ids, dense_logits, variant, same_function):
    """A window >= the sequence, or every block kept, is dense attention."""
    assert_close(_logits(attnlab_model.model, variant, ids), dense_logits, **same_function)


def test_attention_gqa_identity(attnlab_model, ids, dense_logits):
    """GQA-g with g = the model's KV heads pools groups of one head: the same model."""
    kv_heads = model_shape(attnlab_model.model)["kv_heads"]  # GPT-NeoX's config has no num_key_value_heads
    assert_close(_logits(attnlab_model.model, gqa(kv_heads), ids), dense_logits, rtol=0, atol=0)


@pytest.mark.parametrize("joint", [False, True], ids=["separate", "joint"])
def test_attention_mla_full_rank_is_lossless(attnlab_model, ids, dense_logits, joint, same_function):
    shape = model_shape(attnlab_model.model)  # config.head_dim is absent on some configs (Qwen2, 5.24)
    rank = shape["kv_heads"] * shape["head_dim"] * (2 if joint else 1)
    assert_close(_logits(attnlab_model.model, mla(rank, joint=joint), ids), dense_logits, **same_function)


@pytest.mark.parametrize("feature", linear.FEATURE_MAPS.names())
def test_attention_linear_forms_agree(feature):
    """parallel, chunked (chunk 7, not dividing the length) and recurrent give the same outputs."""
    fmap, _ = linear.FEATURE_MAPS.get(feature)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 16, generator=g, dtype=torch.float64) for _ in range(3))
    fq, fk = fmap(q), fmap(k)
    par, s_par = linear.parallel(fq, fk, v)
    chk, s_chk = linear.chunked(fq, fk, v, chunk=7)
    rec, s_rec = linear.recurrent(fq, fk, v)
    assert_close(chk, par, rtol=1e-10, atol=1e-12)
    assert_close(rec, par, rtol=1e-10, atol=1e-12)
    assert_close(s_rec.s, s_par.s, rtol=1e-10, atol=1e-12)
    assert s_chk.length == s_rec.length == 50


@pytest.fixture(scope="module")
def fp32_model(attnlab_model, model_factory):
    """The model under test in float32. The linear-attention forms run in float32 inside; in a bfloat16
    model each layer rounds their (float32-close) outputs differently, and 30 layers of an untrained
    linear attention amplify that far past any tolerance (H200, bf16: up to 3.8 in the logits)."""
    if attnlab_model.dtype == torch.float32:
        return attnlab_model.model
    return model_factory(dtype=torch.float32).model


def test_attention_linear_forms_agree_in_the_model(fp32_model, ids):
    model, short = fp32_model, ids[:, :40]
    outs = {f: _logits(model, linear_attention("elu", f), short) for f in ("parallel", "chunked", "recurrent")}
    assert_close(outs["chunked"], outs["parallel"], **LINEAR_MODEL)
    assert_close(outs["recurrent"], outs["parallel"], **LINEAR_MODEL)


def test_attention_linear_decode_state_is_constant(fp32_model, ids):
    """With LinearStateCache, decode matches the full-sequence pass and the state does not grow."""
    model = fp32_model
    with applied(model, _runnable(model, linear_attention("elu"))), torch.inference_mode():
        full = model(ids[:, :48]).logits
        cache = linear_state_cache()
        out = model(ids[:, :32], **with_cache(model, cache), use_cache=True)
        sizes = [linear.state_bytes(model)]
        steps = [out.logits[:, -1]]
        for t in range(32, 48):
            out = model(ids[:, t : t + 1], **with_cache(model, cache), use_cache=True)
            steps.append(out.logits[:, -1])
            sizes.append(linear.state_bytes(model))
    assert_close(torch.stack(steps[:-1], 1), full[:, 31:47], **LINEAR_MODEL)
    assert len(set(sizes)) == 1 and sizes[0] > 0, sizes
    assert all(layer.keys.numel() == 0 for layer in cache.layers)


def test_attention_block_sparse_flex_path_matches_dense_path():
    """The FlexAttention BlockMask path selects and computes exactly what the dense-mask path does."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 128, 16, generator=g)
    k, v = (torch.randn(1, 2, 128, 16, generator=g) for _ in range(2))
    dense = masked_attention(q, k, v, dense_keep(q, k, 16, 2), None)
    flex = flex_path(q, k, v, 16, 2, None, compiled=q.is_cuda)
    assert_close(flex, dense, rtol=1e-5, atol=1e-5)
    assert dense_keep(q, k, 16, 2).float().mean() < 0.5  # the selection actually dropped blocks
