"""Walking a decoder stack layer by layer with calibration data (what GPTQ and AWQ both need).

`layer_inputs` runs the embedding and stops at the first decoder layer, keeping its positional
arguments and keyword arguments (attention mask, rotary position embeddings); `run_layer` then
feeds any layer with those, so each layer can be calibrated on the outputs of the one before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pytest_attnlab.hf_compat import CACHE_NAMES
from pytest_attnlab.probe import decoder_layers


def layer_prefix(model: nn.Module) -> str:
    layers = decoder_layers(model)
    return next(name for name, m in model.named_modules() if m is layers)


def target_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear inside the decoder layers (embeddings and lm_head stay in float)."""
    prefix = layer_prefix(model)
    return {
        f"{prefix}.{name}": m for name, m in decoder_layers(model).named_modules() if isinstance(m, nn.Linear) and name
    }


class _Stop(Exception):
    pass


@dataclass
class LayerInputs:
    hidden: torch.Tensor  # [samples, seqlen, hidden]
    kwargs: dict[str, Any]


@torch.no_grad()
def layer_inputs(model: nn.Module, ids: torch.Tensor) -> LayerInputs:
    """The first decoder layer's input for `ids` [samples, seqlen], and the kwargs every layer gets."""
    layer0 = decoder_layers(model)[0]
    seen: dict[str, Any] = {}

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        seen["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        seen["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop

    handle = layer0.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(input_ids=ids.to(next(model.parameters()).device), use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    kwargs = {k: v for k, v in seen["kwargs"].items() if k not in (*CACHE_NAMES, "use_cache")}
    return LayerInputs(seen["hidden"], kwargs)


@torch.no_grad()
def run_layer(layer: nn.Module, inputs: LayerInputs, hidden: torch.Tensor | None = None) -> torch.Tensor:
    out = layer(inputs.hidden if hidden is None else hidden, **inputs.kwargs)
    return out[0] if isinstance(out, tuple) else out


@contextmanager
def record_inputs(modules: dict[str, nn.Module]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """While active, collect every input tensor each named module receives."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    handles = [
        m.register_forward_pre_hook(lambda mod, args, name=name: seen[name].append(args[0].detach()))
        for name, m in modules.items()
    ]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()
