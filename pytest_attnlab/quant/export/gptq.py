"""GPTQ (AutoGPTQ / GPTQModel `checkpoint_format: gptq`, desc_act off), symmetric grids only.

Per linear: `qweight` int32 [in*bits/32, out] (packed along the input dim), `qzeros` int32
[groups, out*bits/32] holding zero point - 1 (the v1 format's offset), `scales` float16
[groups, out], `g_idx` int32 [in]. Symmetric only: vLLM's GPTQ kernels take uint4b8/uint8b128
(zero point fixed at the midpoint), and the v1 offset cannot hold a zero point of 0.
`pytest_attnlab.quant.gptq.unpack_gptq` reads this layout back (it reads gptqmodel's output).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from pytest_attnlab.quant.export.base import Exporter, LinearCodes, linear_codes
from pytest_attnlab.quant.export.packing import pack_int32
from pytest_attnlab.quant.packed import QuantState


class GPTQExporter(Exporter):
    name = "gptq"
    bits = (4, 8)

    def unsupported(self, state: QuantState) -> str | None:
        reason = super().unsupported(state)
        if reason:
            return reason
        if not all(linear_codes(state, n).symmetric for n in state.linears):
            return (
                "GPTQ checkpoints here are symmetric (zero point at the midpoint; vLLM loads no other) and this "
                "grid has per-group zero points: export it as compressed-tensors or awq"
            )
        return None

    def linear_tensors(self, name: str, lc: LinearCodes, symmetric: bool, dtype: torch.dtype) -> dict[str, Any]:
        cols = lc.codes.shape[1]
        group = cols // lc.scales.shape[1]
        return {
            f"{name}.qweight": pack_int32(lc.codes.t(), lc.bits, dim=0),
            f"{name}.qzeros": pack_int32((lc.zeros - 1).t(), lc.bits, dim=1),
            f"{name}.scales": lc.scales.t().to(torch.float16),
            f"{name}.g_idx": (torch.arange(cols) // group).to(torch.int32),
        }

    def quant_config(self, state: QuantState, symmetric: bool) -> dict[str, Any]:
        return {
            "quant_method": "gptq",
            "bits": state.grid.bits,
            "group_size": state.grid.group_size or -1,
            "desc_act": False,
            "sym": True,
            "lm_head": False,
            "checkpoint_format": "gptq",
        }

    def extra_files(self, config: dict[str, Any]) -> dict[str, str]:
        return {"quantize_config.json": json.dumps(config, indent=1)}
