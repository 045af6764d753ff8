"""A hand-written Llama/Qwen2 decode step over a static KV cache, gpt-fast style.

`prefill`, `decode_one_token` and `decode_n_tokens` are small functions over plain tensors, so the
step can be captured in a CUDA graph (`paths/fast.py`) or wrapped by `torch.compile`. The weights are
the HF model's own: q/k/v and gate/up are fused into one tensor each and the HF modules are pointed
at views of it, so no weight is copied and HF `generate` keeps working on the same storage.
Supported: LlamaForCausalLM and Qwen2ForCausalLM (q/k/v bias) with default RoPE, no sliding window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

SUPPORTED = ("llama", "qwen2")


class UnsupportedModel(ValueError):
    pass


@dataclass
class Layer:
    in_norm: torch.Tensor
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor | None
    o_w: torch.Tensor
    post_norm: torch.Tensor
    gate_up_w: torch.Tensor
    down_w: torch.Tensor


@dataclass
class StaticModel:
    layers: list[Layer]
    embed: torch.Tensor
    norm: torch.Tensor
    lm_head: torch.Tensor
    eps: float
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    scaling: float
    rotary: Any  # the HF rotary embedding module: cos/sin tables come from it, bit for bit
    decode_attention: str = "sdpa"  # a key of DECODE_ATTENTION
    # Token ids never chosen (the EOS ids): the output length is forced, as HF's min_new_tokens does.
    banned: torch.Tensor | None = None


@dataclass
class StaticCache:
    k: list[torch.Tensor]  # per layer [batch, kv_heads, max_len, head_dim]
    v: list[torch.Tensor]
    cos: torch.Tensor  # [max_len, head_dim]
    sin: torch.Tensor

    @property
    def max_len(self) -> int:
        return self.cos.shape[0]


def _fuse(modules: list[Any], attr: str = "weight") -> torch.Tensor:
    """Concatenate the modules' tensors along dim 0 and point each module at its view of the result."""
    parts = [getattr(m, attr) for m in modules]
    adjacent = all(
        a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
        and a.is_contiguous()
        and b.is_contiguous()
        and b.data_ptr() == a.data_ptr() + a.nbytes
        for a, b in zip(parts, parts[1:], strict=False)
    )
    if adjacent:  # fused by an earlier call: rebuild the view over the shared storage
        first = parts[0]
        rows = sum(p.shape[0] for p in parts)
        return torch.as_strided(first.detach(), (rows, *first.shape[1:]), first.stride(), first.storage_offset())
    fused = torch.cat([p.detach() for p in parts], dim=0)
    start = 0
    for m, p in zip(modules, parts, strict=True):
        setattr(m, attr, torch.nn.Parameter(fused[start : start + p.shape[0]], requires_grad=False))
        start += p.shape[0]
    return fused


@torch.no_grad()
def from_hf(model: Any) -> StaticModel:
    cfg = model.config
    if cfg.model_type not in SUPPORTED:
        raise UnsupportedModel(f"the fast decode path supports {', '.join(SUPPORTED)}, not {cfg.model_type!r}")
    if getattr(cfg, "use_sliding_window", False):
        raise UnsupportedModel("the fast decode path has no sliding-window attention")
    rope = getattr(model.model.rotary_emb, "rope_type", "default")
    if rope != "default":
        raise UnsupportedModel(f"the fast decode path supports default RoPE only, not {rope!r}")
    layers = []
    for block in model.model.layers:
        attn, mlp = block.self_attn, block.mlp
        if not all(isinstance(m, torch.nn.Linear) for m in (attn.q_proj, mlp.gate_proj, mlp.down_proj)):
            raise UnsupportedModel("the fast decode path needs plain nn.Linear layers (unquantized)")
        qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
        layers.append(
            Layer(
                in_norm=block.input_layernorm.weight,
                qkv_w=_fuse(qkv),
                qkv_b=_fuse(qkv, "bias") if attn.q_proj.bias is not None else None,
                o_w=attn.o_proj.weight,
                post_norm=block.post_attention_layernorm.weight,
                gate_up_w=_fuse([mlp.gate_proj, mlp.up_proj]),
                down_w=mlp.down_proj.weight,
            )
        )
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return StaticModel(
        layers=layers,
        embed=model.model.embed_tokens.weight,
        norm=model.model.norm.weight,
        lm_head=model.lm_head.weight,
        eps=cfg.rms_norm_eps,
        heads=heads,
        kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        intermediate=cfg.intermediate_size,
        scaling=head_dim**-0.5,
        rotary=model.model.rotary_emb,
        banned=_eos_ids(model),
    )


def _eos_ids(model: Any) -> torch.Tensor | None:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        return None
    ids = eos if isinstance(eos, (list, tuple)) else [eos]
    return torch.tensor(ids, dtype=torch.long, device=model.model.embed_tokens.weight.device)


@torch.no_grad()
def new_cache(sm: StaticModel, batch: int, max_len: int) -> StaticCache:
    ref = sm.embed
    shape = (batch, sm.kv_heads, max_len, sm.head_dim)
    pos = torch.arange(max_len, device=ref.device)[None]
    cos, sin = sm.rotary(torch.empty(1, device=ref.device, dtype=ref.dtype), pos)
    return StaticCache(
        k=[torch.zeros(shape, dtype=ref.dtype, device=ref.device) for _ in sm.layers],
        v=[torch.zeros(shape, dtype=ref.dtype, device=ref.device) for _ in sm.layers],
        cos=cos[0],
        sin=sin[0],
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's LlamaRMSNorm, op for op (float32 statistics, cast back before the weight)."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [batch, T, heads, d]; cos/sin [T, d]: x*cos + rotate_half(x)*sin as HF computes it."""
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _sdpa_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def _math_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain matmul-softmax-matmul: torch.compile fuses the mask and softmax, and the two small
    batched matmuls split over the cache length (SDPA's fused kernels parallelise over batch x heads
    only, a handful of blocks at batch 1)."""
    scores = (q @ k.transpose(-1, -2)).float() * scale
    probs = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1).to(v.dtype)
    return probs @ v


#: how a decode step attends over the static cache: name -> fn(q [b, hkv, g, d], k, v, mask, scale)
DECODE_ATTENTION = {"sdpa": _sdpa_decode, "math": _math_decode}


def _layer(sm: StaticModel, i: int, cache: StaticCache, x: torch.Tensor, pos: torch.Tensor, mask: Any) -> torch.Tensor:
    L = sm.layers[i]
    b, t, _ = x.shape
    hq, hkv, d = sm.heads, sm.kv_heads, sm.head_dim
    qkv = F.linear(rms_norm(x, L.in_norm, sm.eps), L.qkv_w, L.qkv_b).view(b, t, hq + 2 * hkv, d)
    qk = rope(qkv[:, :, : hq + hkv], cache.cos[pos], cache.sin[pos])
    q, k = qk[:, :, :hq].transpose(1, 2), qk[:, :, hq:].transpose(1, 2)
    v = qkv[:, :, hq + hkv :].transpose(1, 2)
    cache.k[i].index_copy_(2, pos, k)
    cache.v[i].index_copy_(2, pos, v)
    if mask is None:  # prefill: causal attention over the prompt's own keys
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=sm.scaling, enable_gqa=hq != hkv)
    else:  # one new token: fold the query heads of a KV group into the query axis (no KV repeat)
        qg = q.reshape(b, hkv, (hq // hkv) * t, d)
        o = DECODE_ATTENTION[sm.decode_attention](qg, cache.k[i], cache.v[i], mask, sm.scaling).reshape(b, hq, t, d)
    x = x + F.linear(o.transpose(1, 2).reshape(b, t, hq * d), L.o_w)
    gate, up = F.linear(rms_norm(x, L.post_norm, sm.eps), L.gate_up_w).split(sm.intermediate, dim=-1)
    return x + F.linear(F.silu(gate) * up, L.down_w)


def forward(sm: StaticModel, cache: StaticCache, ids: torch.Tensor, pos: torch.Tensor, mask: Any) -> torch.Tensor:
    """Logits of the last position, [batch, vocab]."""
    x = F.embedding(ids, sm.embed)
    for i in range(len(sm.layers)):
        x = _layer(sm, i, cache, x, pos, mask)
    return F.linear(rms_norm(x[:, -1], sm.norm, sm.eps), sm.lm_head)


def prefill(sm: StaticModel, cache: StaticCache, ids: torch.Tensor) -> torch.Tensor:
    """Fill cache positions 0..len-1 from the prompt; logits of its last position."""
    pos = torch.arange(ids.shape[1], device=ids.device)
    return forward(sm, cache, ids, pos, None)


def decode_one_token(sm: StaticModel, cache: StaticCache, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """tok [batch, 1] at position pos ([1] tensor, so one CUDA graph serves every step); logits."""
    mask = (torch.arange(cache.max_len, device=tok.device) <= pos).view(1, 1, 1, -1)
    return forward(sm, cache, tok, pos, mask)


def greedy(logits: torch.Tensor, banned: torch.Tensor | None = None) -> torch.Tensor:
    """Argmax per row; `banned` ids are left out (HF's min_new_tokens bans EOS the same way)."""
    if banned is not None:
        logits = logits.index_fill(-1, banned, float("-inf"))
    return logits.argmax(dim=-1, keepdim=True)


def decode_n_tokens(
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    first: torch.Tensor,
    start_pos: int,
    n: int,
    on_token: Callable[[torch.Tensor], None] | None = None,
) -> list[torch.Tensor]:
    """Feed `first` at `start_pos`, then each produced token; `step(tok, pos) -> next tok [batch, 1]`."""
    positions = torch.arange(start_pos, start_pos + n, device=first.device)
    tok, out = first, []
    for i in range(n):
        tok = step(tok, positions[i : i + 1])
        out.append(tok)
        if on_token is not None:
            on_token(tok)
    return out
