"""Layer-local errors: each candidate decoder layer run on the reference's input to that layer.

A cumulative diff compares hidden states after layer i, which carry every error made before i and
are dominated by the residual stream, so a bug inside one projection of layer k shows up many
layers later or not at all. Teacher forcing removes the inherited part: during one forward pass
of the candidate, a pre-hook on every decoder layer swaps the hidden states it receives for the
reference's, so each layer's output differs from the reference's only by that layer's own error.
The layer keeps its own keyword arguments (rotary position embeddings, attention mask), so a
wrong RoPE base or wrong positions show up as a local error in every layer, first in layer 0.

The local error is measured on the layer's update (output - input), not on its output: the
residual input is identical by construction and would only dilute the figure.

A model in bfloat16 or float16 runs its teacher-forced pass in float32 (`upcast`), the reference's
own layers too: a local error in half precision carries the rounding of every op in the layer, on
both sides, which differs from kernel to kernel and drowns a small bug the weights carry (a q_proj
bug in Gemma-2's first layer: 5.5x its RTN reference's local error in bf16 on CPU, 6.3x in float32,
below 2x in bf16 on an H100). Errors of the half-precision run itself stay in the logits checks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any

import torch
from torch import nn

from pytest_attnlab.metrics.similarity import cosine


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


class TeacherForcing:
    """Context manager: while active, decoder layer i receives `inputs[i]` and its output is recorded.

    `inputs` are the reference's layer inputs (any device and dtype: each is moved to the hidden
    states' own device and dtype before it replaces them).
    """

    def __init__(self, layers: Sequence[nn.Module], inputs: Sequence[torch.Tensor]) -> None:
        if len(layers) != len(inputs):
            raise ValueError(f"layer count differs: {len(layers)} layers vs {len(inputs)} reference inputs")
        self.layers, self.inputs = list(layers), list(inputs)
        self.outputs: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles: list[Any] = []

    def __enter__(self) -> TeacherForcing:
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_pre_hook(self._pre(i), with_kwargs=True))
            self._handles.append(layer.register_forward_hook(self._post(i)))
        return self

    def _pre(self, index: int) -> Any:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            own = _hidden(args, kwargs)
            forced = self.inputs[index].to(own.device, own.dtype)
            if forced.shape != own.shape:
                raise ValueError(f"layer {index}: reference input {tuple(forced.shape)} vs {tuple(own.shape)}")
            if args:
                return (forced, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": forced}

        return hook

    def _post(self, index: int) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self.outputs[index] = _output(output).detach().to("cpu", torch.float32)

        return hook

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


HALF = (torch.bfloat16, torch.float16)


def half_precision(model: nn.Module) -> bool:
    """Whether any floating parameter of `model` is bfloat16 or float16."""
    return any(p.dtype in HALF for p in model.parameters())


@contextmanager
def upcast(model: nn.Module) -> Iterator[None]:
    """Every bfloat16/float16 parameter and buffer of `model` in float32 inside the block, and exactly
    as before after it (half -> float32 -> half is lossless); integer (packed) tensors are left alone."""
    changed = [(t, t.dtype) for t in chain(model.parameters(), model.buffers()) if t.dtype in HALF]
    try:
        _cast(changed, torch.float32)
        yield
    finally:
        _cast(changed, None)


def _cast(tensors: list[tuple[torch.Tensor, torch.dtype]], dtype: torch.dtype | None) -> None:
    """Each tensor's data to `dtype` (None: its own recorded dtype), as normal tensors even inside
    inference_mode, so the model stays usable with autograd afterwards (GPTQ, training)."""
    with torch.inference_mode(False), torch.no_grad():
        for tensor, own in tensors:
            tensor.data = tensor.data.to(dtype or own)


@torch.inference_mode()
def teacher_forced(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    layers: Sequence[nn.Module],
    ref_inputs: Sequence[torch.Tensor],
    *,
    float32: bool = False,
) -> list[torch.Tensor]:
    """Every decoder layer's output when it is fed the reference's input (float32, CPU); with
    `float32`, computed in float32 (`upcast`) whatever the model's own dtype."""
    with TeacherForcing(layers, ref_inputs) as forcing, upcast(model) if float32 else _nothing():
        model(**inputs, use_cache=False)
    missing = [i for i, out in enumerate(forcing.outputs) if out is None]
    if missing:
        raise RuntimeError(f"decoder layers {missing} did not run in the teacher-forced pass")
    return [out for out in forcing.outputs if out is not None]


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@dataclass(frozen=True)
class LocalError:
    """One layer's own error: its update (output - input) against the reference layer's update."""

    rel_err: float  # ||cand_out - ref_out|| / ||ref_out - ref_in||
    cosine: float  # cosine of the candidate's update with the reference's


def local_error(ref_in: torch.Tensor, ref_out: torch.Tensor, cand_out: torch.Tensor) -> LocalError:
    """The error a layer adds on its own, given the same input as the reference (float64 norms)."""
    ref_update = (ref_out.double() - ref_in.double()).flatten()
    cand_update = (cand_out.double() - ref_in.double()).flatten()
    denom = ref_update.norm()
    err = (cand_update - ref_update).norm()
    rel = float(err / denom) if denom > 0 else (0.0 if err == 0 else float("inf"))
    return LocalError(rel, cosine(cand_update, ref_update))
