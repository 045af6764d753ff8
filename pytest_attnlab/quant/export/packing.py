"""Packing unsigned n-bit codes into int32 words, as GPTQ, AWQ and compressed-tensors store them.

Element j of each run of 32/bits values along `dim` sits at bits [j*bits, (j+1)*bits) of one int32
(AutoGPTQ's `pack`, compressed-tensors' `pack_to_int32`). AWQ's GEMM layout first permutes each run
of 8 with AWQ_ORDER (AutoAWQ's `order_map`), so its kernels can unpack two nibbles per shift.
"""

from __future__ import annotations

import torch

#: AutoAWQ GEMM: which of 8 consecutive output columns goes to nibble i of an int32
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def pack_int32(codes: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Pack unsigned `codes` (values in [0, 2**bits)) of a 2-D tensor along `dim` into int32."""
    if 32 % bits:
        raise ValueError(f"pack_int32: {bits} bits do not divide an int32; choose from: 2, 4, 8")
    per = 32 // bits
    values = codes.to(torch.int64)
    if values.min() < 0 or values.max() >= 2**bits:
        raise ValueError(
            f"pack_int32: codes must lie in [0, {2**bits}), got [{int(values.min())}, {int(values.max())}]"
        )
    values = values.movedim(dim, -1)
    n = values.shape[-1]
    if n % per:
        raise ValueError(f"pack_int32: {n} values along dim {dim} are not a multiple of {per}")
    values = values.reshape(*values.shape[:-1], n // per, per)
    shifts = torch.arange(0, 32, bits, dtype=torch.int64)
    words = (values << shifts).sum(-1)
    words = torch.where(words >= 2**31, words - 2**32, words)  # the same 32 bits as a signed int32
    return words.to(torch.int32).movedim(-1, dim).contiguous()


def unpack_int32(words: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """The inverse of pack_int32: unsigned codes (int32) with 32/bits values per word along `dim`."""
    per = 32 // bits
    w = words.to(torch.int64).movedim(dim, -1) & 0xFFFFFFFF
    shifts = torch.arange(0, 32, bits, dtype=torch.int64)
    values = (w[..., None] >> shifts) & (2**bits - 1)
    return values.reshape(*w.shape[:-1], w.shape[-1] * per).to(torch.int32).movedim(-1, dim).contiguous()


def awq_permute(codes: torch.Tensor) -> torch.Tensor:
    """Reorder the last dim in runs of 8 so that pack_int32(..., 4, dim=-1) gives AWQ's GEMM words."""
    *lead, n = codes.shape
    order = torch.tensor(AWQ_ORDER)
    return codes.reshape(*lead, n // 8, 8)[..., order].reshape(*lead, n)


def awq_unpermute(codes: torch.Tensor) -> torch.Tensor:
    *lead, n = codes.shape
    inverse = torch.argsort(torch.tensor(AWQ_ORDER))
    return codes.reshape(*lead, n // 8, 8)[..., inverse].reshape(*lead, n)
