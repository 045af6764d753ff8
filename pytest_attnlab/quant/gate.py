"""The quantization gate, calibrated per method class.

A fixed logits-cosine floor lets bugs through: on SmolLM2-135M every decoder linear x1.10, Gaussian
noise at 5 % of the weight std and int6 rounding inside an "8-bit" method all keep cosine >= 0.95,
while a correct 4-bit RTN falls below it (0.80 to 0.93). So a method is held to the errors of the
RTN of its own grid (`reference_of`: the RTN method with the same bits, group size and zero form),
computed straight from quant.grid (`Grid.fake` on every decoder linear, not through any method's
packing, runtime or cache) on the same model and tokens. With the margins of its class
(`quant.policy.POLICIES`, by bits):

  outer:        logits cosine >= 0.95; where the grid's RTN itself is below 0.95 on this model (4-bit
                on a 135M model), cosine distance <= `outer_margin` x the RTN's, said in the check's note;
  per layer:    local error (probe_local: the layer run on the full-precision input) <= local_margin
                x the RTN's local error in that layer; the first layer above is named;
  calibrated:   (GPTQ, AWQ) mean over layers of that ratio <= `calibrated_gain`: a method that
                minimises layer output error and does not beat plain rounding did nothing (on a
                trained model; untrained weights have no outlier channels for it to exploit);
                minimises layer output error and does not beat plain rounding did nothing;
  next token:   mean KL(p_fp || p_method) <= kl_margin x the RTN's;
                top-1 flip rate <= r + flip_share x (1 - r) + 2 binomial standard errors of r on the
                positions counted, r the RTN's, the excess capped at (1 - r) / 2: a threshold in [r, 1),
                below 1 whenever r is (`flip_threshold`).

Every figure is returned with the threshold it was checked against (`GateResult.checks`), and
`GateResult.record(metrics)` writes them all to metrics.csv.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pytest_attnlab import probe
from pytest_attnlab.metrics.similarity import next_token_kl, top1_flip_rate
from pytest_attnlab.models.anatomy import looks_untrained
from pytest_attnlab.quant import api
from pytest_attnlab.quant.layers import target_linears
from pytest_attnlab.quant.methods import QUANTIZERS
from pytest_attnlab.quant.packed import weight_bytes
from pytest_attnlab.quant.policy import POLICIES, GatePolicy, policy_for
from pytest_attnlab.quant.rtn import RTN

__all__ = [
    "POLICIES",
    "Check",
    "Gate",
    "GatePolicy",
    "GateResult",
    "Measurement",
    "judge",
    "measure",
    "outer_check",
    "policy_for",
    "reference_model",
    "reference_of",
    "flip_threshold",
    "untrained",
    "weight_bytes_limit",
]

#: the reference of a method with neither a `reference` nor a grid, by its nominal bits
REFERENCE_BY_BITS = {8: "rtn-int8", 4: "rtn-int4-g128"}


def reference_of(quantizer: Any) -> str | None:
    """The RTN method whose errors calibrate `quantizer`'s gate: its own `reference`, else the
    registered RTN of its `grid` (a conftest copy of rtn-int4-g64-zp under a new name is held to
    rtn-int4-g64-zp), else by bits."""
    own = getattr(quantizer, "reference", None)
    if own:
        return own
    grid = getattr(quantizer, "grid", None)
    if grid is not None:
        for name in QUANTIZERS.names():
            method = QUANTIZERS.get(name)
            if isinstance(method, RTN) and method.grid == grid:
                return name
    return REFERENCE_BY_BITS.get(getattr(quantizer, "bits", 16))


@dataclass(frozen=True)
class Measurement:
    """A model's figures against the full-precision reference on the same tokens."""

    local: tuple[float, ...]  # per decoder layer: local error (relative to the reference layer's update)
    kl: float  # mean next-token KL(p_fp || p_model), nats
    flip_rate: float  # fraction of positions whose argmax next token changed
    logits_cosine: float
    positions: int = 0  # positions the flip rate is counted on (0: unknown, no noise allowance)


def measure(reference: probe.Capture, candidate: probe.Capture) -> Measurement:
    """The gate's figures of `candidate` (captured with `reference=reference`)."""
    if candidate.local is None:
        raise ValueError("the candidate needs local errors: capture it with probe.capture(..., reference=...)")
    layers = probe.diff(reference, candidate, local_tolerance=float("inf"))
    return Measurement(
        local=tuple(float(r.local_rel_err) for r in layers.rows),  # type: ignore[arg-type]
        kl=next_token_kl(reference.logits, candidate.logits),
        flip_rate=top1_flip_rate(reference.logits, candidate.logits),
        positions=int(reference.logits.argmax(-1).numel()),
        logits_cosine=float(layers.logits_cosine),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Check:
    """One figure and the threshold it was checked against."""

    metric: str
    value: float
    threshold: float
    op: str  # ">=" or "<="
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.op == ">=" else self.value <= self.threshold

    def describe(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        note = f" ({self.note})" if self.note else ""
        return f"{self.metric} {self.value:.4g} {self.op} {self.threshold:.4g}: {verdict}{note}"


@dataclass
class GateResult:
    """The verdict on one method: every check, and the per-layer diff with calibrated tolerances."""

    method: str
    reference: str | None
    checks: list[Check]
    layers: probe.LayerDiff
    measured: Measurement
    calibration: Measurement | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def first_divergent(self) -> int | None:
        """The first layer whose local error exceeds its calibrated tolerance (None: none does)."""
        return self.layers.first_divergent if self.calibration is not None else None

    def check(self, metric: str) -> Check:
        return next(c for c in self.checks if c.metric == metric)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def describe(self) -> str:
        head = f"{self.method} (reference {self.reference or 'none'}): {'passed' if self.passed else 'FAILED'}"
        lines = [head, *("  " + c.describe() for c in self.checks)]
        if self.calibration is not None:
            lines.append("  " + self.layers.describe())
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """One line of a kill table: the figures, the named layers, the failed checks, the verdict."""
        ratio = next((c.value for c in self.checks if c.metric == "local_error_ratio"), None)
        mean = next((c.value for c in self.checks if c.metric == "local_error_mean_ratio"), None)
        first, cumulative = self.first_divergent, self.layers.first_divergent_cumulative
        return {
            "method": self.method,
            "logits_cosine": f"{self.measured.logits_cosine:.4f}",
            "kl": f"{self.measured.kl:.4f}",
            "flip_rate": f"{self.measured.flip_rate:.3f}",
            "max_local_ratio": "-" if ratio is None else f"{ratio:.3f}",
            "mean_local_ratio": "-" if mean is None else f"{mean:.3f}",
            "named_layer": "-" if first is None else first,
            "cumulative_layer": "-" if cumulative is None else cumulative,
            "failed": ",".join(c.metric for c in self.failures()) or "-",
            "verdict": "passed" if self.passed else "failed",
        }

    def record(self, metrics: Any, **context: Any) -> None:
        """Write every figure with its threshold (and the per-layer local errors) to `metrics`."""
        ref = {"reference_method": self.reference} if self.reference else {}
        for c in self.checks:
            # the outer gate says whether it is absolute or relative to the reference (outer_check)
            how = {"outer_gate": c.note} if c.metric == "logits_cosine" else {}
            metrics.record(c.metric, c.value, threshold=c.threshold, **ref, **how, **context)
        first = self.first_divergent
        cumulative = self.layers.first_divergent_cumulative
        metrics.record("first_divergent_layer", -1 if first is None else first, **context)
        metrics.record("first_divergent_layer_cumulative", -1 if cumulative is None else cumulative, **context)
        if self.calibration is not None:
            for row in self.layers.rows:
                metrics.record(
                    "layer_local_error", row.local_rel_err, threshold=row.local_tolerance, layer=row.layer, **context
                )
            metrics.table(
                f"{self.method}: local error per layer vs {self.reference}", self.layers.table(), highlight_row=first
            )


def judge(
    reference: probe.Capture,
    candidate: probe.Capture,
    calibration: Measurement | None,
    *,
    method: str = "",
    reference_name: str | None = None,
    policy: GatePolicy = POLICIES[8],
    logits_cosine: float | None = None,
    calibrated: bool = False,
    untrained: bool = False,
) -> GateResult:
    """Check `candidate` against the full-precision `reference` and its class's `calibration`.

    `logits_cosine` overrides the policy's outer gate (a per-method --attnlab-quant-threshold).
    `calibrated` (GPTQ, AWQ) holds the mean local-error ratio below 1: the method must beat its RTN;
    on `untrained` weights (no outlier channels to exploit) it is held to the uncalibrated mean.
    Without a calibration only the outer gate is checked (the diff keeps its default tolerances).
    """
    measured = measure(reference, candidate)
    checks = [outer_check(measured.logits_cosine, calibration, reference_name, policy, logits_cosine)]
    if calibration is None:
        return GateResult(method, None, checks, probe.diff(reference, candidate), measured)
    tolerances = [policy.local_margin * r + policy.floor for r in calibration.local]
    layers = probe.diff(reference, candidate, local_tolerance=tolerances)
    ratios = _ratios(measured.local, calibration.local, policy.floor)
    worst = max(range(len(ratios)), key=ratios.__getitem__)
    checks.append(
        Check("local_error_ratio", ratios[worst], policy.local_margin, "<=", f"max over layers, at layer {worst}")
    )
    if calibrated and not untrained:
        mean_threshold, mean_note = policy.calibrated_gain, f"mean over layers; calibrated: must beat {reference_name}"
    elif calibrated:
        mean_threshold = policy.mean_margin
        mean_note = "mean over layers; calibrated, but untrained weights leave calibration nothing to exploit"
    else:
        mean_threshold, mean_note = policy.mean_margin, "mean over layers: a whole grid's error shows here"
    checks.append(Check("local_error_mean_ratio", sum(ratios) / len(ratios), mean_threshold, "<=", mean_note))
    r = calibration.flip_rate
    checks += [
        Check("next_token_kl", measured.kl, policy.kl_margin * calibration.kl + policy.floor, "<=", "nats"),
        Check(
            "top1_flip_rate",
            measured.flip_rate,
            flip_threshold(r, measured.positions, policy.flip_share),
            "<=",
            f"fraction of {measured.positions} positions; {reference_name} flips {r:.3g}",
        ),
    ]
    return GateResult(method, reference_name, checks, layers, measured, calibration)


def flip_threshold(r: float, positions: int, share: float) -> float:
    """The largest flip rate for a reference's `r`: r + share x (1 - r), plus two binomial standard
    errors of r on `positions` (the flips are counted on a few hundred tokens), the excess capped at
    half the positions the reference keeps, so the threshold stays below 1 whenever r does."""
    noise = 2.0 * math.sqrt(r * (1.0 - r) / positions) if positions else 0.0
    return r + min(share * (1.0 - r) + noise, (1.0 - r) / 2)


def outer_check(
    cosine: float,
    calibration: Measurement | None,
    reference_name: str | None,
    policy: GatePolicy,
    logits_cosine: float | None = None,
) -> Check:
    """The outer logits-cosine gate: the run's (or the method's) floor, or, where the RTN reference
    of the method's grid is itself below that floor on this model, relative to the reference."""
    floor = policy.logits_cosine if logits_cosine is None else logits_cosine
    if calibration is None or calibration.logits_cosine >= floor:
        return Check("logits_cosine", cosine, floor, ">=", "outer gate, absolute")
    ref = calibration.logits_cosine
    relative = 1.0 - policy.outer_margin * (1.0 - ref)
    note = (
        f"outer gate relative to {reference_name}: its cosine {ref:.4f} is below {floor:g} on this model, "
        f"so distance <= {policy.outer_margin:g}x its"
    )
    return Check("logits_cosine", cosine, max(relative, -1.0), ">=", note)


def _ratios(values: Sequence[float], references: Sequence[float], floor: float) -> list[float]:
    """value / reference per layer; at rounding level (both <= floor) the ratio is 1."""
    return [v / r if r > floor else (1.0 if v <= floor else v / floor) for v, r in zip(values, references, strict=True)]


#: bits per quantized weight a method may store beyond its nominal bits, for group scales and zero
#: points: Q4_1's float16 scale + float16 minimum per 32 weights is 1 bit per weight (rtn-int4-g32)
METADATA_BITS = 1.25
#: bytes per quantized matrix for tables stored with each (bitsandbytes NF4 keeps its 16-entry
#: code and its double quantization's 256-entry float32 code with every weight: about 1.1 KiB)
TABLE_BYTES = 2048


def weight_bytes_limit(base: torch.nn.Module, bits: int) -> float:
    """The largest weight-bytes ratio (quantized / `base`) a `bits`-bit method may reach: every
    decoder linear weight at `bits + METADATA_BITS` per weight plus TABLE_BYTES per matrix,
    everything else as in `base`.

    Derived from the model, so it holds for any baseline dtype and any share of float embeddings
    (on SmolLM2 in float32: 0.34 at 4 bits, 0.44 at 8), and a model cast to float16 that claims
    8 bits exceeds it, as it would not exceed issue 15's flat 0.55 (it takes 0.50).
    """
    total = weight_bytes(base)
    weights = [m.weight for m in target_linears(base).values()]
    float_bytes = sum(w.numel() * w.element_size() for w in weights)
    allowed = sum(w.numel() * (bits + METADATA_BITS) / 8 + TABLE_BYTES for w in weights)
    return (total - float_bytes + allowed) / total


class Gate:
    """The gate on one model and one token sequence: the full-precision capture, and each reference
    method's calibration measured once and reused (`quantize` is `pytest_attnlab.quant.quantize` or
    the suite's caching `quantize_model` fixture; `policy` None: each method's class policy)."""

    def __init__(
        self,
        loaded: Any,
        ids: torch.Tensor,
        *,
        quantize: Callable[[Any, str], Any] | None = None,
        policy: GatePolicy | None = None,
    ) -> None:
        if quantize is None:
            quantize = api.quantize
        self.loaded, self.ids, self.policy, self._quantize = loaded, ids, policy, quantize
        self.reference = probe.capture(loaded.model, ids)
        self.untrained = untrained(loaded)
        self._calibrations: dict[str, Measurement] = {}

    def capture(self, model: Any) -> probe.Capture:
        return probe.capture(model, self.ids, reference=self.reference)

    def calibration(self, name: str) -> Measurement:
        if name not in self._calibrations:
            model = reference_model(self.loaded, name, self._quantize)
            self._calibrations[name] = measure(self.reference, self.capture(model))
        return self._calibrations[name]

    def check(
        self,
        method: str,
        model: Any,
        reference: str | None,
        logits_cosine: float | None = None,
        *,
        quantizer: Any = None,
    ) -> GateResult:
        """Judge `model` (quantized by `method`, the `quantizer` object giving its class and whether it
        calibrates) against the calibration of `reference`."""
        calibration = self.calibration(reference) if reference else None
        return judge(
            self.reference,
            self.capture(model),
            calibration,
            method=method,
            reference_name=reference,
            policy=self.policy or policy_for(quantizer),
            logits_cosine=logits_cosine,
            calibrated=bool(getattr(quantizer, "calibrated", False)),
            untrained=self.untrained,
        )


def untrained(loaded: Any) -> bool:
    """Random shapes, or a checkpoint whose weights still have the random init's spread."""
    return loaded.spec.source == "random" or looks_untrained(loaded.model)


def reference_model(loaded: Any, name: str, quantize: Callable[[Any, str], Any]) -> Any:
    """The reference method `name` applied to `loaded.model`: for an RTN (a registered method with a
    `grid`), every decoder linear rounded by `Grid.fake` on a copy, independent of the method's own
    packing, runtime and cache (so an RTN method through its pipeline is compared with the formula);
    any other reference through `quantize`."""
    method = QUANTIZERS.get(name) if name in QUANTIZERS else None
    if not isinstance(method, RTN):
        return quantize(loaded, name).model
    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for linear in target_linears(model).values():
            linear.weight.copy_(method.grid.fake(linear.weight))
    return model
