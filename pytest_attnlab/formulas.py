"""Decoder components written from their definitions in float64, for any layout `models.anatomy` reads.

The suites check each module of the real model against these on the tensors that flowed through
it. Norms and activations are registries (`NORM_KINDS`, `ACTIVATIONS`): which formula a module
follows is decided by its class (norms) or the config's activation name, never by running it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from pytest_attnlab.registry import Registry

if TYPE_CHECKING:
    from pytest_attnlab.models.anatomy import MLP, Attention, Shape


@dataclass(frozen=True)
class NormKind:
    """`match(module)`: this formula applies; `formula(x, module)`: the output in float64."""

    match: Callable[[nn.Module], bool]
    formula: Callable[[torch.Tensor, nn.Module], torch.Tensor]


def _eps(module: nn.Module, default: float = 1e-6) -> float:
    return float(getattr(module, "variance_epsilon", getattr(module, "eps", default)))


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _standardise(x: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)  # biased variance, as LayerNorm's definition
    return (x - mean) / torch.sqrt(var + eps)


def _layer_norm(x: torch.Tensor, m: nn.Module) -> torch.Tensor:
    y = _standardise(x, _eps(m, 1e-5))
    if getattr(m, "weight", None) is not None:
        y = y * m.weight.double()
    if getattr(m, "bias", None) is not None:
        y = y + m.bias.double()
    return y


#: RMSNorms that scale by (1 + w), weights stored as offsets from one (Gemma's convention)
OFFSET_RMS_NORMS = (
    "GemmaRMSNorm",
    "Gemma2RMSNorm",
    "Gemma3RMSNorm",
    "VaultGemmaRMSNorm",
    "T5GemmaRMSNorm",
    "RecurrentGemmaRMSNorm",
    "Qwen3NextRMSNorm",
    "Qwen3_5RMSNorm",
    "Qwen3_5MoeRMSNorm",
)

NORM_KINDS: Registry[NormKind] = Registry("norm kind")
NORM_KINDS.register(
    "rms_one_plus_w",
    NormKind(
        lambda m: type(m).__name__ in OFFSET_RMS_NORMS,
        lambda x, m: _rms(x, _eps(m)) * (1.0 + m.weight.double()),
    ),
)
NORM_KINDS.register("layer_norm", NormKind(lambda m: isinstance(m, nn.LayerNorm), _layer_norm))
# OLMo: LayerNorm without weight or bias; its forward fixes eps at 1e-5 (no attribute holds it)
NORM_KINDS.register(
    "layer_norm_no_affine", NormKind(lambda m: type(m).__name__ == "OlmoLayerNorm", lambda x, m: _standardise(x, 1e-5))
)
NORM_KINDS.register(
    "rms",
    NormKind(
        lambda m: type(m).__name__.endswith("RMSNorm") and isinstance(getattr(m, "weight", None), torch.Tensor),
        lambda x, m: _rms(x, _eps(m)) * m.weight.double(),
    ),
)


def norm_kind(module: nn.Module) -> str | None:
    """The NORM_KINDS entry `module` follows, or None when it is not a norm this module knows."""
    return next((n for n in NORM_KINDS.names() if NORM_KINDS.get(n).match(module)), None)


def norm(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    kind = norm_kind(module)
    if kind is None:
        raise ValueError(f"no formula for norm {type(module).__name__}; register one in NORM_KINDS")
    return NORM_KINDS.get(kind).formula(x.double(), module)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


#: config activation name -> its definition in float64
ACTIVATIONS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("activation")
ACTIVATIONS.register("silu", lambda x: x * torch.sigmoid(x))
ACTIVATIONS.register("swish", lambda x: x * torch.sigmoid(x))
ACTIVATIONS.register("gelu", lambda x: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0))))
for _name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
    ACTIVATIONS.register(_name, _gelu_tanh)
ACTIVATIONS.register("relu", torch.relu)


def activation_name(config: object) -> str:
    """The MLP activation a config names (Gemma's `hidden_activation` wins over `hidden_act`)."""
    for attr in ("hidden_activation", "hidden_act", "activation_function"):
        value = getattr(config, attr, None)
        if value:
            return str(value)
    raise ValueError(f"{type(config).__name__} names no MLP activation (hidden_act)")


def mlp(x: torch.Tensor, parts: MLP, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Gated: down(act(gate(x)) * up(x)); plain: down(act(up(x)))."""
    up = parts.up.apply(x)
    hidden = act(parts.gate.apply(x)) * up if parts.gate is not None else act(up)
    return parts.down.apply(hidden)


def rope_closed_form(positions: torch.Tensor, dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of RoPE (Su et al. 2021) for `dim` rotated dims, halves concatenated (HF's layout)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = positions.double()[:, None] * inv_freq[None, :]
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos(), emb.sin()


def rope_theta(config: object) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def apply_rope(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first cos.shape[-1] dims of each head (rotate-half pairing); the rest pass through."""
    r = cos.shape[-1]
    rot, rest = t[..., :r], t[..., r:]
    half = torch.cat([-rot[..., r // 2 :], rot[..., : r // 2]], dim=-1)
    return torch.cat([rot * cos[:, None] + half * sin[:, None], rest], dim=-1)


def attention(
    x: torch.Tensor,
    parts: Attention,
    shape: Shape,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    scaling: float,
    window: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Projections, RoPE, grouped KV heads, causal (optionally windowed, soft-capped) softmax, o_proj.

    `x` is [b, s, hidden]; cos/sin [b, s, rotated dims] as the model's rotary embedding gave them.
    """
    b, s, _ = x.shape
    n, kv, d = shape.heads, shape.kv_heads, shape.head_dim

    def heads(t: torch.Tensor, count: int) -> torch.Tensor:
        return t.view(b, s, count, d).transpose(1, 2)

    q = apply_rope(heads(parts.q.apply(x), n), cos, sin)
    k = apply_rope(heads(parts.k.apply(x), kv), cos, sin)
    v = heads(parts.v.apply(x), kv)
    group = torch.arange(n) // (n // kv)  # query head h reads KV head h // (n / kv)
    scores = q @ k[:, group].transpose(-1, -2) * scaling
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    qi, ki = torch.arange(s)[:, None], torch.arange(s)[None, :]
    keep = ki <= qi
    if window is not None:
        keep &= ki > qi - window  # the newest `window` keys, this one included
    scores = scores.masked_fill(~keep.to(scores.device), float("-inf"))
    ctx = (scores.softmax(-1) @ v[:, group]).transpose(1, 2).reshape(b, s, n * d)
    return parts.o.apply(ctx)


def scaling(config: object, head_dim: int) -> float:
    """The attention score scale from the config: Gemma's query_pre_attn_scalar, else 1/sqrt(head_dim)."""
    pre = getattr(config, "query_pre_attn_scalar", None)
    return float(pre) ** -0.5 if pre else head_dim**-0.5
