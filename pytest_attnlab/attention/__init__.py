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
__getattr__, __all__ = exports(
    __name__,
    {
        ".builtin": "ATTENTION register",
        ".swap": "Applied applied",
        ".base": "AttentionVariant ConversionVariant KVCacheInfo KernelVariant",
        ".variants.block_sparse": "block_sparse",
        ".variants.baselines": "eager flex sdpa",
        ".variants.gqa": "gqa",
        ".variants.linear": "linear_attention linear_state_cache",
        ".variants.mla": "mla",
        ".variants.sliding_window": "sliding_window",
    },
)
