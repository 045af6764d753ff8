"""Shared pieces of mask-based variants: query/key positions and SDPA under a boolean keep-mask."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


def positions(q_len: int, k_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute positions of queries and keys: the queries are the last `q_len` of `k_len` tokens."""
    kpos = torch.arange(k_len, device=device)
    return kpos[k_len - q_len :], kpos


def repeat_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[b, kv_heads, t, d] -> [b, heads, t, d] (each KV head serves heads // kv_heads query heads)."""
    return x if x.shape[1] == heads else x.repeat_interleave(heads // x.shape[1], dim=1)


def combine(keep: torch.Tensor, attention_mask: Any) -> torch.Tensor:
    """AND the variant's keep-mask with the model's boolean mask (padding), when there is one."""
    if isinstance(attention_mask, torch.Tensor) and attention_mask.dtype == torch.bool:
        return keep & attention_mask[..., -keep.shape[-1] :]
    return keep


def masked_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    keep: torch.Tensor,
    scaling: float | None,
) -> torch.Tensor:
    """Softmax attention restricted to `keep` ([b|1, h|1, q, k], True = attend); returns [b, q, h, d]."""
    heads = query.shape[1]
    out = F.scaled_dot_product_attention(
        query, repeat_kv(key, heads), repeat_kv(value, heads), attn_mask=keep, scale=scaling
    )
    return out.transpose(1, 2).contiguous()


def as_attention(name: str, body: Callable[..., torch.Tensor]) -> Callable[..., tuple[torch.Tensor, None]]:
    """`body(module, q, k, v, mask, scaling, **kw) -> out` as transformers' attention function `name` (no weights)."""

    def attend(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: Any = None, **kw: Any):
        return body(module, query, key, value, attention_mask, scaling, **kw), None

    attend.__name__ = name
    return attend
