"""Triton GEMV kernels for the fast path's decode step at batch 1 (issue 18): y = x @ W.T for a few rows.

Why not cuBLAS: at batch 1 a decode step is ~150 GEMVs of 1-600 MB. In a CUDA graph on the H200,
cuBLAS runs the Qwen2.5-3B shape's q/k/v, o, gate/up (with its silu * up) and down at 33 / 29 / 67 / 59 %
of the bandwidth limit; these kernels, with launch shapes from a sweep (`config`), at 58 / 50 / 86 / 78 %
(suites/perf/test_decode_gemv.py; docs/perf.md).

- `dense`: W [N, K] in the activation dtype, optional bias; float32 accumulation as [BLOCK_N, BLOCK_K]
  partial products summed once after the loop, one rounding at the end, as cuBLAS does.
- `dense_silu_mul`: the fused gate/up weight [2I, K] -> silu(x @ Wg.T) * (x @ Wu.T) [.., I]; gate and
  up are rounded to the activation dtype, then silu, then the product, as HF's op-by-op MLP does.
- `norm=(weight, eps)` on either: HF's RMSNorm of x in the prologue (a first pass over the row for its
  statistics); `residual=` on `dense`: the residual added in the epilogue (--attnlab-perf-fast-gemv
  triton-fused). `qkv_rope_cache`: the q/k/v GEMV of one token with its RMSNorm, RoPE and both cache
  writes, a program holding columns j and j + D/2 of one head.
The one-row kernels take one row of x a program. 2 to ROWS_MAX rows (batch 2-32 decode) go to their tl.dot
twins (`_gemm_rows_kernel`, `_qkv_rope_rows_kernel`), whose programs multiply every row of x by their
weight tile, padded to 16 rows (tl.dot's minimum): the weight is read once for all rows, as at batch 1, with
the same prologue and epilogues; more rows (a prefill) go to cuBLAS. On Hopper the kernels use
programmatic dependent launch: one may start while the previous kernel finishes, loading its first
weight tile before it waits for the previous kernel's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from pytest_attnlab.paths.base import GEMV_CONFIG

#: rows of x the kernels take: one with the GEMV kernels, 2 to ROWS_MAX with their tl.dot twins
MAX_ROWS = 32
#: rows the fast path's dense format sends to these kernels: more (a prefill) go to cuBLAS
DENSE_MAX_ROWS = MAX_ROWS
#: tl.dot's smallest tile side: the rows of x are padded to it
MIN_DOT = 16

try:  # programmatic dependent launch (Hopper): triton >= 3.4
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - older triton: Config.pdl stays False
    gdc_launch_dependents = gdc_wait = None


@dataclass(frozen=True)
class Config:
    block_n: int  # output rows a program computes
    block_k: int  # input columns a loop step reads
    warps: int
    stages: int = 1  # triton's software pipelining depth of the loop
    # programmatic dependent launch: the kernel may start while the previous one finishes, loading its
    # first weight tile before it waits for the previous kernel's output (x)
    pdl: bool = False
    # split-K (the tl.dot kernels, 2+ rows): `split` programs share an output tile, each over 1/split of K, so
    # a short weight (o, down, q/k/v: 128-160 tiles of 16 rows) still has programs on every SM
    split: int = 1

    @classmethod
    def parse(cls, text: str, pdl: bool) -> Config:
        """`1x1024w4`, `2x2048w4s3pdl` (perf.options.GEMV_CONFIG); without pdl/nopdl, `pdl` decides."""

        found = GEMV_CONFIG.match(text)
        if found is None:
            raise ValueError(f"{text!r} is not a GEMV config (BLOCK_NxBLOCK_KwWARPS[sSTAGES][kSPLIT][pdl|nopdl])")
        bn, bk, warps, stages, split, flag = found.groups()
        use_pdl = pdl if flag is None else flag == "pdl"
        return cls(int(bn), int(bk), int(warps), int(stages or 1), use_pdl and pdl_supported(), split=int(split or 1))

    @property
    def label(self) -> str:
        split = f"k{self.split}" if self.split > 1 else ""
        return f"{self.block_n}x{self.block_k}w{self.warps}s{self.stages}{split}{'pdl' if self.pdl else 'nopdl'}"


def pdl_supported() -> bool:
    """Programmatic dependent launch: triton has it and the GPU is Hopper or newer."""
    return gdc_wait is not None and torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9


def config(n: int, k: int, rows: int = 1) -> Config:
    """The launch shape for an [n, k] weight (one program a row of x), from an H200 sweep on the Qwen2.5-3B
    shape (docs/perf.md; rerun it with suites/perf/test_decode_gemv.py --attnlab-perf-gemv-configs): four
    warps, no software pipelining; two output rows a program and 1024 input columns a step for the small q/k/v and o,
    one row for the long rows of down, 2048 columns for the tall gate/up and lm_head. Programmatic
    dependent launch where the GPU has it (compute capability 9.0+). At 2+ rows (the tl.dot kernels): 16 output
    rows a program (tl.dot's least; 32 for gate/up, 64 for lm_head, whose programs are many anyway) and 256
    columns a step, three pipeline stages; the short q/k/v, o and down split K 4 ways, so that their 80-128
    tiles fill the GPU (on an H100 at 8 rows: down 41.2 -> 22.4 us, o 9.6 -> 8.2, the 3B step 4.18 -> 3.67 ms;
    docs/perf.md)."""
    pdl = pdl_supported()
    if rows > 1:
        return Config(64 if n >= 65536 else 32 if n >= 16384 else 16, 256, 4, 3, pdl=pdl, split=1 if n >= 16384 else 4)
    if n >= 65536:  # the lm_head
        return Config(2, 2048, 4, pdl=pdl)
    if n >= 16384:  # gate/up
        return Config(1, 2048, 4, pdl=pdl)
    return Config(1 if k > 4096 else 2, 1024, 4, pdl=pdl)


@triton.jit
def _inv_rms(x_row, K, eps, BLOCK_K: tl.constexpr):
    """HF RMSNorm's rsqrt(mean(x^2) + eps) of one row, in float32."""
    rk = tl.arange(0, BLOCK_K)
    ss = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_row + k0 + rk, mask=(k0 + rk) < K, other=0.0).to(tl.float32)
        ss += x * x
    return tl.rsqrt(tl.sum(ss, axis=0) / K + eps)


@triton.jit
def _load_x(x_row, g_ptr, k0, rk, K, inv_rms, NORM: tl.constexpr):
    """Columns k0 + rk of the row as a float32 [1, BLOCK_K]; NORM: of HF's RMSNorm of it,
    weight * (x * inv_rms).to(dtype), both products rounded to the activation dtype as HF's are."""
    k_ok = (k0 + rk) < K
    x = tl.load(x_row + k0 + rk, mask=k_ok, other=0.0)
    if NORM:
        g = tl.load(g_ptr + k0 + rk, mask=k_ok, other=0.0).to(tl.float32)
        x = (g * (x.to(tl.float32) * inv_rms).to(x.dtype).to(tl.float32)).to(x.dtype)
    return x.to(tl.float32)[None, :]


@triton.jit
def _gemv_dense_kernel(
    x_ptr, w_ptr, b_ptr, g_ptr, res_ptr, y_ptr, N, K, eps, stride_xm, stride_wn, stride_ym,
    HAS_BIAS: tl.constexpr, SILU_MUL: tl.constexpr, NORM: tl.constexpr, RESIDUAL: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """One row of x (program axis 1) times BLOCK_N rows of w (axis 0); SILU_MUL: rows N.. are `up`;
    NORM: x through HF's RMSNorm with weight g first; RESIDUAL: res + the (rounded) product."""
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    x_row = x_ptr + tl.program_id(1) * stride_xm
    rk = tl.arange(0, BLOCK_K)
    n_ok = rn < N
    w_rows = w_ptr + rn[:, None] * stride_wn
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    if PDL:
        gdc_launch_dependents()
    # the first step's weights load before waiting on the previous kernel: they do not depend on it
    k_ok = rk < K
    w = tl.load(w_rows + rk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
    if SILU_MUL:
        u = tl.load(w_rows + N * stride_wn + rk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
    if PDL:
        gdc_wait()
    inv_rms = 1.0
    if NORM:
        inv_rms = _inv_rms(x_row, K, eps, BLOCK_K)
    x = _load_x(x_row, g_ptr, 0, rk, K, inv_rms, NORM)
    acc += x * w.to(tl.float32)
    if SILU_MUL:
        acc_up += x * u.to(tl.float32)
    for k0 in range(BLOCK_K, K, BLOCK_K):
        k_ok = (k0 + rk) < K
        x = _load_x(x_row, g_ptr, k0, rk, K, inv_rms, NORM)
        w = tl.load(w_rows + (k0 + rk)[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        acc += x * w.to(tl.float32)
        if SILU_MUL:  # the up rows sit N rows below the gate rows
            u = tl.load(w_rows + N * stride_wn + (k0 + rk)[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
            acc_up += x * u.to(tl.float32)
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)
    out_ty = y_ptr.dtype.element_ty
    if SILU_MUL:  # HF rounds gate, silu(gate), up and their product to the activation dtype in turn
        g = y.to(out_ty).to(tl.float32)
        s = (g / (1.0 + tl.exp(-g))).to(out_ty).to(tl.float32)
        y = s * tl.sum(acc_up, axis=1).to(out_ty).to(tl.float32)
    if RESIDUAL:  # HF: x + linear(h), the linear's output rounded first
        res = tl.load(res_ptr + tl.program_id(1) * stride_ym + rn, mask=n_ok, other=0.0).to(tl.float32)
        y = res + y.to(out_ty).to(tl.float32)
    tl.store(y_ptr + tl.program_id(1) * stride_ym + rn, y.to(out_ty), mask=n_ok)


@triton.jit
def _rope_pair(y_lo, y_hi, cos_ptr, sin_ptr, j, HALF: tl.constexpr, ty: tl.constexpr):
    """HF's RoPE of columns j and j + HALF (float32 values of the activation dtype, the columns on the last
    axis) in the activation dtype `ty`: x * cos + rotate_half(x) * sin, each product and the sum rounded."""
    c_lo = tl.load(cos_ptr + j).to(tl.float32)
    c_hi = tl.load(cos_ptr + HALF + j).to(tl.float32)
    s_lo = tl.load(sin_ptr + j).to(tl.float32)
    s_hi = tl.load(sin_ptr + HALF + j).to(tl.float32)
    r_lo = ((y_lo * c_lo).to(ty).to(tl.float32) + (-y_hi * s_lo).to(ty).to(tl.float32)).to(ty)
    r_hi = ((y_hi * c_hi).to(ty).to(tl.float32) + (y_lo * s_hi).to(ty).to(tl.float32)).to(ty)
    return r_lo, r_hi


@triton.jit
def _gemv_qkv_rope_kernel(
    x_ptr, w_ptr, b_ptr, g_ptr, cos_ptr, sin_ptr, pos_ptr, q_ptr, k_ptr, v_ptr, K, eps, stride_wn, stride_kh,
    stride_vh, HQ: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, HAS_BIAS: tl.constexpr, HB: tl.constexpr,
    BLOCK_K: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """One decode token's attention input: RMSNorm(x) @ [Wq; Wk; Wv].T (+ bias), RoPE on the q and k heads,
    q stored to q_ptr, k and v into the caches [kv_heads, max_len, D] at position pos. A program takes
    HB columns j of one head and their RoPE partners j + D/2, so the rotation needs no other program."""
    HALF: tl.constexpr = D // 2
    head = tl.program_id(0) // (HALF // HB)
    j = (tl.program_id(0) % (HALF // HB)) * HB + tl.arange(0, HB)
    lo = head * D + j
    rk = tl.arange(0, BLOCK_K)
    w_lo = w_ptr + lo[:, None] * stride_wn
    w_hi = w_lo + HALF * stride_wn
    acc_lo = tl.zeros((HB, BLOCK_K), dtype=tl.float32)
    acc_hi = tl.zeros((HB, BLOCK_K), dtype=tl.float32)
    if PDL:
        gdc_launch_dependents()
    k_ok = (rk < K)[None, :]
    wl = tl.load(w_lo + rk[None, :], mask=k_ok, other=0.0)
    wh = tl.load(w_hi + rk[None, :], mask=k_ok, other=0.0)
    if PDL:
        gdc_wait()
    inv_rms = _inv_rms(x_ptr, K, eps, BLOCK_K)
    x = _load_x(x_ptr, g_ptr, 0, rk, K, inv_rms, True)
    acc_lo += x * wl.to(tl.float32)
    acc_hi += x * wh.to(tl.float32)
    for k0 in range(BLOCK_K, K, BLOCK_K):
        k_ok = ((k0 + rk) < K)[None, :]
        x = _load_x(x_ptr, g_ptr, k0, rk, K, inv_rms, True)
        acc_lo += x * tl.load(w_lo + (k0 + rk)[None, :], mask=k_ok, other=0.0).to(tl.float32)
        acc_hi += x * tl.load(w_hi + (k0 + rk)[None, :], mask=k_ok, other=0.0).to(tl.float32)
    y_lo = tl.sum(acc_lo, axis=1)
    y_hi = tl.sum(acc_hi, axis=1)
    if HAS_BIAS:
        y_lo += tl.load(b_ptr + lo).to(tl.float32)
        y_hi += tl.load(b_ptr + lo + HALF).to(tl.float32)
    ty = q_ptr.dtype.element_ty
    y_lo = y_lo.to(ty).to(tl.float32)
    y_hi = y_hi.to(ty).to(tl.float32)
    # HF's RoPE in the activation dtype: x * cos + rotate_half(x) * sin, each product and the sum rounded
    r_lo, r_hi = _rope_pair(y_lo, y_hi, cos_ptr, sin_ptr, j, HALF, ty)
    heads = head + 0 * j  # the head as a [HB] vector, for the selects and store masks
    rotated = heads < HQ + HKV  # q and k heads; v heads are stored as they are
    out_lo = tl.where(rotated, r_lo, y_lo.to(ty))
    out_hi = tl.where(rotated, r_hi, y_hi.to(ty))
    pos = tl.load(pos_ptr)
    is_q = heads < HQ
    is_k = (heads >= HQ) & rotated
    is_v = heads >= HQ + HKV
    q_at = q_ptr + head * D + j
    k_at = k_ptr + (head - HQ) * stride_kh + pos * D + j
    v_at = v_ptr + (head - HQ - HKV) * stride_vh + pos * D + j
    tl.store(q_at, out_lo, mask=is_q)
    tl.store(q_at + HALF, out_hi, mask=is_q)
    tl.store(k_at, out_lo, mask=is_k)
    tl.store(k_at + HALF, out_hi, mask=is_k)
    tl.store(v_at, out_lo, mask=is_v)
    tl.store(v_at + HALF, out_hi, mask=is_v)


@triton.jit
def _inv_rms_rows(x_rows, m_ok, K, eps, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """_inv_rms of each row of a [BLOCK_M] block of rows (x_rows: their row pointers, [BLOCK_M, 1])."""
    rk = tl.arange(0, BLOCK_K)
    ss = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_rows + (k0 + rk)[None, :], mask=m_ok[:, None] & ((k0 + rk) < K)[None, :], other=0.0)
        x = x.to(tl.float32)
        ss += x * x
    return tl.rsqrt(tl.sum(ss, axis=1) / K + eps)


@triton.jit
def _load_x_rows(x_rows, m_ok, g_ptr, k0, rk, K, inv_rms, NORM: tl.constexpr):
    """Columns k0 + rk of the rows as a [BLOCK_M, BLOCK_K] tile in the activation dtype (tl.dot's operand);
    NORM: of HF's RMSNorm of them, with _load_x's roundings."""
    k_ok = (k0 + rk) < K
    x = tl.load(x_rows + (k0 + rk)[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
    if NORM:
        g = tl.load(g_ptr + k0 + rk, mask=k_ok, other=0.0).to(tl.float32)
        x = (g[None, :] * (x.to(tl.float32) * inv_rms[:, None]).to(x.dtype).to(tl.float32)).to(x.dtype)
    return x


@triton.jit
def _split_k_sum(a, b, offs, ok, ws_ptr, cnt_ptr, TILE: tl.constexpr, SPLIT: tl.constexpr, TWO: tl.constexpr):
    """Split-K's reduction, deterministic and without a second kernel: the program with split index
    program_id(1) of output tile program_id(0) stores its float32 partial sums a (and b, TWO) at their
    offsets `offs` (< TILE) in its slot of the workspace [tiles, SPLIT, 2, TILE], then counts itself in the
    tile's counter. The program that counts last gets the sums over the SPLIT slots, in split order (the same
    result every run), `last` True, and sets the counter back to 0 for the next launch (a CUDA graph's replay
    included); the others get `last` False and must store nothing."""
    tile = tl.program_id(0)
    slot = ws_ptr + tile * (SPLIT * 2 * TILE)
    at = slot + tl.program_id(1) * (2 * TILE) + offs
    tl.store(at, a, mask=ok)
    if TWO:
        tl.store(at + TILE, b, mask=ok)
    tl.debug_barrier()  # every thread's partials are written before the count releases them
    last = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel") == SPLIT - 1
    tl.debug_barrier()
    take = tl.where(last, ok, False)  # not ok & last: Triton's interpreter makes that an int mask
    sa = tl.zeros_like(a)
    sb = tl.zeros_like(b)
    for s in tl.static_range(SPLIT):  # .cg: from L2, where the other programs' stores are
        sa += tl.load(slot + s * (2 * TILE) + offs, mask=take, other=0.0, cache_modifier=".cg")
        if TWO:
            sb += tl.load(slot + s * (2 * TILE) + TILE + offs, mask=take, other=0.0, cache_modifier=".cg")
    tl.atomic_xchg(cnt_ptr + tile, 0, mask=last)
    return sa, sb, last


@triton.jit
def _k_run(K, BLOCK_K: tl.constexpr, SPLIT: tl.constexpr):
    """The columns [begin, end) of split program_id(1): whole BLOCK_K steps, the last run shorter or empty."""
    if SPLIT == 1:
        return 0, K
    run = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT) * BLOCK_K
    begin = tl.program_id(1) * run
    return begin, tl.minimum(K, begin + run)


@triton.jit
def _gemm_rows_kernel(
    x_ptr, w_ptr, b_ptr, g_ptr, res_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, K, eps, stride_xm, stride_wn, stride_ym,
    HAS_BIAS: tl.constexpr, SILU_MUL: tl.constexpr, NORM: tl.constexpr, RESIDUAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """_gemv_dense_kernel for M (2..BLOCK_M) rows of x: a program multiplies all of them by its BLOCK_N rows
    of w with tl.dot ([BLOCK_M, BLOCK_K] x [BLOCK_K, BLOCK_N], float32 accumulation), so the weight is read
    once for all rows; the prologue and epilogues are the one-row kernel's, row by row. SPLIT > 1: program
    (tile, s) takes the s-th of SPLIT runs of BLOCK_K columns, and the tile's last program adds them up
    (_split_k_sum) and runs the epilogue."""
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.arange(0, BLOCK_M)
    rk = tl.arange(0, BLOCK_K)
    n_ok, m_ok = rn < N, rm < M
    k_begin, k_end = _k_run(K, BLOCK_K, SPLIT)
    x_rows = x_ptr + rm[:, None] * stride_xm
    w_rows = w_ptr + rn[:, None] * stride_wn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if PDL:
        gdc_launch_dependents()
        gdc_wait()
    inv_rms = tl.zeros((BLOCK_M,), dtype=tl.float32) + 1.0
    if NORM:
        inv_rms = _inv_rms_rows(x_rows, m_ok, K, eps, BLOCK_M, BLOCK_K)
    for k0 in range(k_begin, k_end, BLOCK_K):
        k_ok = (k0 + rk) < K
        x = _load_x_rows(x_rows, m_ok, g_ptr, k0, rk, K, inv_rms, NORM)
        w = tl.load(w_rows + (k0 + rk)[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        acc += tl.dot(x, tl.trans(w))
        if SILU_MUL:  # the up rows sit N rows below the gate rows
            u = tl.load(w_rows + N * stride_wn + (k0 + rk)[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
            acc_up += tl.dot(x, tl.trans(u))
    out_ok = m_ok[:, None] & n_ok[None, :]
    if SPLIT > 1:
        offs = rm[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
        acc, acc_up, last = _split_k_sum(acc, acc_up, offs, out_ok, ws_ptr, cnt_ptr, BLOCK_M * BLOCK_N, SPLIT,
                                         SILU_MUL)  # fmt: skip
        out_ok = tl.where(last, out_ok, False)
    y = acc
    if HAS_BIAS:
        y += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    out_ty = y_ptr.dtype.element_ty
    if SILU_MUL:  # HF's roundings, as in the one-row kernel
        g = y.to(out_ty).to(tl.float32)
        s = (g / (1.0 + tl.exp(-g))).to(out_ty).to(tl.float32)
        y = s * acc_up.to(out_ty).to(tl.float32)
    at = rm[:, None] * stride_ym + rn[None, :]
    if RESIDUAL:
        y = tl.load(res_ptr + at, mask=out_ok, other=0.0).to(tl.float32) + y.to(out_ty).to(tl.float32)
    tl.store(y_ptr + at, y.to(out_ty), mask=out_ok)


@triton.jit
def _qkv_rope_rows_kernel(
    x_ptr, w_ptr, b_ptr, g_ptr, cos_ptr, sin_ptr, pos_ptr, q_ptr, k_ptr, v_ptr, ws_ptr, cnt_ptr, M, K, eps,
    stride_xm, stride_wn, stride_kb, stride_kh, stride_vb, stride_vh, HQ: tl.constexpr, HKV: tl.constexpr,
    D: tl.constexpr, HAS_BIAS: tl.constexpr, HB: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    SPLIT: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """_gemv_qkv_rope_kernel for M (2..BLOCK_M) rows, one token each at the same position (the batch of a
    decode step): a program computes columns j and j + D/2 of one head for every row with tl.dot, and
    writes row m's k and v into cache row m. SPLIT > 1: split-K as in _gemm_rows_kernel."""
    HALF: tl.constexpr = D // 2
    head = tl.program_id(0) // (HALF // HB)
    j = (tl.program_id(0) % (HALF // HB)) * HB + tl.arange(0, HB)
    lo = head * D + j
    rm = tl.arange(0, BLOCK_M)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < M
    x_rows = x_ptr + rm[:, None] * stride_xm
    w_lo = w_ptr + lo[:, None] * stride_wn
    w_hi = w_lo + HALF * stride_wn
    acc_lo = tl.zeros((BLOCK_M, HB), dtype=tl.float32)
    acc_hi = tl.zeros((BLOCK_M, HB), dtype=tl.float32)
    k_begin, k_end = _k_run(K, BLOCK_K, SPLIT)
    if PDL:
        gdc_launch_dependents()
        gdc_wait()
    inv_rms = _inv_rms_rows(x_rows, m_ok, K, eps, BLOCK_M, BLOCK_K)
    for k0 in range(k_begin, k_end, BLOCK_K):
        k_ok = ((k0 + rk) < K)[None, :]
        x = _load_x_rows(x_rows, m_ok, g_ptr, k0, rk, K, inv_rms, True)
        acc_lo += tl.dot(x, tl.trans(tl.load(w_lo + (k0 + rk)[None, :], mask=k_ok, other=0.0)))
        acc_hi += tl.dot(x, tl.trans(tl.load(w_hi + (k0 + rk)[None, :], mask=k_ok, other=0.0)))
    if SPLIT > 1:  # the tile's last program stores; the others' m_ok goes all False
        offs = rm[:, None] * HB + tl.arange(0, HB)[None, :]
        tile_ok = m_ok[:, None] & (offs >= 0)
        acc_lo, acc_hi, last = _split_k_sum(acc_lo, acc_hi, offs, tile_ok, ws_ptr, cnt_ptr, BLOCK_M * HB, SPLIT, True)
        m_ok = tl.where(last, m_ok, False)
    y_lo, y_hi = acc_lo, acc_hi
    if HAS_BIAS:
        y_lo += tl.load(b_ptr + lo).to(tl.float32)[None, :]
        y_hi += tl.load(b_ptr + lo + HALF).to(tl.float32)[None, :]
    ty = q_ptr.dtype.element_ty
    y_lo = y_lo.to(ty).to(tl.float32)
    y_hi = y_hi.to(ty).to(tl.float32)
    r_lo, r_hi = _rope_pair(y_lo, y_hi, cos_ptr, sin_ptr, j, HALF, ty)
    heads = (head + 0 * j)[None, :] + 0 * rm[:, None]  # the head as a [BLOCK_M, HB] tile, for selects and masks
    rotated = heads < HQ + HKV
    out_lo = tl.where(rotated, r_lo, y_lo.to(ty))
    out_hi = tl.where(rotated, r_hi, y_hi.to(ty))
    pos = tl.load(pos_ptr)
    is_q = (heads < HQ) & m_ok[:, None]
    is_k = (heads >= HQ) & rotated & m_ok[:, None]
    is_v = (heads >= HQ + HKV) & m_ok[:, None]
    q_at = q_ptr + rm[:, None] * (HQ * D) + head * D + j[None, :]
    k_at = k_ptr + rm[:, None] * stride_kb + (head - HQ) * stride_kh + pos * D + j[None, :]
    v_at = v_ptr + rm[:, None] * stride_vb + (head - HQ - HKV) * stride_vh + pos * D + j[None, :]
    tl.store(q_at, out_lo, mask=is_q)
    tl.store(q_at + HALF, out_hi, mask=is_q)
    tl.store(k_at, out_lo, mask=is_k)
    tl.store(k_at + HALF, out_hi, mask=is_k)
    tl.store(v_at, out_lo, mask=is_v)
    tl.store(v_at + HALF, out_hi, mask=is_v)


#: split-K's tile counters, one zeroed int32 buffer a device: every launch leaves its counters at 0 again
_COUNTERS: dict[torch.device, torch.Tensor] = {}


def _split_k_buffers(tiles: int, split: int, tile: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The workspace [tiles, split, 2, tile] float32 and the tile counters of a split-K launch (split 1: none
    is touched; small placeholders). The counters live for the process, so that a CUDA graph replays the
    launch without a memset: the kernel resets them."""
    if split == 1:
        return torch.empty(1, dtype=torch.float32, device=device), torch.empty(1, dtype=torch.int32, device=device)
    counts = _COUNTERS.get(device)
    if counts is None or counts.numel() < tiles:
        counts = _COUNTERS[device] = torch.zeros(max(tiles, 4096), dtype=torch.int32, device=device)
    return torch.empty(tiles * split * 2 * tile, dtype=torch.float32, device=device), counts


def _block_m(rows: int) -> int:
    return max(MIN_DOT, triton.next_power_of_2(rows))


def _rows(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] > MAX_ROWS:
        raise ValueError(f"this Triton GEMV takes up to {MAX_ROWS} rows, got {flat.shape[0]}")
    return flat if flat.stride(-1) == 1 else flat.contiguous()


def dense(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    cfg: Config | None = None,
    norm: tuple[torch.Tensor, float] | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """x [..., K] @ weight[N, K].T (+ bias) for up to MAX_ROWS rows of x; `norm` = (weight, eps): of
    HF's RMSNorm of x instead; `residual` [..., N]: plus it, as HF's `residual + linear(h)`."""
    return _dense(x, weight, bias, silu_mul=False, cfg=cfg, norm=norm, residual=residual)


def dense_silu_mul(
    x: torch.Tensor, weight: torch.Tensor, cfg: Config | None = None, norm: tuple[torch.Tensor, float] | None = None
) -> torch.Tensor:
    """silu(x @ gate.T) * (x @ up.T) for weight = [gate; up] [2I, K]: [..., I] (`norm` as in `dense`)."""
    return _dense(x, weight, None, silu_mul=True, cfg=cfg, norm=norm, residual=None)


def _dense(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    silu_mul: bool,
    cfg: Config | None,
    norm: tuple[torch.Tensor, float] | None,
    residual: torch.Tensor | None,
) -> torch.Tensor:
    flat = _rows(x)
    m, k = flat.shape
    n = weight.shape[0] // (2 if silu_mul else 1)
    cfg = cfg or config(weight.shape[0], k, m)
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    res = residual.reshape(m, n) if residual is not None else y
    if res.stride(0) != y.stride(0) or res.stride(-1) != 1:
        res = res.contiguous()
    g, eps = norm if norm is not None else (weight, 0.0)
    extra = {"launch_pdl": True} if cfg.pdl else {}
    args = (flat, weight, bias if bias is not None else weight, g, res, y)
    flags = dict(HAS_BIAS=bias is not None, SILU_MUL=silu_mul, NORM=norm is not None, RESIDUAL=residual is not None)
    # tl.dot's tiles are at least 16 a side: a one-row config's BLOCK_N grows to it at 2+ rows
    block_n = cfg.block_n if m == 1 else max(MIN_DOT, cfg.block_n)
    launch = dict(BLOCK_N=block_n, BLOCK_K=cfg.block_k, PDL=cfg.pdl, num_warps=cfg.warps, num_stages=cfg.stages)
    if m == 1:
        if cfg.split > 1:
            raise ValueError(f"split-K (config {cfg.label}) runs in the 2+ row kernels; this call has one row")
        _gemv_dense_kernel[(triton.cdiv(n, cfg.block_n), 1)](
            *args, n, k, eps, flat.stride(0), weight.stride(0), y.stride(0), **flags, **launch, **extra
        )
    else:
        tiles, block_m = triton.cdiv(n, block_n), _block_m(m)
        ws, counts = _split_k_buffers(tiles, cfg.split, block_m * block_n, x.device)
        _gemm_rows_kernel[(tiles, cfg.split)](
            *args, ws, counts, m, n, k, eps, flat.stride(0), weight.stride(0), y.stride(0), **flags,
            BLOCK_M=block_m, SPLIT=cfg.split, **launch, **extra,
        )  # fmt: skip
    return y.reshape(*x.shape[:-1], n)


def qkv_rope_cache(
    x: torch.Tensor,
    norm: tuple[torch.Tensor, float],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    pos: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    heads: int,
    cfg: Config | None = None,
) -> torch.Tensor:
    """One token a row (batch b = the caches' first dim, 1 to MAX_ROWS): q [b, heads * D] of
    RoPE(RMSNorm(x) @ Wq.T + bq); RoPE(k) and v written into k_cache / v_cache [b, kv_heads, max_len, D] at
    `pos` ([1] tensor, the same position for every row). cos/sin: the position's rows [D]."""
    rows = x.numel() // x.shape[-1]
    if rows != k_cache.shape[0] or rows > MAX_ROWS:
        raise ValueError(
            f"qkv_rope_cache takes one token a cache row, up to {MAX_ROWS}: got x {tuple(x.shape)}, "
            f"cache {tuple(k_cache.shape)}"
        )
    _, kv_heads, _, d = k_cache.shape
    k = x.shape[-1]
    if weight.shape[0] != (heads + 2 * kv_heads) * d or d % 2:
        raise ValueError(f"weight {tuple(weight.shape)} is not [({heads} + 2 * {kv_heads}) * {d}, K]")
    for cache in (k_cache, v_cache):
        if cache.stride(-1) != 1 or cache.stride(-2) != d:
            raise ValueError("the caches' positions must be contiguous rows of D")
    flat = _rows(x)
    cfg = cfg or config(weight.shape[0], k, rows)
    q = torch.empty(rows, heads * d, dtype=x.dtype, device=x.device)
    g, eps = norm
    extra = {"launch_pdl": True} if cfg.pdl else {}
    common = (flat, weight, bias if bias is not None else weight, g, cos.reshape(-1), sin.reshape(-1), pos, q)
    launch = dict(HQ=heads, HKV=kv_heads, D=d, HAS_BIAS=bias is not None, BLOCK_K=cfg.block_k, PDL=cfg.pdl,
                  num_warps=cfg.warps, num_stages=cfg.stages, **extra)  # fmt: skip
    if rows == 1:
        if cfg.split > 1:
            raise ValueError(f"split-K (config {cfg.label}) runs in the 2+ row kernels; this call has one row")
        hb = max(1, cfg.block_n // 2)  # the config's rows a program, half of them each side of D/2
        _gemv_qkv_rope_kernel[((heads + 2 * kv_heads) * (d // 2 // hb),)](
            *common, k_cache, v_cache, k, eps, weight.stride(0), k_cache.stride(1), v_cache.stride(1), HB=hb,
            **launch,
        )  # fmt: skip
    else:
        hb = min(d // 2, max(MIN_DOT, cfg.block_n))  # tl.dot's least columns, within half a head
        tiles, block_m = (heads + 2 * kv_heads) * (d // 2 // hb), _block_m(rows)
        ws, counts = _split_k_buffers(tiles, cfg.split, block_m * hb, x.device)
        _qkv_rope_rows_kernel[(tiles, cfg.split)](
            *common, k_cache, v_cache, ws, counts, rows, k, eps, flat.stride(0), weight.stride(0), k_cache.stride(0),
            k_cache.stride(1), v_cache.stride(0), v_cache.stride(1), HB=hb, BLOCK_M=block_m, SPLIT=cfg.split,
            **launch,
        )  # fmt: skip
    return q.reshape(*x.shape[:-1], heads * d) if rows > 1 else q.reshape(heads * d)
