"""`applied(model, name)`: swap an attention variant into a loaded model and restore it on exit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import nn

from pytest_attnlab.attention.base import AttentionVariant, KVCacheInfo, attention_modules, dense_kv
from pytest_attnlab.attention.builtin import ATTENTION


def attention_params(model: nn.Module) -> int:
    """Parameters held by the attention modules (all layers), counting shared tensors once."""
    seen: dict[int, int] = {}
    for _, _, module in attention_modules(model):
        for p in module.parameters():
            seen[id(p)] = p.numel()
    return sum(seen.values())


@dataclass
class Applied:
    """What `applied` yields: the variant and its cost before and after the swap."""

    variant: AttentionVariant
    model: nn.Module
    kv_before: KVCacheInfo
    kv_after: KVCacheInfo
    attn_params_before: int
    attn_params_after: int

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def kv_reduction(self) -> float:
        """Fraction of per-token KV-cache bytes removed (0.75 = 75 % smaller)."""
        return 1.0 - self.kv_after.bytes_per_token / self.kv_before.bytes_per_token

    def report(self) -> dict[str, Any]:
        return {
            "attention": self.name,
            "attn_params_before": self.attn_params_before,
            "attn_params_after": self.attn_params_after,
            "kv_bytes_per_token_before": self.kv_before.bytes_per_token,
            "kv_bytes_per_token_after": self.kv_after.bytes_per_token,
            "kv_cap_tokens": self.kv_after.cap_tokens,
            "kv_state_bytes": self.kv_after.state_bytes,
            "kv_reduction": round(self.kv_reduction, 6),
        }


def resolve(variant: AttentionVariant | str) -> AttentionVariant:
    if isinstance(variant, str):
        return ATTENTION.get(variant)
    return variant


@contextmanager
def applied(model: Any, variant: AttentionVariant | str) -> Iterator[Applied]:
    """Run `model` (an nn.Module or a LoadedModel) with `variant` inside the block.

    Kernel variants switch `config._attn_implementation`; conversions swap each layer's attention
    module for a converted copy. On exit the original implementation and module objects return, so
    logits are bit-identical to never having swapped. Raises ValueError if the variant cannot run.
    """
    module = getattr(model, "model", model) if not isinstance(model, nn.Module) else model
    v = resolve(variant)
    reason = v.unavailable(module)
    if reason:
        raise ValueError(reason)
    before, params_before = dense_kv(module), attention_params(module)
    after = v.kv_cache(module)
    undo = v.install(module)
    try:
        yield Applied(v, module, before, after, params_before, attention_params(module))
    finally:
        undo()
