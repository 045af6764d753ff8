"""MHA/GQA -> GQA-g (and MQA = GQA-1) by mean-pooling key/value heads (Ainslie et al. 2023, sec. 2.1).

The key and value projections of the heads in each group are averaged into one head, the
uptraining-free conversion of the GQA paper. `g` follows the paper: the number of KV heads after
the conversion (GQA-1 = MQA; g = the current KV-head count is the identity). RoPE acts per head
with the same rotation, so pooling the projections equals pooling the rotated keys.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from pytest_attnlab.attention.base import ConversionVariant, KVCacheInfo, dtype_bytes, model_shape, projections_reason


def pool_linear(proj: nn.Linear, heads: int, groups: int, head_dim: int) -> nn.Linear:
    """A Linear whose output heads are the means of `heads // groups` consecutive heads of `proj`."""
    per = heads // groups
    new = nn.Linear(
        proj.in_features,
        groups * head_dim,
        bias=proj.bias is not None,
        device=proj.weight.device,
        dtype=proj.weight.dtype,
    )
    with torch.no_grad():
        w = proj.weight.view(groups, per, head_dim, proj.in_features)
        new.weight.copy_(w.mean(dim=1).reshape(groups * head_dim, proj.in_features))
        if proj.bias is not None:
            new.bias.copy_(proj.bias.view(groups, per, head_dim).mean(dim=1).reshape(-1))
    return new


def convert(attn: nn.Module, groups: int, kv_heads: int, heads: int, head_dim: int) -> nn.Module:
    """A shallow copy of `attn` (same class and forward, shared q/o projections) with pooled k/v."""
    new = copy.copy(attn)
    new._modules = dict(attn._modules)
    new._parameters = dict(attn._parameters)
    new._buffers = dict(attn._buffers)
    new.k_proj = pool_linear(attn.k_proj, kv_heads, groups, head_dim)
    new.v_proj = pool_linear(attn.v_proj, kv_heads, groups, head_dim)
    new.num_key_value_groups = heads // groups
    for attr in ("num_key_value_heads", "num_kv_heads"):
        if hasattr(new, attr):
            setattr(new, attr, groups)
    return new


def gqa(groups: int) -> ConversionVariant:
    """`gqa(2)` -> `gqa_2`; `gqa(1)` -> `mqa`."""
    if groups < 1:
        raise ValueError(f"gqa: groups must be >= 1 (got {groups})")
    name = "mqa" if groups == 1 else f"gqa_{groups}"

    def check(model: nn.Module) -> str | None:
        s = model_shape(model)
        layout = projections_reason(model, name, ("k_proj", "v_proj"))
        if layout:
            return layout
        if s["kv_heads"] % groups:
            return (
                f"{name}: g={groups} must divide the model's {s['kv_heads']} KV heads "
                f"(possible: {[g for g in range(1, s['kv_heads'] + 1) if s['kv_heads'] % g == 0]})"
            )
        return None

    def run(attn: nn.Module, model: nn.Module) -> nn.Module:
        s = model_shape(model)
        return convert(attn, groups, s["kv_heads"], s["heads"], s["head_dim"])

    def kv(model: nn.Module) -> KVCacheInfo:
        s = model_shape(model)
        return KVCacheInfo(2 * groups * s["head_dim"] * s["layers"] * dtype_bytes(model))

    return ConversionVariant(name, run, check, kv, params={"groups": groups})
