"""vLLM's Marlin int4 GEMM on the rtn-int4-gN-zp grid (issue 29: where a maintained kernel library beats the
plugin's own on these shapes, measured side by side, use it). The codes, scales and integer zero points are
the plugin's own RTN (quant.grid, zero="int": w = (q - z) * s, the GPTQ/AWQ form, which Marlin's uint4 with
zero points computes); vLLM only repacks them (gptq_marlin_repack, marlin_permute_scales,
marlin_zero_points, marlin_permute_bias) and runs the kernel (apply_gptq_marlin_linear). CUDA with vLLM installed only:
`pip install 'pytest-attnlab[vllm]'`."""

from __future__ import annotations

import torch

from pytest_attnlab.quant import grid as G


class MarlinUnavailable(RuntimeError):
    """Marlin cannot run here: no vLLM, or not on CUDA. The message names what to install or pass."""


class MarlinShapeError(ValueError):
    """The weight's shape or zero-point form is not one Marlin takes (a property of the model, not a bug)."""


def vllm_ops() -> tuple:
    """(vllm._custom_ops, marlin_utils, scalar_types), or MarlinUnavailable naming the extra to install
    (vllm_engine.import_vllm's test and hint, as the vLLM backend gives them)."""
    from pytest_attnlab.paths.vllm_engine import VLLMUnavailable, import_vllm

    try:
        import_vllm()
    except VLLMUnavailable as exc:
        raise MarlinUnavailable(f"Marlin's int4 kernel comes with vLLM: {exc}") from None
    # vllm is an optional heavy dependency: its kernels' modules are imported only when a Marlin linear is built
    from vllm import _custom_ops as ops
    from vllm.model_executor.layers.quantization.utils import marlin_utils as MU
    from vllm.scalar_type import scalar_types

    return ops, MU, scalar_types


def gptq_pack(codes: torch.Tensor) -> torch.Tensor:
    """Codes [out, in] (0..15) as GPTQ's qweight [in / 8, out] int32: eight rows of in a word, row 8i + j in
    bits 4j..4j+3 (what gptq_marlin_repack reads)."""
    q = codes.T.to(torch.int32).reshape(codes.shape[1] // 8, 8, codes.shape[0])
    packed = torch.zeros_like(q[:, 0])
    for j in range(8):
        packed |= q[:, j] << (4 * j)
    return packed.contiguous()


class MarlinInt4:
    """y = x @ dequant(W).T + b, W [out, in] on the rtn-int4-g`group`-zp grid, through Marlin."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        group: int,
        act_dtype: torch.dtype,
        zero: str = "int",
        keep_reference: bool = False,
    ) -> None:
        if zero != "int":
            raise MarlinShapeError(
                "Marlin takes integer zero points (the GPTQ/AWQ form), not the Q4_1 minimum of rtn-int4-gN: "
                f"use --attnlab-perf-fast-quant int4-g{group}-zp"
            )
        if weight.device.type != "cuda":
            raise MarlinUnavailable(f"Marlin runs on CUDA; the weight is on {weight.device.type}")
        ops, MU, scalar_types = vllm_ops()
        out, cols = weight.shape
        if cols % group or out % 64 or cols % 128:
            raise MarlinShapeError(
                f"Marlin needs whole groups of {group}, 64 | out and 128 | in; the weight is [{out}, {cols}]"
            )
        self.grid = G.Grid(4, group, symmetric=False, zero="int")
        qt = G.quantize(self.grid, weight.detach())
        assert qt.zeros is not None
        # codes, scales, zeros: what reference() dequantizes (a byte a weight more; kept for checks only)
        self.qt = qt if keep_reference else None
        groups = cols // group
        empty = MU.marlin_make_empty_g_idx(weight.device)
        self.qweight = ops.gptq_marlin_repack(gptq_pack(qt.codes), empty, cols, out, 4)
        self.scales = MU.marlin_permute_scales(qt.scales.T.to(act_dtype).contiguous(), cols, out, group)
        self.zeros = MU.marlin_zero_points(qt.zeros.T.to(torch.int32).contiguous(), groups, out, 4)
        self.g_idx, self.sort_idx = empty, empty
        self.workspace = MU.marlin_make_workspace_new(weight.device)
        self.wtype = scalar_types.uint4
        self._apply = MU.apply_gptq_marlin_linear
        self.bias = None if bias is None else bias.detach().to(act_dtype).clone()
        # the kernel adds the bias in Marlin's output order (vLLM's MPLinearKernel permutes it the same way)
        self.kernel_bias = None if bias is None else MU.marlin_permute_bias(self.bias)
        self.group, self.in_features, self.out_features, self.dtype = group, cols, out, act_dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._mm(x, self.kernel_bias)

    def _mm(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        y = self._apply(
            x.to(self.dtype), self.qweight, self.scales, self.zeros, self.g_idx, self.sort_idx, self.workspace,
            self.wtype, self.out_features, self.in_features, is_k_full=True, bias=bias,
        )  # fmt: skip
        return y.to(x.dtype)

    def dequantized(self) -> torch.Tensor:
        """The weight [out, in] the kernel multiplies by, as float32: the kernel applied to the identity (a
        check of the repacking, not only of the arithmetic), as fast_weights.Int4 does."""
        eye = torch.eye(self.in_features, dtype=self.dtype, device=self.qweight.device)
        return self._mm(eye, None).float().T.contiguous()

    def reference(self) -> torch.Tensor:
        """The weight [out, in] the codes stand for, as float32 (quant.grid's dequantization, not the kernel's);
        needs keep_reference=True."""
        if self.qt is None:
            raise ValueError("MarlinInt4.reference() needs the codes: build it with keep_reference=True")
        return G.dequantize(self.grid, self.qt, (self.out_features, self.in_features))

    def tensors(self) -> list[torch.Tensor]:
        return [self.qweight, self.scales, self.zeros] + ([self.bias] if self.bias is not None else [])
