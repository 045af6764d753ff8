"""Dynamic block-sparse attention: each query block keeps its local block plus the top-k key blocks.

Key blocks are scored by the dot product of mean-pooled queries and mean-pooled keys of each block
(the selection rule of MInference / NSA-style block selection, without training). Two paths compute
the same thing: a dense boolean mask fed to SDPA (any device), and a FlexAttention `BlockMask`
built from the kept blocks (CUDA prefill, where skipping blocks saves work).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from pytest_attnlab.attention.base import KernelVariant
from pytest_attnlab.attention.variants.dense import as_attention, combine, masked_attention, positions, repeat_kv


def _pool(x: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of x[..., t, :] over the t that share a block id: [b, h, t, d] -> [b, h, n, d]."""
    total = x.new_zeros(*x.shape[:2], n, x.shape[-1]).index_add_(2, ids, x)
    count = torch.bincount(ids, minlength=n).clamp(min=1).to(x.dtype)
    return total / count[:, None]


def kept_blocks(query: torch.Tensor, key: torch.Tensor, block: int, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean [b, h, query blocks, key blocks] of kept blocks, and the absolute index of each query block."""
    heads, q_len, k_len = query.shape[1], query.shape[2], key.shape[2]
    qpos, kpos = positions(q_len, k_len, query.device)
    qb, kb = qpos // block, kpos // block
    n_kb = int(kb[-1]) + 1
    q_ids = qb - qb[0]
    n_qb = int(q_ids[-1]) + 1
    pooled_q = _pool(query.float(), q_ids, n_qb)
    pooled_k = _pool(repeat_kv(key, heads).float(), kb, n_kb)
    scores = pooled_q @ pooled_k.transpose(-1, -2)
    qblocks = qb[0] + torch.arange(n_qb, device=query.device)
    kblocks = torch.arange(n_kb, device=query.device)
    causal = kblocks[None, :] <= qblocks[:, None]
    local = kblocks[None, :] == qblocks[:, None]
    scores = scores.masked_fill(~causal, float("-inf")).masked_fill(local, float("inf"))
    chosen = scores.topk(min(topk + 1, n_kb), dim=-1).indices
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, chosen, True) & causal
    return keep, qblocks


def dense_keep(query: torch.Tensor, key: torch.Tensor, block: int, topk: int) -> torch.Tensor:
    """Token-level keep-mask [b, h, q, k]: kept blocks, causal inside."""
    keep, qblocks = kept_blocks(query, key, block, topk)
    qpos, kpos = positions(query.shape[2], key.shape[2], query.device)
    rows = keep[:, :, qpos // block - qblocks[0]]
    return rows[..., kpos // block] & (kpos[None, :] <= qpos[:, None])


def block_mask(query: torch.Tensor, key: torch.Tensor, block: int, topk: int) -> Any:
    """The same selection as a FlexAttention BlockMask (prefill: query length == key length)."""
    from torch.nn.attention.flex_attention import BlockMask

    keep, qblocks = kept_blocks(query, key, block, topk)
    kblocks = torch.arange(keep.shape[-1], device=keep.device)
    full = keep & (kblocks[None, :] < qblocks[:, None])  # strictly below the diagonal: no mask needed
    full_idx = torch.argsort((~full).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    diagonal = (kblocks[None, :] == qblocks[:, None]).expand_as(keep)  # causal inside: needs the mask_mod
    partial_idx = torch.argsort((~diagonal).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    partial_num = torch.ones(keep.shape[:-1], dtype=torch.int32, device=keep.device)

    first = qblocks[0]

    def selected(b: Any, h: Any, q: Any, kv: Any) -> Any:
        # the block structure lets compiled kernels skip blocks; eager flex applies only the
        # mask_mod, so it must encode the whole selection too
        return keep[b, h, q // block - first, kv // block] & (q >= kv)

    return BlockMask.from_kv_blocks(
        partial_num,
        partial_idx,
        full.sum(-1).to(torch.int32),
        full_idx,
        BLOCK_SIZE=block,
        mask_mod=selected,
        seq_lengths=(query.shape[2], key.shape[2]),
    )


@functools.cache
def _compiled_flex() -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def kernel_tiles(block: int) -> dict[str, int]:
    """Tile sizes of the compiled flex kernel that divide the mask's blocks: its defaults (64-128 rows
    on Hopper) refuse a 32-token BlockMask ("Q and KV block size must be divisible by BLOCK_M and
    BLOCK_N"). The largest power of two up to 64 that divides `block`; the kernel needs 16 or more."""
    tile = min(block & -block, 64)
    return {"BLOCK_M": tile, "BLOCK_N": tile}


def flex_path(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    block: int,
    topk: int,
    scaling: float | None,
    compiled: bool = True,
) -> torch.Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    fn = _compiled_flex() if compiled else flex_attention
    mask = block_mask(query, key, block, topk)
    extra = {"kernel_options": kernel_tiles(block)} if compiled else {}
    out = fn(query, key, value, block_mask=mask, scale=scaling, enable_gqa=key.shape[1] != query.shape[1], **extra)
    return out.transpose(1, 2).contiguous()


def block_sparse(block: int, topk: int) -> KernelVariant:
    """`block_sparse(64, 4)` -> `block_sparse_b64_k4`: local block + the 4 best earlier key blocks."""
    if block < 1 or topk < 0:
        raise ValueError(f"block_sparse: block must be >= 1 and topk >= 0 (got {block}, {topk})")
    name = f"block_sparse_b{block}_k{topk}"

    def attend(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, mask: Any, scaling: Any, **kw) -> Tensor:
        q_len, k_len = query.shape[2], key.shape[2]
        use_flex = query.is_cuda and q_len == k_len and q_len % block == 0 and mask is None
        if use_flex and kernel_tiles(block)["BLOCK_M"] >= 16:
            return flex_path(query, key, value, block, topk, scaling)
        return masked_attention(query, key, value, combine(dense_keep(query, key, block, topk), mask), scaling)

    return KernelVariant(name, fn=as_attention(name, attend), params={"block": block, "topk": topk})
