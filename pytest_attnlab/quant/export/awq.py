"""AWQ, AutoAWQ's GEMM layout (`version: gemm`, zero points on), 4-bit grouped grids.

Per linear: `qweight` int32 [in, out/8] and `qzeros` int32 [groups, out/8], both packed along the
output dim in AutoAWQ's nibble order (packing.AWQ_ORDER), and `scales` float16 [groups, out].
"""

from __future__ import annotations

from typing import Any

import torch

from pytest_attnlab.quant.export.base import Exporter, LinearCodes
from pytest_attnlab.quant.export.packing import awq_permute, pack_int32
from pytest_attnlab.quant.packed import QuantState


class AWQExporter(Exporter):
    name = "awq"
    bits = (4,)

    def unsupported(self, state: QuantState) -> str | None:
        if state.grid.group_size is None:
            return "AWQ checkpoints are grouped; this grid is per-channel: export it as compressed-tensors"
        return super().unsupported(state)

    def linear_tensors(self, name: str, lc: LinearCodes, symmetric: bool, dtype: torch.dtype) -> dict[str, Any]:
        return {
            f"{name}.qweight": pack_int32(awq_permute(lc.codes.t()), 4, dim=1),
            f"{name}.qzeros": pack_int32(awq_permute(lc.zeros.t()), 4, dim=1),
            f"{name}.scales": lc.scales.t().to(torch.float16),
        }

    def quant_config(self, state: QuantState, symmetric: bool) -> dict[str, Any]:
        return {
            "quant_method": "awq",
            "bits": 4,
            "group_size": state.grid.group_size,
            "zero_point": True,
            "version": "gemm",
            "modules_to_not_convert": None,
        }
