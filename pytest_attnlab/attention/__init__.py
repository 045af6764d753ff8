"""Attention variants: a registry of named, hot-swappable patches for loaded HF models.

    from pytest_attnlab.attention import ATTENTION, applied
    with applied(model, "sliding_window_128") as a:
        logits = model(ids).logits
        a.report()  # params and KV-cache bytes per token before/after

Factories (`sliding_window(256)`, `block_sparse(64, 4)`, `linear_attention("elu")`, `gqa(2)`,
`mla(128)`) return named variants; register your own with `ATTENTION.register(v.name, v)` or the
`pytest_attnlab_register_attention` hook. See docs/attention.md.
"""

from __future__ import annotations

from pytest_attnlab.lazy import exports

# Loaded on first use (PEP 562), so that loading the attention sub-plugin imports no torch.
_EXPORTS = {
    "ATTENTION": "pytest_attnlab.attention.builtin",
    "Applied": "pytest_attnlab.attention.swap",
    "AttentionVariant": "pytest_attnlab.attention.base",
    "ConversionVariant": "pytest_attnlab.attention.base",
    "KVCacheInfo": "pytest_attnlab.attention.base",
    "KernelVariant": "pytest_attnlab.attention.base",
    "applied": "pytest_attnlab.attention.swap",
    "block_sparse": "pytest_attnlab.attention.variants.block_sparse",
    "eager": "pytest_attnlab.attention.variants.baselines",
    "flex": "pytest_attnlab.attention.variants.baselines",
    "gqa": "pytest_attnlab.attention.variants.gqa",
    "linear_attention": "pytest_attnlab.attention.variants.linear",
    "linear_state_cache": "pytest_attnlab.attention.variants.linear",
    "mla": "pytest_attnlab.attention.variants.mla",
    "register": "pytest_attnlab.attention.builtin",
    "sdpa": "pytest_attnlab.attention.variants.baselines",
    "sliding_window": "pytest_attnlab.attention.variants.sliding_window",
}
__all__ = sorted(_EXPORTS)

__getattr__ = exports(__name__, _EXPORTS)
