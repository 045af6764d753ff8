"""Sliding-window attention with attention sinks (StreamingLLM, Xiao et al. 2023).

Query i attends to key j when j <= i and (i - j < window or j < sinks): the last `window` tokens
plus the first `sinks` tokens, which absorb attention mass in trained models. With eviction the
cache keeps at most window + sinks tokens; here the full cache is kept and masked (same outputs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pytest_attnlab.attention.base import KernelVariant, KVCacheInfo, dense_kv
from pytest_attnlab.attention.variants.dense import as_attention, combine, masked_attention, positions


def window_mask(q_len: int, k_len: int, window: int, sinks: int, device: torch.device) -> torch.Tensor:
    qpos, kpos = (p.to(torch.int32) for p in positions(q_len, k_len, device))
    dist = qpos[:, None] - kpos[None, :]
    return (dist >= 0) & ((dist < window) | (kpos[None, :] < sinks))


def sliding_window(window: int, sinks: int = 0) -> KernelVariant:
    """`sliding_window(256)` -> `sliding_window_256`; with `sinks=4` -> `sliding_window_256_sink4`."""
    if window < 1 or sinks < 0:
        raise ValueError(f"sliding_window: window must be >= 1 and sinks >= 0 (got {window}, {sinks})")
    name = f"sliding_window_{window}" + (f"_sink{sinks}" if sinks else "")

    def attend(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, mask: Any, scaling: Any, **kw) -> Tensor:
        keep = window_mask(query.shape[2], key.shape[2], window, sinks, query.device)[None, None]
        return masked_attention(query, key, value, combine(keep, mask), scaling)

    def kv(model: nn.Module) -> KVCacheInfo:
        return KVCacheInfo(dense_kv(model).bytes_per_token, cap_tokens=window + sinks)

    return KernelVariant(name, fn=as_attention(name, attend), kv=kv, params={"window": window, "sinks": sinks})
