"""How the fast path's decode step attends over its static KV cache (`--attnlab-perf-fast-attention`):
`DECODE_ATTENTION` name -> fn(q [b, hkv, g, d], k, v, mask, scale), the query heads of a KV group folded
into the query axis (GQA without repeating K/V), with `fn.mask(visible)` making its mask from the boolean
[1, 1, 1, max_len] once per step, and an optional `fn.unsupported(sm, device)` saying why it cannot run
there ("" when it can; static_decode.check_decode_attention raises it as UnsupportedModel).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from pytest_attnlab.paths.static_decode import StaticModel


class _SDPADecode:
    """The fused SDPA kernel with a boolean mask."""

    def mask(self, visible: torch.Tensor) -> torch.Tensor:
        return visible

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
    ) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


class _MathDecode:
    """Plain matmul-softmax-matmul: torch.compile fuses the mask and softmax, and the two small
    batched matmuls split over the cache length (SDPA's fused kernels parallelise over batch x heads
    only, a handful of blocks at batch 1)."""

    def mask(self, visible: torch.Tensor) -> torch.Tensor:
        """An additive float32 bias, 0 where visible and -inf elsewhere, made once per step."""
        return torch.where(visible, 0.0, float("-inf")).to(torch.float32)

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float
    ) -> torch.Tensor:
        # bias + scale * scores in one op, in float32 by type promotion: the values of
        # scores.float() * scale masked with -inf, without the separate cast and mask kernels
        scores = torch.add(bias, q @ k.transpose(-1, -2), alpha=scale)
        return scores.softmax(dim=-1).to(v.dtype) @ v


class _TritonDecode:
    """Split-KV decode attention in Triton (paths/triton_attention.py), CUDA only: one kernel over chunks
    of the cache, one combining them, for the matmul-softmax-matmul's three."""

    op: Callable[..., torch.Tensor] | None = None  # fast_triton.decode_attention, imported by unsupported()

    def unsupported(self, sm: StaticModel, device: torch.device) -> str:
        if device.type != "cuda":
            return f"--attnlab-perf-fast-attention triton runs Triton kernels on CUDA; the model is on {device.type}"
        try:
            from pytest_attnlab.paths import triton_attention  # triton: optional
            from pytest_attnlab.paths.fast_triton import decode_attention  # triton: optional
        except ImportError as exc:
            return f"--attnlab-perf-fast-attention triton needs the triton package ({exc})"
        why = triton_attention.supported(sm.head_dim, sm.heads // sm.kv_heads)
        self.op = decode_attention  # imported here, eagerly: torch.compile then only sees the op's call
        return f"--attnlab-perf-fast-attention triton: {why}" if why else ""

    def mask(self, visible: torch.Tensor) -> torch.Tensor:
        return visible.reshape(-1)

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor, scale: float
    ) -> torch.Tensor:
        if self.op is None:  # called without unsupported(): an eager caller
            from pytest_attnlab.paths.fast_triton import decode_attention  # triton: optional

            self.op = decode_attention
        return self.op(q, k, v, visible, scale)


#: the module docstring says what each entry is
DECODE_ATTENTION = {"sdpa": _SDPADecode(), "math": _MathDecode(), "triton": _TritonDecode()}
