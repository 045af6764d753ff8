"""Torch custom ops over the fast path's Triton kernels (`attnlab::gemv_*`, `attnlab::decode_attention`: the
split-KV decode attention of `paths/triton_attention.py`, --attnlab-perf-fast-attention triton), and the
`--attnlab-perf-fast-gemv triton` dense format: GEMVs of 1 to 32 rows (a decode step at batch 1-32)
through the Triton kernels of `paths/triton_gemv.py`, each wrapped as a torch custom op (`attnlab::gemv_*`),
so torch.compile keeps it as one opaque call and the step still captures in a CUDA graph; more rows (a
prefill) go to F.linear. It holds the model's own weight tensor (the fused q/k/v and
gate/up views, as `Dense`).

int4 weights keep tinygemm (`fast_weights.Int4`) under this option: a Triton int4 GEMV written for it
(eight codes an int32 word, the code-to-float step by the 2^23 mantissa trick, one nibble a pass)
ran the 3B shape's gate/up in 25 us to tinygemm's 15 on the H200, so it was dropped (docs/perf.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pytest_attnlab.paths import triton_attention as A
from pytest_attnlab.paths import triton_gemv as K


@torch.library.custom_op("attnlab::gemv_dense", mutates_args=())
def gemv_dense(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    norm: torch.Tensor | None = None,
    eps: float = 0.0,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    return K.dense(x, weight, bias, norm=None if norm is None else (norm, eps), residual=residual)


@gemv_dense.register_fake
def _(x, weight, bias, norm=None, eps=0.0, residual=None) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return x.new_empty(*x.shape[:-1], weight.shape[0])


@torch.library.custom_op("attnlab::gemv_silu_mul", mutates_args=())
def gemv_silu_mul(
    x: torch.Tensor, weight: torch.Tensor, norm: torch.Tensor | None = None, eps: float = 0.0
) -> torch.Tensor:
    return K.dense_silu_mul(x, weight, norm=None if norm is None else (norm, eps))


@gemv_silu_mul.register_fake
def _(x, weight, norm=None, eps=0.0) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return x.new_empty(*x.shape[:-1], weight.shape[0] // 2)


@torch.library.custom_op("attnlab::gemv_qkv_rope_cache", mutates_args=("k_cache", "v_cache"))
def gemv_qkv_rope_cache(
    x: torch.Tensor,
    norm: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    pos: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    heads: int,
) -> torch.Tensor:
    return K.qkv_rope_cache(x, (norm, eps), weight, bias, cos, sin, pos, k_cache, v_cache, heads)


@gemv_qkv_rope_cache.register_fake
def _(x, norm, eps, weight, bias, cos, sin, pos, k_cache, v_cache, heads) -> torch.Tensor:  # type: ignore[no-untyped-def]
    width = heads * k_cache.shape[-1]  # K.qkv_rope_cache's shape: [width] for one row, else x's rows by width
    return x.new_empty(width) if x.numel() == x.shape[-1] else x.new_empty(*x.shape[:-1], width)


@torch.library.custom_op("attnlab::decode_attention", mutates_args=())
def decode_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor, scale: float
) -> torch.Tensor:
    return A.decode_attention(q, k, v, visible, scale)


@decode_attention.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.empty_like(q, memory_format=torch.contiguous_format)


def _rows(x: torch.Tensor) -> int:
    return x.numel() // x.shape[-1]


class TritonDense:
    """`Dense` through the Triton GEMV; `silu_mul` fuses the gate/up product into the same kernel."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        self.weight, self.bias = weight, bias
        self.out_features = weight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if _rows(x) > K.DENSE_MAX_ROWS:
            return F.linear(x, self.weight, self.bias)
        return gemv_dense(x, self.weight, self.bias)

    def silu_mul(self, x: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up of the fused [gate; up] weight (no bias: Llama/Qwen2 MLPs have none)."""
        if _rows(x) > K.DENSE_MAX_ROWS or self.bias is not None:
            gate, up = F.linear(x, self.weight, self.bias).chunk(2, dim=-1)
            return F.silu(gate) * up
        return gemv_silu_mul(x, self.weight)

    def tensors(self) -> list[torch.Tensor]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])


class TritonFusedDense(TritonDense):
    """`TritonDense` whose kernels also take their neighbours' work (--attnlab-perf-fast-gemv triton-fused):
    static_decode.layer_forward runs a decode layer (one token a row, batch 1 to 32) as four of these
    kernels and the attention (RMSNorm in the q/k/v and gate/up GEMVs' prologue; RoPE and both cache
    writes in the q/k/v GEMV's epilogue; the residual adds in the o and down GEMVs' epilogue)."""

    @staticmethod
    def fused_rows(head_dim: int) -> int:
        """Tokens of one decode step (batch rows) the fused kernels below take for this head width
        (static_decode.layer_forward's fused condition): up to K.MAX_ROWS, one where half a head is
        narrower than tl.dot's 16 columns."""
        return K.MAX_ROWS if head_dim // 2 >= K.MIN_DOT else 1

    def norm_qkv_rope_cache(self, x: torch.Tensor, norm: torch.Tensor, eps: float, *rope_cache: object) -> torch.Tensor:
        """q [heads * head_dim] of RoPE(RMSNorm(x) @ Wq.T + bq); RoPE(k) and v written to the caches at pos.
        rope_cache: cos, sin, pos, k_cache, v_cache, heads (gemv_qkv_rope_cache's)."""
        return gemv_qkv_rope_cache(x, norm, eps, self.weight, self.bias, *rope_cache)

    def add_to(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual + self(x)."""
        return gemv_dense(x, self.weight, self.bias, None, 0.0, residual)

    def norm_silu_mul(self, x: torch.Tensor, norm: torch.Tensor, eps: float) -> torch.Tensor:
        """silu(gate) * up of RMSNorm(x)."""
        return gemv_silu_mul(x, self.weight, norm, eps)
