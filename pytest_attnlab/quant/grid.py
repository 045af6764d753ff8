"""Round-to-nearest integer grids and the packed storage of quantized weights (pure torch).

int8: per output channel, symmetric: q = clamp(round(w / s), -127, 127), s = max|w| / 127.
int4 symmetric (GPTQ's sym form): per group, q = clamp(round(w / s), -7, 7), s = max|w| / 7, stored
      as q + 8 in a nibble.
int4: per group of `group_size` input columns, asymmetric, in one of two zero-point forms:
      zero="float" (GGML Q4_1, HQQ): s = (max - min) / 15, q = clamp(round((w - min) / s), 0, 15),
                    w' = s * q + min, with min stored in float16;
      zero="int"   (the GPTQ/AWQ checkpoint form): z = clamp(round(-min / s), 0, 15),
                    q = clamp(round(w / s) + z, 0, 15), w' = s * (q - z), with z stored in uint8.
      Two 4-bit codes share a byte. A last group may be shorter than `group_size`
      (SmolLM2's 576 columns are 4.5 groups of 128).
Scales are stored in float16 and codes are computed with the stored (rounded) scale, so the
weight bytes counted are the bytes a deployment of the format holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Grid:
    bits: int
    group_size: int | None  # None: one group per output channel (the whole row)
    symmetric: bool
    zero: str = "int"  # asymmetric only: "int" (GPTQ/AWQ) or "float" (Q4_1-style minimum)

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"Grid.bits: {self.bits} is not supported; choose from: 4, 8")
        if self.zero not in ("int", "float"):
            raise ValueError(f"Grid.zero: {self.zero!r} is not supported; choose from: int, float")
        if self.group_size is not None and self.group_size <= 0:
            raise ValueError(f"Grid.group_size: must be positive or None, got {self.group_size}")

    @property
    def maxq(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1

    def group(self, in_features: int) -> int:
        return self.group_size or in_features

    def params(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scale (and zero point) for each row of `w` [rows, cols] over its last dimension."""
        w = w.float()
        if self.symmetric:
            scale = (w.abs().amax(dim=-1) / self.maxq).clamp(min=1e-8)
            return scale.half().float(), None
        wmax, wmin = w.amax(dim=-1), w.amin(dim=-1)
        scale = ((wmax - wmin) / self.maxq).clamp(min=1e-5).half().float()
        if self.zero == "float":
            return scale, wmin.half().float()
        zero = (-torch.round(wmin / scale)).clamp(0, self.maxq)
        return scale, zero

    def codes(self, w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
        """Integer codes of `w` [..., n] for per-row `scale`/`zero` [...] (broadcast over the last dim)."""
        if self.symmetric:
            return torch.clamp(torch.round(w.float() / scale[..., None]), -self.maxq, self.maxq)
        if self.zero == "float":
            return torch.clamp(torch.round((w.float() - zero[..., None]) / scale[..., None]), 0, self.maxq)
        return torch.clamp(torch.round(w.float() / scale[..., None]) + zero[..., None], 0, self.maxq)

    def dequant(self, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
        if self.symmetric:
            return q * scale[..., None]
        if self.zero == "float":
            return q * scale[..., None] + zero[..., None]
        return (q - zero[..., None]) * scale[..., None]

    def fake(self, w: torch.Tensor) -> torch.Tensor:
        """Quantize-dequantize `w` [out, in] group-wise: the float weights the integer grid can hold."""
        return dequantize(self, quantize(self, w), w.shape).to(w.dtype)


@dataclass
class QTensor:
    """Integer codes [out, in] with per-group scales/zeros [out, groups]."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None


def _grouped(w: torch.Tensor, group: int) -> torch.Tensor:
    """[out, in] -> [out, groups, group], padding a short last group with its own last column
    (a repeated value leaves that group's min, max and abs-max unchanged)."""
    out, cols = w.shape
    groups = math.ceil(cols / group)
    pad = groups * group - cols
    if pad:
        w = torch.cat([w, w[:, -1:].expand(out, pad)], dim=1)
    return w.reshape(out, groups, group)


def quantize(grid: Grid, w: torch.Tensor) -> QTensor:
    out, cols = w.shape
    g = _grouped(w.float(), grid.group(cols))
    scale, zero = grid.params(g)
    q = grid.codes(g, scale, zero).reshape(out, -1)[:, :cols]
    return QTensor(q.to(torch.int8 if grid.symmetric else torch.uint8), scale, zero)


def dequantize(grid: Grid, qt: QTensor, shape: torch.Size | tuple[int, int]) -> torch.Tensor:
    out, cols = shape
    group = grid.group(cols)
    q = _grouped(qt.codes.float(), group)
    return grid.dequant(q, qt.scales.float(), None if qt.zeros is None else qt.zeros.float()).reshape(out, -1)[:, :cols]


def pack(grid: Grid, qt: QTensor) -> dict[str, torch.Tensor]:
    """The stored tensors: int8 codes, or two 4-bit codes per byte; float16 scales; uint8 zero
    points (float16 minimums for zero="float")."""
    codes = qt.codes
    if grid.bits == 4:
        if grid.symmetric:  # signed codes in [-7, 7] -> nibbles in [1, 15]
            codes = (codes.to(torch.int16) + 8).to(torch.uint8)
        if codes.shape[1] % 2:
            codes = torch.cat([codes, torch.zeros_like(codes[:, :1])], dim=1)
        codes = (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8)
    out = {"qweight": codes.contiguous(), "scales": qt.scales.half().contiguous()}
    if qt.zeros is not None:
        out["zeros"] = qt.zeros.to(torch.float16 if grid.zero == "float" else torch.uint8).contiguous()
    return out


def unpack(grid: Grid, tensors: dict[str, torch.Tensor], cols: int) -> QTensor:
    codes = tensors["qweight"]
    if grid.bits == 4:
        codes = torch.stack([codes & 0x0F, codes >> 4], dim=-1).reshape(codes.shape[0], -1)[:, :cols]
        if grid.symmetric:
            codes = (codes.to(torch.int16) - 8).to(torch.int8)
    return QTensor(codes, tensors["scales"].float(), tensors["zeros"].float() if "zeros" in tensors else None)


def nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())
