"""Standalone attention modules (MHA, GQA, MQA, MLA) for module-level benchmarks and KV-size checks.

The seed 001/002 setup: d_model 512, 8 heads. `kv_heads` picks MHA (= heads), GQA-g (g KV heads,
the GQA paper's notation) or MQA (1); `latent` turns on MLA: one shared down-projection to
`latent` values per token (what the cache holds), up-projected to keys and values per head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class AttentionShape:
    d_model: int = 512
    heads: int = 8
    kv_heads: int | None = None  # None: MHA
    latent: int | None = None  # MLA latent size; the cache holds `latent_kv` latents of this size
    latent_kv: int = 2  # 2: separate K and V latents (cache 2r); 1: one joint latent (cache r)

    @property
    def name(self) -> str:
        if self.latent:
            return f"mla_{self.latent}" if self.latent_kv == 2 else f"mla_joint_{self.latent}"
        kv = self.kv_heads or self.heads
        return "mha" if kv == self.heads else "mqa" if kv == 1 else f"gqa_{kv}"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    def kv_elems_per_token(self) -> int:
        """Closed form: 2 * kv_heads * head_dim for MHA/GQA/MQA, latent_kv * latent for MLA."""
        if self.latent:
            return self.latent_kv * self.latent
        return 2 * (self.kv_heads or self.heads) * self.head_dim


class AttentionBlock(nn.Module):
    """Causal self-attention with a grow-only cache list [keys-or-latents, values-or-latents]."""

    def __init__(self, shape: AttentionShape) -> None:
        super().__init__()
        self.shape = s = shape
        d, hd = s.d_model, s.head_dim
        self.q_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        if s.latent:
            self.kv_down = nn.Linear(d, s.latent * s.latent_kv, bias=False)
            self.k_up = nn.Linear(s.latent, d, bias=False)
            self.v_up = nn.Linear(s.latent, d, bias=False)
        else:
            kv = (s.kv_heads or s.heads) * hd
            self.k_proj = nn.Linear(d, kv, bias=False)
            self.v_proj = nn.Linear(d, kv, bias=False)

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        s, (b, t, _) = self.shape, x.shape
        q = self.q_proj(x).view(b, t, s.heads, s.head_dim).transpose(1, 2)
        if s.latent:
            c = self.kv_down(x)
            if cache is not None:
                c = _grow(cache, 0, c)
            ck, cv = (c, c) if s.latent_kv == 1 else c.split(s.latent, dim=-1)
            k, v = self.k_up(ck), self.v_up(cv)
        else:
            k, v = self.k_proj(x), self.v_proj(x)
            if cache is not None:
                k, v = _grow(cache, 0, k), _grow(cache, 1, v)
        n = k.shape[1]
        k = k.view(b, n, -1, s.head_dim).transpose(1, 2)
        v = v.view(b, n, -1, s.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1 and t == n, enable_gqa=k.shape[1] != s.heads)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, s.d_model))


def _grow(cache: list[torch.Tensor], i: int, new: torch.Tensor) -> torch.Tensor:
    while len(cache) <= i:
        cache.append(new[:, :0])
    cache[i] = torch.cat([cache[i], new], dim=1)
    return cache[i]


def cache_bytes(cache: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in cache)


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


#: The seed 001/002 line-up at d_model 512, 8 heads.
SEED_SHAPES = [
    AttentionShape(),
    AttentionShape(kv_heads=1),
    AttentionShape(kv_heads=2),
    AttentionShape(kv_heads=4),
    AttentionShape(latent=256),
    AttentionShape(latent=256, latent_kv=1),
]
