"""The exporter interface: write a QuantState as a checkpoint folder another runtime loads.

A checkpoint is a save_pretrained folder: config.json with a `quantization_config`, one
model.safetensors with the packed linears in the format's layout and every other parameter in
float, plus the tokenizer. Codes and scales are the state's own, so the weights a loader
dequantizes are exactly the ones the HF fake-quantized model runs.
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pytest_attnlab.quant import grid as G
from pytest_attnlab.quant.packed import QuantState

WEIGHTS_FILE = "model.safetensors"


class ExportUnsupported(ValueError):
    """This state cannot be written in this format; the message says why and what would work."""


@dataclass
class LinearCodes:
    """One linear's integer form in the unsigned convention the formats share: w = s * (q - z)."""

    codes: torch.Tensor  # [out, in] int32 in [0, 2**bits)
    scales: torch.Tensor  # [out, groups] float32 (float16-exact: the state stores float16)
    zeros: torch.Tensor  # [out, groups] int32; the midpoint 2**(bits-1) everywhere when symmetric
    bits: int

    @property
    def midpoint(self) -> int:
        return 2 ** (self.bits - 1)

    @property
    def symmetric(self) -> bool:
        return bool((self.zeros == self.midpoint).all())


def linear_codes(state: QuantState, name: str) -> LinearCodes:
    grid = state.grid
    parts = state.linears[name]
    cols = int(parts["shape"][1])
    qt = G.unpack(grid, parts, cols)
    mid = 2 ** (grid.bits - 1)
    if grid.symmetric:  # signed codes around 0 -> unsigned around the midpoint
        codes = qt.codes.to(torch.int32) + mid
        zeros = torch.full_like(qt.scales, mid, dtype=torch.int32)
    else:
        codes = qt.codes.to(torch.int32)
        zeros = qt.zeros.round().to(torch.int32)
    return LinearCodes(codes, qt.scales.float(), zeros, grid.bits)


def common_reason(state: QuantState) -> str | None:
    """Why no integer-zero-point format can hold `state` exactly, or None."""
    grid = state.grid
    if not grid.symmetric and grid.zero == "float":
        return (
            "its int4 grid stores a float minimum per group (GGML Q4_1 style, w = s*q + min); AWQ, GPTQ and "
            "compressed-tensors store integer zero points (w = s*(q - z)), so writing it would change the "
            "weights: use an integer zero-point quantizer (rtn-int4-g64-zp, rtn-int4-g128-zp, gptq-*, awq-*)"
        )
    if grid.group_size is not None:
        for name, parts in state.linears.items():
            cols = int(parts["shape"][1])
            if cols % grid.group_size:
                return (
                    f"group size {grid.group_size} does not divide {name}'s {cols} input columns; the formats' "
                    "loaders (vLLM, transformers) need whole groups: choose a group size that divides "
                    f"{cols} (e.g. {_divisor_hint(cols)})"
                )
    return None


def _divisor_hint(cols: int) -> str:
    return ", ".join(str(g) for g in (32, 64, 128) if cols % g == 0) or "per-channel"


class Exporter(ABC):
    """One checkpoint format: which states it holds, its tensors per linear, its quantization_config."""

    #: registry name and --attnlab-vllm-quant-format value
    name: str = ""
    #: bits the format stores
    bits: tuple[int, ...] = (4,)

    def unsupported(self, state: QuantState) -> str | None:
        """None when `state` can be written exactly, else why not."""
        if state.grid.bits not in self.bits:
            return f"{self.name} stores {'/'.join(map(str, self.bits))}-bit weights, not {state.grid.bits}-bit"
        return common_reason(state)

    @abstractmethod
    def linear_tensors(self, name: str, lc: LinearCodes, symmetric: bool, dtype: torch.dtype) -> dict[str, Any]:
        """The stored tensors of one quantized linear (its float weight is not stored). `symmetric`:
        every linear's zero points sit at the midpoint, so the format may leave them out."""

    @abstractmethod
    def quant_config(self, state: QuantState, symmetric: bool) -> dict[str, Any]:
        """config.json's `quantization_config`."""

    def extra_files(self, config: dict[str, Any]) -> dict[str, str]:
        """Other files the format's loaders read (name -> text)."""
        return {}

    def write(self, state: QuantState, model: Any, tokenizer: Any, folder: Path) -> None:
        """Write the checkpoint of `model` (the full-precision base) quantized as `state` into `folder`."""
        from safetensors.torch import save_file

        dtype = next(model.parameters()).dtype
        tensors = float_tensors(model, state, dtype)
        codes = {name: linear_codes(state, name) for name in state.linears}
        symmetric = all(lc.symmetric for lc in codes.values())
        for name, lc in codes.items():
            tensors.update(self.linear_tensors(name, lc, symmetric, dtype))
        save_file(
            {k: v.contiguous() for k, v in tensors.items()}, str(folder / WEIGHTS_FILE), metadata={"format": "pt"}
        )
        config = copy.deepcopy(model.config)
        qcfg = self.quant_config(state, symmetric)
        config.quantization_config = qcfg
        config.save_pretrained(folder)
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            gen.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        for fname, text in self.extra_files(qcfg).items():
            (folder / fname).write_text(text)
        (folder / "attnlab-export.json").write_text(
            json.dumps({"format": self.name, "grid": state.grid.__dict__, "info": state.info}, default=str, indent=1)
        )


def float_tensors(model: Any, state: QuantState, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every parameter the format keeps in float (at `dtype`): the base model's, with the state's changed
    floats (AWQ's folded norms and biases); quantized linears' weights and a tied lm_head are left out."""
    quantized = {f"{name}.weight" for name in state.linears}
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    out = {}
    for key, t in model.state_dict().items():
        if key in quantized or (tied and key == "lm_head.weight"):
            continue
        t = state.floats.get(key, t)
        out[key] = t.detach().to("cpu", dtype).clone()
    return out
