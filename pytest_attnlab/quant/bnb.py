"""bitsandbytes LLM.int8() and 4-bit NF4, by swapping each decoder nn.Linear for bnb's module.

The swap works on any loaded model (embedded, random shapes, a user's folder), on CPU and CUDA
(bitsandbytes >= 0.45 ships CPU kernels). Same defaults as transformers' BitsAndBytesConfig:
int8 outlier threshold 6.0; NF4 with block size 64 and double quantization of the absmax.
Quantizing takes a second or two, so nothing is cached.
"""

from __future__ import annotations

import copy
from typing import Any

from pytest_attnlab.quant.base import QuantContext, Quantizer, QuantizerUnavailable
from pytest_attnlab.quant.layers import target_linears

#: bitsandbytes repacks 4-bit weights for its CPU kernel in blocks of 32 output rows
CPU_BLOCK_N = 32


class BitsAndBytes(Quantizer):
    extra = "bnb"
    modules = ("bitsandbytes",)

    def __init__(self, name: str, kind: str, *, threshold: float = 6.0, double_quant: bool = True) -> None:
        if kind not in ("int8", "nf4", "fp4"):
            raise ValueError(f"BitsAndBytes.kind: {kind!r} is not one of: int8, nf4, fp4")
        self.name, self.kind = name, kind
        self.bits = 8 if kind == "int8" else 4
        self.threshold, self.double_quant = threshold, double_quant

    def settings(self) -> dict[str, Any]:
        if self.kind == "int8":
            return {"method": "bnb", "kind": "int8", "llm_int8_threshold": self.threshold}
        return {"method": "bnb", "kind": self.kind, "blocksize": 64, "double_quant": self.double_quant}

    def quantize(self, loaded: Any, ctx: QuantContext) -> Any:
        import bitsandbytes as bnb
        import torch

        device = next(loaded.model.parameters()).device
        if self.kind != "int8" and device.type == "cpu":
            odd = sorted(
                {m.out_features for m in target_linears(loaded.model).values() if m.out_features % CPU_BLOCK_N}
            )
            if odd:
                raise QuantizerUnavailable(
                    f"{self.name}: bitsandbytes' CPU 4-bit kernel needs out_features divisible by "
                    f"{CPU_BLOCK_N}; "
                    f"this model has {odd} (run it on CUDA)"
                )
        model = copy.deepcopy(loaded.model)
        for name, linear in target_linears(model).items():
            weight = linear.weight.detach().to("cpu", torch.float32 if device.type == "cpu" else torch.float16)
            if self.kind == "int8":
                new = bnb.nn.Linear8bitLt(
                    linear.in_features,
                    linear.out_features,
                    bias=linear.bias is not None,
                    has_fp16_weights=False,
                    threshold=self.threshold,
                )
                new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
            else:
                new = bnb.nn.Linear4bit(
                    linear.in_features,
                    linear.out_features,
                    bias=linear.bias is not None,
                    compute_dtype=ctx.dtype,
                    compress_statistics=self.double_quant,
                    quant_type=self.kind,
                )
                new.weight = bnb.nn.Params4bit(
                    weight, requires_grad=False, compress_statistics=self.double_quant, quant_type=self.kind
                )
            if linear.bias is not None:
                new.bias = torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
            new = new.to(device)  # bitsandbytes quantizes on the move to the device
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, new)
        return model
