"""Weight formats of the fast path's linear layers: `Dense` (the model's dtype, F.linear), `Int4`
(RTN int4 per group through torch's packed-int4 matmul) and `Concat` (several linears on one input,
the unfused q/k/v and gate/up). `GEMV_FORMATS` maps --attnlab-perf-fast-gemv to the (dense, int4)
formats: `torch` (these), `triton` or `triton-fused` (paths/fast_triton.py, CUDA only).

`Int4` quantizes on the grid of the plugin's `rtn-int4-g<N>` quantizers (quant.grid: asymmetric,
scale = (max - min) / 15 and the minimum both rounded to float16, q = round((w - min) / scale)), so
its codes are those of the quantizer and its weights dequantize to the same `q * scale + min`.
The kernel is tinygemm (`aten._weight_int4pack_mm`, bf16 activations) on CUDA and
`aten._weight_int4pack_mm_for_cpu` on CPU. Both compute `(q - 8) * scale + zero` per group, from
`scales_and_zeros` [in / group, out, 2]; with zero = min + 8 * scale that is the quantizer's weight.
With zero="int" (`int4-g<N>-zp`, the `rtn-int4-g<N>-zp` grid: w = (q - z) * scale, z an integer),
zero = (8 - z) * scale. `marlin` runs that form through vLLM's Marlin (paths/marlin_int4.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from pytest_attnlab.paths import marlin_int4 as MI
from pytest_attnlab.quant import grid as G
from pytest_attnlab.registry import Registry


class Linear(Protocol):
    out_features: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def tensors(self) -> list[torch.Tensor]:
        """The tensors one call reads (its bytes are what a decode step streams)."""


def silu_mul(lin: Linear, x: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of a [gate | up] linear: the format's fused kernel when it has one."""
    fused = getattr(lin, "silu_mul", None)
    if fused is not None:
        return fused(x)
    gate, up = lin(x).chunk(2, dim=-1)
    return F.silu(gate) * up


class Dense:
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        self.weight, self.bias = weight, bias
        self.out_features = weight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def tensors(self) -> list[torch.Tensor]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])


class Concat:
    """Several linears of one input, outputs concatenated: one GEMV each (the unfused layout)."""

    def __init__(self, parts: list[Linear]) -> None:
        self.parts = parts
        self.out_features = sum(p.out_features for p in parts)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], dim=-1)

    def tensors(self) -> list[torch.Tensor]:
        return [t for p in self.parts for t in p.tensors()]


class UnsupportedShape(ValueError):
    pass


#: tinygemm's tile over the input dimension is 16 x innerKTiles; the widest tiling that divides wins
INNER_K_TILES = (8, 4, 2)


def inner_k_tiles(in_features: int, group: int) -> int:
    if in_features % group:
        raise UnsupportedShape(f"int4 group {group} does not divide the input width {in_features}")
    for tiles in INNER_K_TILES:
        if in_features % (16 * tiles) == 0:
            return tiles
    raise UnsupportedShape(f"int4: input width {in_features} is not a multiple of 32")


class Int4:
    """y = x @ dequant(W).T + b with W [out, in] held as packed int4 codes plus scales and zeros."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, group: int, act_dtype: torch.dtype, zero: str = "float"
    ) -> None:
        out, cols = weight.shape
        if out % 8:
            raise UnsupportedShape(f"int4: output width {out} is not a multiple of 8")
        tiles = inner_k_tiles(cols, group)
        self.cuda = weight.device.type == "cuda"
        # tinygemm takes bf16 activations, scales and zeros only; the CPU kernel takes the model's dtype
        self.dtype = torch.bfloat16 if self.cuda else act_dtype
        self.grid = G.Grid(4, group, symmetric=False, zero=zero)  # rtn-int4-g<group>[-zp]'s grid
        qt = G.quantize(self.grid, weight.detach())
        codes, scale, qzero = qt.codes, qt.scales, qt.zeros
        assert qzero is not None
        # (q - 8) * scale + zero == q * scale + min, or == (q - z) * scale
        zero = qzero + 8 * scale if self.grid.zero == "float" else (8 - qzero) * scale
        self.scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(self.dtype)
        if self.cuda:  # two codes a byte, the even column in the high nibble, as the kernel unpacks them
            nibbles = (codes[:, 0::2] << 4 | codes[:, 1::2]).to(torch.uint8)
            self.packed = torch.ops.aten._convert_weight_to_int4pack(nibbles.contiguous(), tiles)
        else:
            self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), tiles)
        self.bias = None if bias is None else bias.detach().clone()
        self.group, self.in_features, self.out_features = group, cols, out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self._mm(x.reshape(-1, self.in_features).to(self.dtype))
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def _mm(self, flat: torch.Tensor) -> torch.Tensor:
        if self.cuda:
            return torch.ops.aten._weight_int4pack_mm(flat, self.packed, self.group, self.scales_and_zeros)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group, self.scales_and_zeros)

    def dequantized(self) -> torch.Tensor:
        """The weight [out, in] the kernel multiplies by, as float32: the kernel applied to the
        identity (a check of the packing, not only of the arithmetic)."""
        eye = torch.eye(self.in_features, dtype=self.dtype, device=self.packed.device)
        return self._mm(eye).float().T.contiguous()

    def tensors(self) -> list[torch.Tensor]:
        return [self.packed, self.scales_and_zeros] + ([self.bias] if self.bias is not None else [])


class UnsupportedGemv(ValueError):
    """The chosen GEMV kernels cannot run here (no CUDA device, no triton)."""


def _torch_formats(device: torch.device) -> tuple[Callable[..., Linear], Callable[..., Linear]]:
    return Dense, Int4


def _triton_formats(option: str, cls: str, device: torch.device) -> tuple[Callable[..., Linear], Callable[..., Linear]]:
    """(paths.fast_triton's class `cls`, Int4) for --attnlab-perf-fast-gemv `option`, or UnsupportedGemv saying
    why it cannot run on `device`. int4 stays on tinygemm (fast_triton's docstring says why); an int4 layer
    has no fused_rows, so it runs unfused under triton-fused too."""
    if device.type != "cuda":
        raise UnsupportedGemv(
            f"--attnlab-perf-fast-gemv {option} runs Triton kernels on CUDA; the model is on {device.type}"
        )
    try:
        from pytest_attnlab.paths import fast_triton  # triton: optional
    except ImportError as exc:  # CUDA torch wheels bring triton; a source build may not
        raise UnsupportedGemv(f"--attnlab-perf-fast-gemv {option} needs the triton package ({exc})") from None
    return getattr(fast_triton, cls), Int4


def _marlin_formats(device: torch.device) -> tuple[Callable[..., Linear], Callable[..., Linear]]:
    """(Dense, Marlin's int4) for --attnlab-perf-fast-gemv marlin, or UnsupportedGemv: not CUDA, or no vLLM."""
    if device.type != "cuda":
        raise UnsupportedGemv(f"--attnlab-perf-fast-gemv marlin runs Marlin on CUDA; the model is on {device.type}")
    try:
        MI.vllm_ops()
    except MI.MarlinUnavailable as exc:
        raise UnsupportedGemv(f"--attnlab-perf-fast-gemv marlin: {exc}") from None
    return Dense, _marlin_int4


def _marlin_int4(weight: torch.Tensor, bias: torch.Tensor | None, group: int, act_dtype: torch.dtype, zero: str) -> Any:
    try:
        return MI.MarlinInt4(weight, bias, group, act_dtype, zero)
    except MI.MarlinShapeError as exc:
        raise UnsupportedShape(str(exc)) from None


#: --attnlab-perf-fast-gemv name -> fn(device) -> (dense format, int4 format), each called as
#: dense(weight, bias) / int4(weight, bias, group, act_dtype, zero); raises UnsupportedGemv where it cannot run
GEMV_FORMATS: Registry[Callable[[torch.device], tuple[Any, Any]]] = Registry("fast-path GEMV")
GEMV_FORMATS.register("torch", _torch_formats)
GEMV_FORMATS.register("triton", partial(_triton_formats, "triton", "TritonDense"))
GEMV_FORMATS.register("triton-fused", partial(_triton_formats, "triton-fused", "TritonFusedDense"))
GEMV_FORMATS.register("marlin", _marlin_formats)
