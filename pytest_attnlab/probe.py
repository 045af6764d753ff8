"""Per-layer capture and diff: forward hooks on every decoder layer of a reference and a candidate.

Two views of each layer. Cumulative: the hidden states after layer i, which carry every error
made before i. Local (probe_local): layer i of the candidate run on the reference's input to
layer i, so the error is that layer's own. A candidate captured with `reference=` has both, and
the diff then names the first layer whose *local* error exceeds its tolerance; without it, the
first layer whose cumulative output diverges (cosine below a threshold, or relative L2 error
above one; cosine alone is blind to a layer that only rescales its output).

    ref = capture(ref_model, ids)
    cand = capture(cand_model, ids, reference=ref)   # one more forward pass, teacher-forced
    result = diff(ref, cand)                         # result.first_divergent: by local error
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pytest_attnlab.metrics.similarity import cosine, max_abs_diff, relative_error
from pytest_attnlab.probe_local import half_precision, local_error, teacher_forced


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
    """Every decoder layer's input and output (hidden states, float32 on CPU) and the final logits.

    `local` is filled when captured with `reference=`: each layer's output on the reference's input.
    `own_float32` is filled for a half-precision model captured without `reference=`: its own layers
    recomputed in float32 on its own inputs, so that the local errors against it (as a reference) are
    float32 on both sides (probe_local's docstring). It is never a candidate's local output: those are
    taken on the reference's inputs.
    """

    layers: list[torch.Tensor]
    logits: torch.Tensor | None = None
    inputs: list[torch.Tensor] = field(default_factory=list)
    local: list[torch.Tensor] | None = None
    own_float32: list[torch.Tensor] | None = None


class LayerProbe:
    """Context manager that records each decoder layer's input and output while active."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self._handles: list[Any] = []

    def __enter__(self) -> LayerProbe:
        self.inputs, self.outputs = [], []
        for layer in decoder_layers(self.model):
            self._handles.append(layer.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
            self._handles.append(layer.register_forward_hook(self._hook))
        return self

    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        self.inputs.append(hidden.detach().to("cpu", torch.float32))

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        self.outputs.append(hidden.detach().to("cpu", torch.float32))

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@torch.inference_mode()
def capture(
    model: nn.Module, inputs: Mapping[str, torch.Tensor] | torch.Tensor, *, reference: Capture | None = None
) -> Capture:
    """Run one forward pass and capture each decoder layer's input, output and the logits.

    With `reference` (a capture of the reference model on the same inputs), a second,
    teacher-forced pass records each layer's output on the reference's input (`Capture.local`): in
    float32 where the reference's was (a half-precision reference, captured without `reference`).
    """
    if isinstance(inputs, torch.Tensor):
        inputs = {"input_ids": inputs}
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    with LayerProbe(model) as probe:
        out = model(**inputs, use_cache=False)
    result = Capture(layers=probe.outputs, logits=out.logits.detach().to("cpu", torch.float32), inputs=probe.inputs)
    layers = decoder_layers(model)
    if reference is not None:
        if not reference.inputs:
            raise ValueError("the reference capture holds no layer inputs: capture it with probe.capture")
        float32 = reference.own_float32 is not None  # the reference recomputed itself in float32
        result.local = teacher_forced(model, inputs, layers, reference.inputs, float32=float32)
    elif half_precision(model):
        result.own_float32 = teacher_forced(model, inputs, layers, result.inputs, float32=True)
    return result


@dataclass
class LayerRow:
    """One layer: cumulative cosine / max-abs / relative error, and its local error when measured."""

    layer: int
    cosine: float
    max_abs: float
    rel_err: float
    ok: bool  # within tolerance: by local error when measured, else by the cumulative thresholds
    local_rel_err: float | None = None
    local_cosine: float | None = None
    local_tolerance: float | None = None
    cumulative_ok: bool = True  # the cumulative output within cos_threshold / rel_threshold


@dataclass
class LayerDiff:
    """Per-layer comparison of a candidate against a reference."""

    rows: list[LayerRow]
    cos_threshold: float
    rel_threshold: float
    logits_cosine: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        """True when the layers were judged by their local (teacher-forced) error."""
        return bool(self.rows) and self.rows[0].local_rel_err is not None

    @property
    def first_divergent(self) -> int | None:
        return next((r.layer for r in self.rows if not r.ok), None)

    @property
    def first_divergent_cumulative(self) -> int | None:
        """The first layer whose cumulative output leaves cos_threshold / rel_threshold (the old view)."""
        return next((r.layer for r in self.rows if not r.cumulative_ok), None)

    @property
    def min_cosine(self) -> float:
        return min(r.cosine for r in self.rows)

    def table(self) -> list[dict[str, Any]]:
        out = []
        for r in self.rows:
            row = {
                "layer": r.layer,
                "cosine": f"{r.cosine:.6f}",
                "max_abs": f"{r.max_abs:.4g}",
                "rel_err": f"{r.rel_err:.4g}",
            }
            if r.local_rel_err is not None:
                row["local_rel_err"] = f"{r.local_rel_err:.4g}"
                row["local_tolerance"] = f"{r.local_tolerance:.4g}"
            row["ok"] = "yes" if r.ok else "DIVERGED"
            out.append(row)
        return out

    def describe(self) -> str:
        first = self.first_divergent
        if first is None:
            if self.local:
                return f"all {len(self.rows)} layers within their local-error tolerance"
            return f"all {len(self.rows)} layers within cosine >= {self.cos_threshold}, rel_err <= {self.rel_threshold}"
        r = self.rows[first]
        if self.local:
            return (
                f"first divergent layer: {first} (local error {r.local_rel_err:.4g} vs tolerance "
                f"{r.local_tolerance:.4g}, update cosine {r.local_cosine:.6f}; cumulative cosine {r.cosine:.6f}, "
                f"rel_err {r.rel_err:.4g})"
            )
        return (
            f"first divergent layer: {first} (cosine {r.cosine:.6f} vs threshold {self.cos_threshold}, "
            f"rel_err {r.rel_err:.4g} vs threshold {self.rel_threshold})"
        )


def diff(
    reference: Capture,
    candidate: Capture,
    *,
    cos_threshold: float = 0.99,
    rel_threshold: float = 0.1,
    local_tolerance: float | Sequence[float] | None = None,
) -> LayerDiff:
    """Compare two captures layer by layer.

    When `candidate.local` is present (captured with `reference=`), layer i is within tolerance
    when its local error (relative to the reference layer's update) is <= `local_tolerance` (one
    figure, or one per layer; default `rel_threshold`). A relative error <= 0.1 implies an update
    cosine >= 0.995, so no separate cosine check is needed there. Otherwise the cumulative output
    must keep cosine >= `cos_threshold` and relative error <= `rel_threshold`.
    """
    if len(reference.layers) != len(candidate.layers):
        raise ValueError(f"layer count differs: {len(reference.layers)} vs {len(candidate.layers)}")
    n = len(reference.layers)
    local = candidate.local is not None and len(reference.inputs) == n
    tolerances = _tolerances(rel_threshold if local_tolerance is None else local_tolerance, n)
    rows = []
    for i, (ref, cand) in enumerate(zip(reference.layers, candidate.layers, strict=True)):
        c, rel = cosine(cand, ref), relative_error(cand, ref)
        cumulative_ok = c >= cos_threshold and rel <= rel_threshold
        row = LayerRow(i, c, max_abs_diff(cand, ref), rel, cumulative_ok, cumulative_ok=cumulative_ok)
        if local:
            own = reference.own_float32
            ref_out = ref if own is None else own[i]  # float32 (a half-precision reference)
            err = local_error(reference.inputs[i], ref_out, candidate.local[i])  # type: ignore[index]
            row.local_rel_err, row.local_cosine, row.local_tolerance = err.rel_err, err.cosine, tolerances[i]
            row.ok = err.rel_err <= tolerances[i]
        rows.append(row)
    logits_cos = None
    if reference.logits is not None and candidate.logits is not None:
        logits_cos = cosine(candidate.logits, reference.logits)
    return LayerDiff(rows, cos_threshold, rel_threshold, logits_cos)


def _tolerances(value: float | Sequence[float], n: int) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * n
    if len(value) != n:
        raise ValueError(f"local_tolerance: {len(value)} figures for {n} layers")
    return [float(v) for v in value]
