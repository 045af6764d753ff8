"""Split-KV decode attention in Triton for the fast path (`--attnlab-perf-fast-attention triton`, issue 18).

The math decode attention is three kernels a layer (two cuBLAS batched GEMVs and a softmax); SDPA's fused
kernels parallelise over batch x heads only, a handful of programs at batch 1. Here one kernel splits the
cache into chunks of CHUNK positions, one program per (batch, KV head, chunk) with the KV group's query
heads as the rows of its tiles (GQA without repeating K/V), and writes each chunk's unnormalised output
with its running max and sum; a second kernel combines the chunks (FlashDecoding's scheme), a program per
query row, reading up to SPLIT_BLOCK chunks a load (issue 29: one program per KV head looping over the
chunks took 7.4 us a layer at prompt 512 on the H200). On Hopper both kernels use programmatic dependent
launch, as the GEMVs do. Positions the
step may not see (the `visible` mask, a prefix of the cache) are neither loaded nor counted.

Numerics: scores and the softmax in float32, the probabilities rounded to the value dtype before the
product with V (as the math path does), float32 accumulation, one rounding at the end.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pytest_attnlab.paths.triton_gemv import gdc_launch_dependents, gdc_wait, pdl_supported

#: cache positions a program attends over, and a loop step's
CHUNK, BLOCK_L = 64, 32
#: query rows a tile holds at least (tl.dot's minimum); a KV group's query heads are padded to it
MIN_ROWS = 16
#: chunks the combine kernel weighs in one load (a [SPLIT_BLOCK, D] tile); 32 covers a 2048-position cache
SPLIT_BLOCK = 32


@triton.jit
def _decode_chunk_kernel(
    q_ptr, k_ptr, v_ptr, vis_ptr, part_ptr, stat_ptr, scale, L, G, HKV,
    sqb, sqh, sqg, skb, skh, skl, svb, svh, svl,
    SPLITS: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_L: tl.constexpr, CHUNK: tl.constexpr, D: tl.constexpr,
    PDL: tl.constexpr,
):  # fmt: skip
    bh, split = tl.program_id(0), tl.program_id(1)
    b, h = bh // HKV, bh % HKV
    if PDL:  # launched while the q/k/v kernel finishes; q and the cache rows it writes are read after the wait
        gdc_launch_dependents()
        gdc_wait()
    rg, rd, rl = tl.arange(0, BLOCK_G), tl.arange(0, D), tl.arange(0, BLOCK_L)
    q = tl.load(q_ptr + b * sqb + h * sqh + rg[:, None] * sqg + rd[None, :], mask=rg[:, None] < G, other=0.0)
    m = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    s_sum = tl.zeros((BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_G, D), tl.float32)
    for l0 in range(split * CHUNK, split * CHUNK + CHUNK, BLOCK_L):
        pos = l0 + rl
        seen = (tl.load(vis_ptr + pos, mask=pos < L, other=0) != 0) & (pos < L)
        k = tl.load(k_ptr + b * skb + h * skh + pos[:, None] * skl + rd[None, :], mask=seen[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale
        s = tl.where(seen[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a chunk with nothing seen yet
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m - m_safe)
        v = tl.load(v_ptr + b * svb + h * svh + pos[:, None] * svl + rd[None, :], mask=seen[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        s_sum = s_sum * alpha + tl.sum(p, axis=1)
        m = m_new
    base = bh * SPLITS + split
    tl.store(part_ptr + (base * BLOCK_G + rg[:, None]) * D + rd[None, :], acc)
    tl.store(stat_ptr + (base * 2) * BLOCK_G + rg, m)
    tl.store(stat_ptr + (base * 2 + 1) * BLOCK_G + rg, s_sum)


@triton.jit
def _decode_combine_kernel(
    part_ptr, stat_ptr, out_ptr, HKV, sob, soh, sog,
    SPLITS: tl.constexpr, SPLIT_BLOCK: tl.constexpr, BLOCK_G: tl.constexpr, D: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """One query row g of one (batch, KV head) a program: the chunks' outputs weighted by exp(max - top),
    over SPLIT_BLOCK chunks a load (every chunk's [D] row of that block at once, not one chunk at a time)."""
    bh, g = tl.program_id(0), tl.program_id(1)
    b, h = bh // HKV, bh % HKV
    if PDL:
        gdc_launch_dependents()
        gdc_wait()
    rs, rd = tl.arange(0, SPLIT_BLOCK), tl.arange(0, D)
    top = tl.full((), float("-inf"), tl.float32)
    total = tl.zeros((), tl.float32)
    for s0 in range(0, SPLITS, SPLIT_BLOCK):  # the running max and the sum of exp over the chunks
        ok = (s0 + rs) < SPLITS
        stat = stat_ptr + ((bh * SPLITS + s0 + rs) * 2) * BLOCK_G + g
        m = tl.load(stat, mask=ok, other=float("-inf"))
        s_sum = tl.load(stat + BLOCK_G, mask=ok, other=0.0)
        top_new = tl.maximum(top, tl.max(m, axis=0))
        safe = tl.where(top_new == float("-inf"), 0.0, top_new)  # no chunk saw a position yet
        total = total * tl.exp(top - safe) + tl.sum(s_sum * tl.exp(m - safe), axis=0)
        top = top_new
    top = tl.where(top == float("-inf"), 0.0, top)
    acc = tl.zeros((D,), tl.float32)
    for s0 in range(0, SPLITS, SPLIT_BLOCK):
        ok = (s0 + rs) < SPLITS
        m = tl.load(stat_ptr + ((bh * SPLITS + s0 + rs) * 2) * BLOCK_G + g, mask=ok, other=float("-inf"))
        weight = tl.exp(m - top)  # 0 for a chunk that saw nothing
        parts = part_ptr + ((bh * SPLITS + s0 + rs[:, None]) * BLOCK_G + g) * D + rd[None, :]
        acc += tl.sum(tl.load(parts, mask=ok[:, None], other=0.0) * weight[:, None], axis=0)
    tl.store(out_ptr + b * sob + h * soh + g * sog + rd, (acc / total).to(out_ptr.dtype.element_ty))


def supported(head_dim: int, group: int) -> str:
    """Why the kernel cannot take this shape, or "" when it can."""
    if head_dim < 16 or head_dim > 256 or head_dim & (head_dim - 1):
        return f"head dim {head_dim} is not a power of two in 16..256"
    if group > 64:
        return f"{group} query heads a KV head is more than 64"
    return ""


def decode_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor, scale: float
) -> torch.Tensor:
    """q [B, HKV, G, D] (a KV group's query heads for one new token), k / v [B, HKV, L, D], visible [L]
    bool -> [B, HKV, G, D]: softmax(scale * q k^T over the visible positions) v."""
    if q.stride(-1) != 1:
        q = q.contiguous()
    bsz, hkv, g, d = q.shape
    length = k.shape[2]
    splits = triton.cdiv(length, CHUNK)
    rows = max(MIN_ROWS, triton.next_power_of_2(g))
    part = torch.empty(bsz * hkv * splits * rows * d, device=q.device, dtype=torch.float32)
    stat = torch.empty(bsz * hkv * splits * 2 * rows, device=q.device, dtype=torch.float32)
    out = torch.empty(bsz, hkv, g, d, device=q.device, dtype=q.dtype)
    pdl = pdl_supported()
    extra = {"launch_pdl": True} if pdl else {}
    _decode_chunk_kernel[(bsz * hkv, splits)](
        q, k, v, visible, part, stat, scale, length, g, hkv,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        SPLITS=splits, BLOCK_G=rows, BLOCK_L=BLOCK_L, CHUNK=CHUNK, D=d, PDL=pdl, num_warps=4, **extra,
    )  # fmt: skip
    _decode_combine_kernel[(bsz * hkv, g)](
        part, stat, out, hkv, out.stride(0), out.stride(1), out.stride(2),
        SPLITS=splits, SPLIT_BLOCK=min(SPLIT_BLOCK, triton.next_power_of_2(splits)), BLOCK_G=rows, D=d, PDL=pdl,
        num_warps=4, **extra,
    )  # fmt: skip
    return out
