"""The attention-variant registry with the built-in variants registered (imports torch)."""

from __future__ import annotations

from pytest_attnlab.attention.base import AttentionVariant
from pytest_attnlab.attention.variants.baselines import eager, flex, sdpa
from pytest_attnlab.attention.variants.block_sparse import block_sparse
from pytest_attnlab.attention.variants.gqa import gqa
from pytest_attnlab.attention.variants.linear import linear_attention
from pytest_attnlab.attention.variants.mla import mla
from pytest_attnlab.attention.variants.sliding_window import sliding_window
from pytest_attnlab.registry import Registry

#: name -> variant. The name is the test id and the CSV `attention` value.
ATTENTION: Registry[AttentionVariant] = Registry("attention variant")


def register(variant: AttentionVariant, *, replace: bool = False) -> AttentionVariant:
    return ATTENTION.register(variant.name, variant, replace=replace)


BUILTIN = [
    eager(),
    sdpa(),
    flex(),
    sliding_window(64),
    sliding_window(64, sinks=4),
    block_sparse(32, 2),
    block_sparse(32, 4),
    linear_attention("elu"),
    linear_attention("hedgehog"),
    gqa(1),
    gqa(3),
    mla(128),
    mla(128, joint=True),
    mla(256, joint=True),
]
for _variant in BUILTIN:
    register(_variant)
