"""A model's quantized state (packed linears + changed float params), its runtime forms and its bytes.

The state is what the torch methods (RTN, GPTQ, AWQ) produce and what the cache stores:
  `<linear>.qweight`, `<linear>.scales`, `<linear>.zeros`   packed weights (grid.pack)
  `float.<param>`                                           float params the method changed (AWQ's
                                                            folded RMSNorm weights, scaled biases)
Runtime forms: "fake" writes the dequantized weights back into the nn.Linear (fast on CPU, same
memory as the baseline); "packed" swaps in PackedLinear, which keeps only the packed tensors and
dequantizes in forward (real memory saving, no fused kernel, so slow).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pytest_attnlab.quant import grid as G

RUNTIMES = ("fake", "packed")
STATE_FILE = "quantized.safetensors"
FLOAT_PREFIX = "float."
#: attribute set on a fake-quantized nn.Linear: the bytes its packed form holds
PACKED_NBYTES = "attnlab_packed_nbytes"


@dataclass
class QuantState:
    grid: G.Grid
    linears: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    floats: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def add_linear(self, name: str, weight: torch.Tensor, qt: G.QTensor | None = None) -> None:
        """Pack `weight` (quantizing it by RTN unless the codes `qt` are given)."""
        qt = qt if qt is not None else G.quantize(self.grid, weight)
        self.linears[name] = {**G.pack(self.grid, qt), "shape": torch.tensor(list(weight.shape))}

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        tensors = {f"{n}.{k}": t for n, d in self.linears.items() for k, t in d.items()}
        tensors.update({FLOAT_PREFIX + n: t.contiguous() for n, t in self.floats.items()})
        meta = {"grid": json.dumps(self.grid.__dict__), "info": json.dumps(self.info, default=str)}
        save_file(tensors, str(folder / STATE_FILE), metadata=meta)

    @classmethod
    def load(cls, folder: Path) -> QuantState:
        from safetensors import safe_open

        with safe_open(str(folder / STATE_FILE), "pt") as fh:
            meta = fh.metadata()
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        state = cls(G.Grid(**json.loads(meta["grid"])), info=json.loads(meta["info"]))
        for key, t in tensors.items():
            if key.startswith(FLOAT_PREFIX):
                state.floats[key.removeprefix(FLOAT_PREFIX)] = t
            else:
                name, part = key.rsplit(".", 1)
                state.linears.setdefault(name, {})[part] = t
        return state


class PackedLinear(nn.Module):
    """A linear layer that stores only packed codes, scales and zeros; dequantizes on every call."""

    def __init__(self, grid: G.Grid, tensors: dict[str, torch.Tensor], bias: torch.Tensor | None, dtype: Any):
        super().__init__()
        self.grid, self.dtype = grid, dtype
        self.out_features, self.in_features = (int(v) for v in tensors["shape"])
        for key in ("qweight", "scales", "zeros"):
            if key in tensors:
                self.register_buffer(key, tensors[key])
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def weight_q(self) -> torch.Tensor:
        parts = {k: getattr(self, k) for k in ("qweight", "scales", "zeros") if hasattr(self, k)}
        qt = G.unpack(self.grid, parts, self.in_features)
        return G.dequantize(self.grid, qt, (self.out_features, self.in_features)).to(self.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_q().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        g = self.grid
        return f"in={self.in_features}, out={self.out_features}, bits={g.bits}, group={g.group_size}"


def apply(model: nn.Module, state: QuantState, runtime: str = "fake") -> nn.Module:
    """Write `state` into `model` (in place) in the chosen runtime form."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: choose from {', '.join(RUNTIMES)}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in state.floats.items():
            params[name].copy_(t.to(params[name].dtype))
        for name, tensors in state.linears.items():
            linear = model.get_submodule(name)
            device, dtype = linear.weight.device, linear.weight.dtype
            tensors = {k: v.to(device) for k, v in tensors.items()}
            if runtime == "fake":
                qt = G.unpack(state.grid, tensors, linear.in_features)
                linear.weight.copy_(G.dequantize(state.grid, qt, linear.weight.shape).to(dtype))
                setattr(linear, PACKED_NBYTES, G.nbytes({k: v for k, v in tensors.items() if k != "shape"}))
            else:
                parent, _, child = name.rpartition(".")
                packed = PackedLinear(state.grid, tensors, linear.bias, dtype)
                setattr(model.get_submodule(parent) if parent else model, child, packed)
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer, each tensor once (tied embeddings count once).

    A tensor is its own bytes, not its storage's: the fast decode path fuses q/k/v and gate/up
    into one tensor and points the modules at views of it, and each view still counts.
    A fake-quantized linear counts its packed bytes, not its float weight; bitsandbytes params
    add their quantization state (absmax, SCB) held beside the packed data.
    """
    seen: set[object] = set()
    total = 0
    packed_weights = {id(m.weight): getattr(m, PACKED_NBYTES) for m in model.modules() if hasattr(m, PACKED_NBYTES)}
    for t in [*model.parameters(), *model.buffers()]:
        key = (t.data_ptr(), t.dtype, t.shape) if t.device.type != "meta" else id(t)
        if key in seen:
            continue
        seen.add(key)
        total += packed_weights.get(id(t), t.numel() * t.element_size())
        total += _bnb_state_bytes(t)
    return total


def _bnb_state_bytes(t: torch.Tensor) -> int:
    extra = 0
    scb = getattr(t, "SCB", None)
    if isinstance(scb, torch.Tensor):
        extra += scb.numel() * scb.element_size()
    qs = getattr(t, "quant_state", None)
    if qs is not None and hasattr(qs, "as_dict"):
        for v in qs.as_dict(packed=True).values():
            if isinstance(v, torch.Tensor):
                extra += v.numel() * v.element_size()
    return extra
