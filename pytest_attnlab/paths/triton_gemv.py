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
Each program takes one row of x (grid axis 1), so more rows re-read the weight: the fast path sends
only single-row GEMVs here (DENSE_MAX_ROWS) and the rest to cuBLAS. On Hopper the kernels use
programmatic dependent launch: one may start while the previous kernel finishes, loading its first
weight tile before it waits for the previous kernel's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from pytest_attnlab.paths.base import GEMV_CONFIG

#: rows of x the kernels take
MAX_ROWS = 8
#: rows the fast path's dense format sends to these kernels: more go to cuBLAS, which reads the weight
#: once for all of them (at 8 rows cuBLAS takes its 1-row time; these kernels would read it 8 times)
DENSE_MAX_ROWS = 1

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

    @classmethod
    def parse(cls, text: str, pdl: bool) -> Config:
        """`1x1024w4`, `2x2048w4s3pdl` (perf.options.GEMV_CONFIG); without pdl/nopdl, `pdl` decides."""

        found = GEMV_CONFIG.match(text)
        if found is None:
            raise ValueError(f"{text!r} is not a GEMV config (BLOCK_NxBLOCK_KwWARPS[sSTAGES][pdl|nopdl])")
        bn, bk, warps, stages, flag = found.groups()
        use_pdl = pdl if flag is None else flag == "pdl"
        return cls(int(bn), int(bk), int(warps), int(stages or 1), use_pdl and pdl_supported())

    @property
    def label(self) -> str:
        return f"{self.block_n}x{self.block_k}w{self.warps}s{self.stages}{'pdl' if self.pdl else 'nopdl'}"


def pdl_supported() -> bool:
    """Programmatic dependent launch: triton has it and the GPU is Hopper or newer."""
    return gdc_wait is not None and torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9


def config(n: int, k: int) -> Config:
    """The launch shape for an [n, k] weight (one program a row of x), from an H200 sweep on the Qwen2.5-3B
    shape (docs/perf.md; rerun it with suites/perf/test_decode_gemv.py --attnlab-perf-gemv-configs): four
    warps, no software pipelining; two output rows a program and 1024 input columns a step for the small q/k/v and o,
    one row for the long rows of down, 2048 columns for the tall gate/up and lm_head. Programmatic
    dependent launch where the GPU has it (compute capability 9.0+)."""
    pdl = pdl_supported()
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
    c_lo = tl.load(cos_ptr + j).to(tl.float32)
    c_hi = tl.load(cos_ptr + HALF + j).to(tl.float32)
    s_lo = tl.load(sin_ptr + j).to(tl.float32)
    s_hi = tl.load(sin_ptr + HALF + j).to(tl.float32)
    r_lo = ((y_lo * c_lo).to(ty).to(tl.float32) + (-y_hi * s_lo).to(ty).to(tl.float32)).to(ty)
    r_hi = ((y_hi * c_hi).to(ty).to(tl.float32) + (y_lo * s_hi).to(ty).to(tl.float32)).to(ty)
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
    cfg = cfg or config(weight.shape[0], k)
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    res = residual.reshape(m, n) if residual is not None else y
    if res.stride(0) != y.stride(0) or res.stride(-1) != 1:
        res = res.contiguous()
    g, eps = norm if norm is not None else (weight, 0.0)
    extra = {"launch_pdl": True} if cfg.pdl else {}
    _gemv_dense_kernel[(triton.cdiv(n, cfg.block_n), m)](
        flat, weight, bias if bias is not None else weight, g, res, y, n, k, eps, flat.stride(0), weight.stride(0),
        y.stride(0), HAS_BIAS=bias is not None, SILU_MUL=silu_mul, NORM=norm is not None,
        RESIDUAL=residual is not None, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, PDL=cfg.pdl, num_warps=cfg.warps,
        num_stages=cfg.stages, **extra,
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
    """One token at batch 1: q [heads * D] of RoPE(RMSNorm(x) @ Wq.T + bq); RoPE(k) and v written into
    k_cache / v_cache [1, kv_heads, max_len, D] at `pos` ([1] tensor). cos/sin: the position's rows [D]."""
    if x.numel() != x.shape[-1] or k_cache.shape[0] != 1:
        raise ValueError(
            f"qkv_rope_cache takes one row at batch 1, got x {tuple(x.shape)}, cache {tuple(k_cache.shape)}"
        )
    _, kv_heads, _, d = k_cache.shape
    k = x.shape[-1]
    if weight.shape[0] != (heads + 2 * kv_heads) * d or d % 2:
        raise ValueError(f"weight {tuple(weight.shape)} is not [({heads} + 2 * {kv_heads}) * {d}, K]")
    for cache in (k_cache, v_cache):
        if cache.stride(-1) != 1 or cache.stride(-2) != d:
            raise ValueError("the caches' positions must be contiguous rows of D")
    cfg = cfg or config(weight.shape[0], k)
    hb = max(1, cfg.block_n // 2)  # the config's rows a program, half of them each side of D/2
    q = torch.empty(heads * d, dtype=x.dtype, device=x.device)
    g, eps = norm
    extra = {"launch_pdl": True} if cfg.pdl else {}
    _gemv_qkv_rope_kernel[((heads + 2 * kv_heads) * (d // 2 // hb),)](
        x.reshape(-1), weight, bias if bias is not None else weight, g, cos.reshape(-1), sin.reshape(-1),
        pos, q, k_cache, v_cache, k, eps, weight.stride(0), k_cache.stride(1), v_cache.stride(1), HQ=heads,
        HKV=kv_heads, D=d, HAS_BIAS=bias is not None, HB=hb, BLOCK_K=cfg.block_k, PDL=cfg.pdl,
        num_warps=cfg.warps, num_stages=cfg.stages, **extra,
    )  # fmt: skip
    return q
