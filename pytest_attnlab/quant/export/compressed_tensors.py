"""compressed-tensors `pack-quantized` (llm-compressor's W4A16 / W8A16 output), read by vLLM and by
transformers with the compressed-tensors package.

Per linear: `weight_packed` int32 [out, in*bits/32] (packed along the input dim), `weight_scale`
[out, groups] in the model dtype, `weight_shape` [2], and for asymmetric grids `weight_zero_point`
int32 [out*bits/32, groups] (packed along the output dim). compressed-tensors holds signed codes
q - 2**(bits-1) and packs them with that offset added back, so the stored nibbles are our unsigned
codes and zero points unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from pytest_attnlab.quant.export.base import Exporter, LinearCodes
from pytest_attnlab.quant.export.packing import pack_int32
from pytest_attnlab.quant.packed import QuantState

FORMAT = "pack-quantized"


class CompressedTensorsExporter(Exporter):
    name = "compressed-tensors"
    bits = (4, 8)

    def linear_tensors(self, name: str, lc: LinearCodes, symmetric: bool, dtype: torch.dtype) -> dict[str, Any]:
        out = {
            f"{name}.weight_packed": pack_int32(lc.codes, lc.bits, dim=1),
            f"{name}.weight_scale": lc.scales.to(dtype),
            f"{name}.weight_shape": torch.tensor(list(lc.codes.shape), dtype=torch.int64),
        }
        if not symmetric:
            out[f"{name}.weight_zero_point"] = pack_int32(lc.zeros, lc.bits, dim=0)
        return out

    def quant_config(self, state: QuantState, symmetric: bool) -> dict[str, Any]:
        grid = state.grid
        weights = {
            "num_bits": grid.bits,
            "type": "int",
            "symmetric": symmetric,
            "strategy": "group" if grid.group_size else "channel",
            "group_size": grid.group_size,
            "block_structure": None,
            "dynamic": False,
            "actorder": None,
            "observer": "minmax",
            "observer_kwargs": {},
        }
        return {
            "quant_method": "compressed-tensors",
            "format": FORMAT,
            "quantization_status": "compressed",
            "config_groups": {
                "group_0": {
                    "targets": ["Linear"],
                    "weights": weights,
                    "input_activations": None,
                    "output_activations": None,
                    "format": FORMAT,
                }
            },
            "ignore": ["lm_head"],
            "kv_cache_scheme": None,
            "sparsity_config": {},
            "global_compression_ratio": None,
            "version": _ct_version(),
        }


def _ct_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("compressed-tensors")
    except PackageNotFoundError:
        return "0.17.0"  # the layout written here is the one 0.17 (vLLM 0.32's) and later read
