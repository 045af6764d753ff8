"""MHA/GQA -> latent KV (MLA-style) by truncated SVD of the key and value projections.

W_k ~= U_r S_r V_r^T is split into a down-projection (sqrt(S_r) V_r^T: hidden -> r) and an
up-projection (U_r sqrt(S_r): r -> kv_heads * head_dim); likewise W_v. The KV cache holds the
latents (2 r values per token and layer, `joint=False`) or one latent of a joint SVD of [W_k; W_v]
(r values, `joint=True`, DeepSeek-V2's shared c_KV). Keys are rebuilt from the latents each step and
RoPE is applied to them afterwards (no decoupled RoPE: the conversion is training-free), so cached
positions are assumed to be 0..T-1 (unpadded sequences).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from pytest_attnlab.attention.base import (
    ConversionVariant,
    KVCacheInfo,
    dtype_bytes,
    model_shape,
    projections_reason,
)
from pytest_attnlab.hf_compat import pop_cache
from pytest_attnlab.models.anatomy import attention_traits


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(down [rank, in], up [out, rank]) with up @ down the best rank-`rank` approximation of weight."""
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).to(weight.dtype), (u[:, :rank] * root).to(weight.dtype)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


class LatentKVAttention(nn.Module):
    """Drop-in for a HF attention module (same forward signature) whose cache stores K/V latents."""

    def __init__(self, attn: nn.Module, rotary: nn.Module, rank: int, joint: bool) -> None:
        super().__init__()
        self.config, self.layer_idx = attn.config, attn.layer_idx
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        self.num_key_value_groups = attn.num_key_value_groups
        self.attention_dropout, self.is_causal = getattr(attn, "attention_dropout", 0.0), True
        self.sliding_window = getattr(attn, "sliding_window", None)
        self.q_proj, self.o_proj, self.joint, self.rotary = attn.q_proj, attn.o_proj, joint, [rotary]
        self._apply_rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        self._default_attention = sys.modules[type(attn).__module__].eager_attention_forward
        wk, wv = attn.k_proj.weight, attn.v_proj.weight
        self.kv_out = wk.shape[0]
        if joint:
            down, up = svd_factors(torch.cat([wk, wv]), rank)
            self.down = _linear(down)
            bias = torch.cat([attn.k_proj.bias, attn.v_proj.bias]) if attn.k_proj.bias is not None else None
            self.up = _linear(up, bias)
        else:
            k_down, k_up = svd_factors(wk, rank)
            v_down, v_up = svd_factors(wv, rank)
            self.k_down, self.k_up = _linear(k_down), _linear(k_up, attn.k_proj.bias)
            self.v_down, self.v_up = _linear(v_down), _linear(v_up, attn.v_proj.bias)

    def _expand(self, ck: torch.Tensor, cv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.joint:
            kv = self.up(ck)
            return kv[..., : self.kv_out], kv[..., self.kv_out :]
        return self.k_up(ck), self.v_up(cv)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Any]:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        cache = pop_cache(kwargs)

        b, t = hidden_states.shape[:2]
        query = self.q_proj(hidden_states).view(b, t, -1, self.head_dim).transpose(1, 2)
        if self.joint:
            ck = self.down(hidden_states)
            cv = ck.new_zeros(b, t, 0)
        else:
            ck, cv = self.k_down(hidden_states), self.v_down(hidden_states)
        cos, sin = position_embeddings
        query, _ = self._apply_rope(query, query, cos, sin)
        if cache is not None:
            ck, cv = cache.update(ck[:, None], cv[:, None], self.layer_idx)
            ck, cv = ck[:, 0], cv[:, 0]
        k_len = ck.shape[1]
        k, v = self._expand(ck, cv)
        key = k.view(b, k_len, -1, self.head_dim).transpose(1, 2)
        value = v.view(b, k_len, -1, self.head_dim).transpose(1, 2)
        pos = torch.arange(k_len, device=key.device)[None].expand(b, -1)
        kcos, ksin = self.rotary[0](value, pos)
        key, _ = self._apply_rope(key, key, kcos, ksin)
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, self._default_attention)
        out, weights = attend(self, query, key, value, attention_mask, dropout=0.0, scaling=self.scaling, **kwargs)
        return self.o_proj(out.reshape(b, t, -1).contiguous()), weights


def _traits_reason(model: nn.Module, name: str) -> str | None:
    """The latent attention is softmax(q k^T * scaling) v, RoPE on whole heads, keys rebuilt at positions
    0..T-1 of the whole cache, q and k straight from their projections: a model whose attention does
    more (anatomy.attention_traits) would get a different model, so it is refused with what it has."""
    try:
        traits = attention_traits(model)
    except ValueError as exc:  # no decoder stack, or a layout anatomy does not know (UnknownLayout)
        return f"{name}: {exc}"
    if traits:
        found = "; ".join(f"{trait}: {what}" for trait, what in traits.items())
        return f"{name} cannot represent this model's attention, it would build a different model: {found}"
    attn = next(iter(m for n, m in model.named_modules() if n.endswith("self_attn")), None)
    missing = [a for a in ("head_dim", "scaling", "layer_idx") if not hasattr(attn, a)]
    if missing:
        return f"{name} copies {', '.join(missing)} from the attention module; {type(attn).__name__} has none"
    try:
        rotary_module(model)
    except ValueError as exc:
        return f"{name}: {exc}"
    return None


def rotary_module(model: nn.Module) -> nn.Module:
    for name, module in model.named_modules():
        if name.endswith("rotary_emb"):
            return module
    raise ValueError(f"no rotary_emb module in {type(model).__name__}")


def mla(rank: int, joint: bool = False) -> ConversionVariant:
    """`mla(128)` -> `mla_128` (K and V latents of 128 each); `mla(128, joint=True)` -> `mla_joint_128`."""
    if rank < 1:
        raise ValueError(f"mla: rank must be >= 1 (got {rank})")
    name = f"mla_joint_{rank}" if joint else f"mla_{rank}"

    def check(model: nn.Module) -> str | None:
        s = model_shape(model)
        full = s["kv_heads"] * s["head_dim"] * (2 if joint else 1)
        if rank > min(full, s["hidden"]):
            return f"{name}: rank {rank} exceeds the projection rank {min(full, s['hidden'])}"
        layout = projections_reason(model, name, ("q_proj", "k_proj", "v_proj", "o_proj"))
        if layout:
            return layout
        return _traits_reason(model, name)

    def run(attn: nn.Module, model: nn.Module) -> nn.Module:
        return LatentKVAttention(attn, rotary_module(model), rank, joint)

    def kv(model: nn.Module) -> KVCacheInfo:
        s = model_shape(model)
        return KVCacheInfo((1 if joint else 2) * rank * s["layers"] * dtype_bytes(model))

    return ConversionVariant(name, run, check, kv, params={"rank": rank, "joint": joint})
