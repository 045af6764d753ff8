"""Per-layer capture and diff: forward hooks on every decoder layer of a reference and a candidate.

The diff names the first layer whose output diverges (cosine below a threshold, or relative L2
error above one). Cosine alone is blind to a layer that only rescales its output; the relative
error catches that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pytest_attnlab.metrics.compare import cosine, max_abs_diff, relative_error


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers (the longest ModuleList named `layers`/`h`/`blocks`)."""
    candidates = [
        module
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "h", "blocks")
    ]
    if not candidates:
        raise ValueError(f"no decoder layer stack found in {type(model).__name__}")
    return max(candidates, key=len)


@dataclass
class Capture:
    """Every decoder layer's output (hidden states, float32 on CPU) and the final logits."""

    layers: list[torch.Tensor]
    logits: torch.Tensor | None = None


class LayerProbe:
    """Context manager that records each decoder layer's output while active."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.outputs: list[torch.Tensor] = []
        self._handles: list[Any] = []

    def __enter__(self) -> LayerProbe:
        self.outputs = []
        for layer in decoder_layers(self.model):
            self._handles.append(layer.register_forward_hook(self._hook))
        return self

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        self.outputs.append(hidden.detach().to("cpu", torch.float32))

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@torch.inference_mode()
def capture(model: nn.Module, inputs: Mapping[str, torch.Tensor] | torch.Tensor) -> Capture:
    """Run one forward pass and capture each decoder layer's output and the logits."""
    if isinstance(inputs, torch.Tensor):
        inputs = {"input_ids": inputs}
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    with LayerProbe(model) as probe:
        out = model(**inputs, use_cache=False)
    return Capture(layers=probe.outputs, logits=out.logits.detach().to("cpu", torch.float32))


@dataclass
class LayerRow:
    layer: int
    cosine: float
    max_abs: float
    rel_err: float
    ok: bool


@dataclass
class LayerDiff:
    """Per-layer comparison of a candidate against a reference."""

    rows: list[LayerRow]
    cos_threshold: float
    rel_threshold: float
    logits_cosine: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def first_divergent(self) -> int | None:
        return next((r.layer for r in self.rows if not r.ok), None)

    @property
    def min_cosine(self) -> float:
        return min(r.cosine for r in self.rows)

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "layer": r.layer,
                "cosine": f"{r.cosine:.6f}",
                "max_abs": f"{r.max_abs:.4g}",
                "rel_err": f"{r.rel_err:.4g}",
                "ok": "yes" if r.ok else "DIVERGED",
            }
            for r in self.rows
        ]

    def describe(self) -> str:
        first = self.first_divergent
        if first is None:
            return f"all {len(self.rows)} layers within cosine >= {self.cos_threshold}, rel_err <= {self.rel_threshold}"
        r = self.rows[first]
        return (
            f"first divergent layer: {first} (cosine {r.cosine:.6f} vs threshold {self.cos_threshold}, "
            f"rel_err {r.rel_err:.4g} vs threshold {self.rel_threshold})"
        )


def diff(
    reference: Capture, candidate: Capture, *, cos_threshold: float = 0.99, rel_threshold: float = 0.1
) -> LayerDiff:
    if len(reference.layers) != len(candidate.layers):
        raise ValueError(f"layer count differs: {len(reference.layers)} vs {len(candidate.layers)}")
    rows = []
    for i, (ref, cand) in enumerate(zip(reference.layers, candidate.layers, strict=True)):
        c, rel = cosine(cand, ref), relative_error(cand, ref)
        rows.append(LayerRow(i, c, max_abs_diff(cand, ref), rel, c >= cos_threshold and rel <= rel_threshold))
    logits_cos = None
    if reference.logits is not None and candidate.logits is not None:
        logits_cos = cosine(candidate.logits, reference.logits)
    return LayerDiff(rows, cos_threshold, rel_threshold, logits_cos)
