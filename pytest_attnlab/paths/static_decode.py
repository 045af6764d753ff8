"""A hand-written Llama/Qwen2 decode step over a static KV cache, gpt-fast style.

`prefill`, `decode_one_token` and `decode_n_tokens` are small functions over plain tensors, so the
step can be captured in a CUDA graph (`paths/fast.py`) or wrapped by `torch.compile`. Each linear is
a weight format of `paths/fast_weights.py`. `weights="fused"` (the default) uses the HF model's own
weights with q/k/v and gate/up fused into one tensor each, the HF modules pointed at views of it, so
no weight is copied and HF `generate` keeps working on the same storage; `"separate"` keeps one GEMV
per HF linear. `quant="int4-g<N>"` packs the decoder linears as RTN int4 (the lm_head stays dense,
as the plugin's rtn quantizers leave it). `gemv` picks the kernels (fast_weights.GEMV_FORMATS): torch's
(cuBLAS, tinygemm) or the Triton GEMVs, whose gate/up kernel also applies silu(gate) * up; with
`triton-fused` a decode layer (one token a row, batch 1-32) runs `layer_forward`'s fused branch (four
fused GEMV kernels).
Supported: LlamaForCausalLM and Qwen2ForCausalLM (q/k/v bias) with default RoPE, no sliding window.

Casts: RMSNorm keeps HF's two (float32 statistics, rounded to the model dtype before the weight),
which bf16 greedy equality with HF needs; RoPE runs in the model dtype (the cos/sin tables are kept
in it); the math decode attention upcasts the scores once, folding the scale and the mask (an
additive bias built once per step) into one op. Per-step tensors (mask, cos/sin rows) are made once
per step, not per layer. Under torch.compile the casts fuse into their neighbours' kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from pytest_attnlab.paths.base import FAST_GEMV, FAST_QUANT, FAST_WEIGHTS, int4_format
from pytest_attnlab.paths.decode_attention import DECODE_ATTENTION
from pytest_attnlab.paths.fast_weights import (
    GEMV_FORMATS,
    Concat,
    Dense,
    Linear,
    UnsupportedGemv,
    UnsupportedShape,
    silu_mul,
)

SUPPORTED = ("llama", "qwen2")


class UnsupportedModel(ValueError):
    pass


@dataclass
class Layer:
    in_norm: torch.Tensor
    qkv: Linear  # output [q | k | v]
    o: Linear
    post_norm: torch.Tensor
    gate_up: Linear  # output [gate | up]
    down: Linear


@dataclass
class StaticModel:
    layers: list[Layer]
    embed: torch.Tensor
    norm: torch.Tensor
    lm_head: Linear
    eps: float
    heads: int
    kv_heads: int
    head_dim: int
    scaling: float
    rotary: Any  # the HF rotary embedding module: cos/sin tables come from it, bit for bit
    decode_attention: str = "sdpa"  # a key of DECODE_ATTENTION
    # Token ids never chosen (the EOS ids): the output length is forced, as HF's min_new_tokens does.
    banned: torch.Tensor | None = None
    weights: str = "fused"  # FAST_WEIGHTS
    quant: str = "none"  # FAST_QUANT
    gemv: str = "torch"  # FAST_GEMV
    # What a decode step runs per layer instead of layer_forward: the fast path's compile scope
    # `layer` puts a torch.compile'd layer_forward here (one graph serves every layer).
    decode_layer: Callable[..., torch.Tensor] | None = None

    def weight_tensors(self) -> list[torch.Tensor]:
        """Every weight tensor a decode step reads whole (the embedding table is only gathered)."""
        out = [self.norm, *self.lm_head.tensors()]
        for L in self.layers:
            out += [L.in_norm, L.post_norm, *L.qkv.tensors(), *L.o.tensors(), *L.gate_up.tensors(), *L.down.tensors()]
        return out

    def step_weight_bytes(self, batch: int) -> int:
        """Bytes of weights one decode step reads: each tensor once (a tied lm_head is the embedding),
        plus the `batch` embedding rows gathered when the embedding is not the lm_head."""
        seen: dict[tuple[int, int], int] = {}
        for t in self.weight_tensors():
            seen[(t.data_ptr(), t.nbytes)] = t.nbytes
        total = sum(seen.values())
        if not any(t.data_ptr() == self.embed.data_ptr() for t in self.lm_head.tensors()):
            total += batch * self.embed.shape[1] * self.embed.element_size()
        return total


@dataclass
class StaticCache:
    k: list[torch.Tensor]  # per layer [batch, kv_heads, max_len, head_dim]
    v: list[torch.Tensor]
    cos: torch.Tensor  # [max_len, head_dim]
    sin: torch.Tensor
    positions: torch.Tensor  # arange(max_len): the decode mask compares it with the step's position

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
def from_hf(model: Any, weights: str = "fused", quant: str = "none", gemv: str = "torch") -> StaticModel:
    """The decode step's view of a HF Llama/Qwen2: `weights` in FAST_WEIGHTS, `quant` in FAST_QUANT,
    `gemv` in FAST_GEMV."""
    if weights not in FAST_WEIGHTS or quant not in FAST_QUANT or gemv not in FAST_GEMV:
        raise ValueError(
            f"weights {weights!r} / quant {quant!r} / gemv {gemv!r}: "
            f"choose from {FAST_WEIGHTS} / {FAST_QUANT} / {FAST_GEMV}"
        )
    cfg = model.config
    if cfg.model_type not in SUPPORTED:
        raise UnsupportedModel(f"the fast decode path supports {', '.join(SUPPORTED)}, not {cfg.model_type!r}")
    if getattr(cfg, "use_sliding_window", False):
        raise UnsupportedModel("the fast decode path has no sliding-window attention")
    rope = getattr(model.model.rotary_emb, "rope_type", "default")
    if rope != "default":
        raise UnsupportedModel(f"the fast decode path supports default RoPE only, not {rope!r}")
    embed = model.model.embed_tokens.weight
    try:
        dense, int4 = GEMV_FORMATS.get(gemv)(embed.device)
    except UnsupportedGemv as exc:
        raise UnsupportedModel(str(exc)) from None
    linear = _linear_maker(quant, embed.dtype, dense, int4)
    layers = []
    for block in model.model.layers:
        attn, mlp = block.self_attn, block.mlp
        if not all(isinstance(m, torch.nn.Linear) for m in (attn.q_proj, mlp.gate_proj, mlp.down_proj)):
            raise UnsupportedModel("the fast decode path needs plain nn.Linear layers (unquantized)")
        qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
        gate_up = [mlp.gate_proj, mlp.up_proj]
        if weights == "separate":
            qkv_l: Linear = Concat([linear(m.weight, m.bias) for m in qkv])
            gate_up_l: Linear = Concat([linear(m.weight, m.bias) for m in gate_up])
        elif quant == "none":  # fused in place: the HF modules become views of the fused tensors
            qkv_l = dense(_fuse(qkv), _fuse(qkv, "bias") if attn.q_proj.bias is not None else None)
            gate_up_l = dense(_fuse(gate_up))
        else:  # fused int4: quantize the concatenation (groups run along the input, so rows are independent)
            qkv_b = torch.cat([m.bias for m in qkv]) if attn.q_proj.bias is not None else None
            qkv_l = linear(torch.cat([m.weight for m in qkv]), qkv_b)
            gate_up_l = linear(torch.cat([m.weight for m in gate_up]), None)
        layers.append(
            Layer(
                in_norm=block.input_layernorm.weight,
                qkv=qkv_l,
                o=linear(attn.o_proj.weight, attn.o_proj.bias),
                post_norm=block.post_attention_layernorm.weight,
                gate_up=gate_up_l,
                down=linear(mlp.down_proj.weight, mlp.down_proj.bias),
            )
        )
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return StaticModel(
        layers=layers,
        embed=model.model.embed_tokens.weight,
        norm=model.model.norm.weight,
        lm_head=dense(model.lm_head.weight),
        eps=cfg.rms_norm_eps,
        heads=heads,
        kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        scaling=head_dim**-0.5,
        rotary=model.model.rotary_emb,
        banned=_eos_ids(model),
        weights=weights,
        quant=quant,
        gemv=gemv,
    )


def _linear_maker(quant: str, dtype: torch.dtype, dense: Any, int4_kind: Any) -> Callable[..., Linear]:
    """weight [out, in], bias -> a Linear in the `quant` format (dense / int4_kind: GEMV_FORMATS')."""
    if quant == "none":
        return dense
    group, zero = int4_format(quant)

    def int4(weight: torch.Tensor, bias: torch.Tensor | None) -> Linear:
        try:
            return int4_kind(weight, bias, group, dtype, zero)
        except UnsupportedShape as exc:
            raise UnsupportedModel(f"--attnlab-perf-fast-quant {quant}: {exc}") from None

    return int4


def dequantized_twin(sm: StaticModel, dtype: torch.dtype | None = None) -> StaticModel:
    """`sm` with every int4 linear replaced by a dense one holding the weight the kernel multiplies by:
    "the same quantized weights dequantized", the int4 kernel's reference. `dtype` None keeps the
    activation dtype (only the int4 matmul differs), as does a `dtype` equal to it: the other linears keep the
    path's own kernels (triton-fused's lm_head GEMV), so the twin differs from `sm` in the int4 matmuls alone.
    Another dtype (torch.float32) casts every tensor of the step, so the twin computes the same math in that
    dtype through plain matmuls (the reference both twins of the int4 gate are measured against)."""
    to = dtype or sm.embed.dtype
    keep = to == sm.embed.dtype  # the activation dtype: the path's own non-int4 kernels stay

    def cast(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(to)

    def dense(lin: Linear) -> Linear:
        dequantized = getattr(lin, "dequantized", None)  # an int4 format
        if dequantized is not None:
            return Dense(dequantized().to(to), cast(lin.bias))
        if isinstance(lin, Concat):
            return Concat([dense(p) for p in lin.parts])
        if keep:
            return lin
        return Dense(lin.weight.to(to), cast(lin.bias))  # type: ignore[attr-defined]

    layers = [replace(ly, in_norm=ly.in_norm.to(to), post_norm=ly.post_norm.to(to), qkv=dense(ly.qkv), o=dense(ly.o),
                      gate_up=dense(ly.gate_up), down=dense(ly.down)) for ly in sm.layers]  # fmt: skip
    return replace(sm, layers=layers, embed=sm.embed.to(to), norm=sm.norm.to(to), lm_head=dense(sm.lm_head),
                   quant="none", gemv=sm.gemv if keep else "torch", decode_layer=None)  # fmt: skip


def int4_compute_dtype(sm: StaticModel) -> torch.dtype:
    """The dtype the int4 kernels multiply in (tinygemm on CUDA: bf16, whatever the model's), else the
    activation dtype: the twin that measures the int4 gate's rounding floor runs in it (paths/int4_gate)."""
    ly = sm.layers[0]
    for lin in (ly.qkv, *getattr(ly.qkv, "parts", ())):
        if hasattr(lin, "dequantized"):
            return lin.dtype  # type: ignore[no-any-return,union-attr]
    return sm.embed.dtype


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
    positions = torch.arange(max_len, device=ref.device)
    cos, sin = sm.rotary(torch.empty(1, device=ref.device, dtype=ref.dtype), positions[None])
    return StaticCache(
        k=[torch.zeros(shape, dtype=ref.dtype, device=ref.device) for _ in sm.layers],
        v=[torch.zeros(shape, dtype=ref.dtype, device=ref.device) for _ in sm.layers],
        cos=cos[0],
        sin=sin[0],
        positions=positions,
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's LlamaRMSNorm, op for op (float32 statistics, cast back before the weight)."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [batch, T, heads, d]; cos/sin [1, T, 1, d]: x*cos + rotate_half(x)*sin as HF computes it."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def check_decode_attention(sm: StaticModel, name: str) -> None:
    """Raise UnsupportedModel when the decode attention `name` cannot run this model where it is."""
    unsupported = getattr(DECODE_ATTENTION[name], "unsupported", None)
    why = unsupported(sm, sm.embed.device) if unsupported is not None else ""
    if why:
        raise UnsupportedModel(why)


def _fused_rows(lin: Linear, head_dim: int) -> int:
    """Rows (tokens of a decode step) `lin`'s fused kernels take at this head width; 0 without them."""
    rows = getattr(lin, "fused_rows", None)
    return rows(head_dim) if rows is not None else 0


def layer_forward(
    sm: StaticModel,
    L: Layer,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    x: torch.Tensor,
    pos: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: Any,
) -> torch.Tensor:
    b, t, _ = x.shape
    hq, hkv, d = sm.heads, sm.kv_heads, sm.head_dim
    if mask is not None and t == 1 and all(_fused_rows(lin, d) >= b for lin in (L.qkv, L.o, L.gate_up, L.down)):
        # one token a row where every linear has the fused kernels (fast_triton.TritonFusedDense): four GEMV
        # kernels and the attention, the norms, RoPE, the cache writes and the residual adds done inside the GEMVs
        # with HF's roundings
        q = L.qkv.norm_qkv_rope_cache(x, L.in_norm, sm.eps, cos, sin, pos, k_cache, v_cache, hq)  # type: ignore[attr-defined]
        o = DECODE_ATTENTION[sm.decode_attention](q.view(b, hkv, hq // hkv, d), k_cache, v_cache, mask, sm.scaling)
        h = L.o.add_to(o.reshape(b, 1, hq * d), x)  # type: ignore[attr-defined]
        return L.down.add_to(L.gate_up.norm_silu_mul(h, L.post_norm, sm.eps), h)  # type: ignore[attr-defined]
    qkv = L.qkv(rms_norm(x, L.in_norm, sm.eps)).view(b, t, hq + 2 * hkv, d)
    qk = rope(qkv[:, :, : hq + hkv], cos, sin)
    q, k = qk[:, :, :hq].transpose(1, 2), qk[:, :, hq:].transpose(1, 2)
    v = qkv[:, :, hq + hkv :].transpose(1, 2)
    k_cache.index_copy_(2, pos, k)
    v_cache.index_copy_(2, pos, v)
    if mask is None:  # prefill: causal attention over the prompt's own keys
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=sm.scaling, enable_gqa=hq != hkv)
    else:  # one new token: fold the query heads of a KV group into the query axis (no KV repeat)
        qg = q.reshape(b, hkv, (hq // hkv) * t, d)
        o = DECODE_ATTENTION[sm.decode_attention](qg, k_cache, v_cache, mask, sm.scaling).reshape(b, hq, t, d)
    x = x + L.o(o.transpose(1, 2).reshape(b, t, hq * d))
    return x + L.down(silu_mul(L.gate_up, rms_norm(x, L.post_norm, sm.eps)))


def forward(sm: StaticModel, cache: StaticCache, ids: torch.Tensor, pos: torch.Tensor, mask: Any) -> torch.Tensor:
    """Logits of the last position, [batch, vocab]."""
    x = F.embedding(ids, sm.embed)
    cos, sin = cache.cos[pos][None, :, None, :], cache.sin[pos][None, :, None, :]  # once per step
    layer = sm.decode_layer if mask is not None and sm.decode_layer is not None else layer_forward
    for L, k_cache, v_cache in zip(sm.layers, cache.k, cache.v, strict=True):
        x = layer(sm, L, k_cache, v_cache, x, pos, cos, sin, mask)
    return sm.lm_head(rms_norm(x[:, -1], sm.norm, sm.eps))


def prefill(sm: StaticModel, cache: StaticCache, ids: torch.Tensor) -> torch.Tensor:
    """Fill cache positions 0..len-1 from the prompt; logits of its last position."""
    pos = torch.arange(ids.shape[1], device=ids.device)
    return forward(sm, cache, ids, pos, None)


def decode_one_token(sm: StaticModel, cache: StaticCache, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """tok [batch, 1] at position pos ([1] tensor, so one CUDA graph serves every step); logits."""
    visible = (cache.positions <= pos).view(1, 1, 1, -1)
    return forward(sm, cache, tok, pos, DECODE_ATTENTION[sm.decode_attention].mask(visible))


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
