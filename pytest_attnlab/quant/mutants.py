"""Planted bugs, registered as quantizers: the proof that the quantization gate catches real bugs.

A mutant is a correct method (by default `rtn-int8`) followed by one bug, and presents itself as
a method of that class (same `bits`, same `reference`), so the gate holds it to the standard a
correct method of its class meets. Every mutant here must fail the gate (tests/test_quant_gate.py
runs them on a tiny model, suites/correctness/test_quant_gate_kill.py on the model under test).
A bug is a named function that edits the quantized copy in place; `MUTANTS` is a registry, so a
conftest.py can add its own:

    from pytest_attnlab.quant.mutants import MUTANTS, Mutant, scale_linears
    MUTANTS.register("my-bug", Mutant("my-bug", scale_linears(0.9, projections=("v_proj",))))

Mutants are not in `QUANTIZERS` (they would join `--attnlab-quant all`); register one there from a
conftest.py (`pytest_attnlab_register_quantizers`) to run it through the whole quantization suite.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from pytest_attnlab.quant import grid as G
from pytest_attnlab.quant.base import QuantContext, Quantizer
from pytest_attnlab.quant.bugs import (  # re-exported: the bug factories a conftest.py plants
    PROJECTIONS,
    ROLES,
    Bug,
    CodeBug,
    NotApplicable,
    edit_rows,
    in_middle,
    in_middle_layer,
    noise_linears,
    norm_epsilon,
    norm_weight_offset,
    positions_off_by_one,
    roll_query_heads,
    rope_base,
    rotary_embedding,
    round_to_bits,
    scale_linears,
    selected_linears,
    selected_rows,
    swap_column_pairs,
    zero_points_shifted,
)
from pytest_attnlab.quant.gate import reference_of
from pytest_attnlab.quant.layers import target_linears
from pytest_attnlab.quant.methods import QUANTIZERS
from pytest_attnlab.quant.packed import PACKED_NBYTES
from pytest_attnlab.registry import Registry

__all__ = [
    "MUTANTS",
    "PROJECTIONS",
    "ROLES",
    "Bug",
    "CodeBug",
    "Mutant",
    "NotApplicable",
    "edit_rows",
    "in_middle",
    "in_middle_layer",
    "noise_linears",
    "norm_epsilon",
    "norm_weight_offset",
    "positions_off_by_one",
    "rope_base",
    "roll_query_heads",
    "rotary_embedding",
    "round_to_bits",
    "scale_linears",
    "selected_linears",
    "selected_rows",
    "swap_column_pairs",
    "zero_points_shifted",
]


class Mutant(Quantizer):
    """`base` (a registered RTN method) followed by `bug`, presented as the method `presents_as`
    (default: the base): its bits, its gate reference and whether it calibrates are those of the
    method it claims to be, so the gate holds it to that method's standard.

    `code_bug` edits the integer codes, scales or zero points of a linear before dequantization
    (a wrong zero point); `bug` edits the dequantized model (a wrong scale, noise, a swapped column).
    """

    def __init__(
        self,
        name: str,
        bug: Bug | None = None,
        description: str = "",
        base: str = "rtn-int8",
        *,
        presents_as: str | None = None,
        code_bug: CodeBug | None = None,
    ) -> None:
        self.name, self.bug, self.base, self.code_bug = name, bug, base, code_bug
        self.description = description or getattr(bug or code_bug, "__name__", name)
        self.grid = QUANTIZERS.get(base).grid
        claimed = QUANTIZERS.get(presents_as or base)
        self.presents_as = presents_as or base
        self.bits, self.calibrated = claimed.bits, claimed.calibrated
        self.reference = reference_of(claimed)

    def settings(self) -> dict[str, Any]:
        return {"method": "mutant", "base": self.base, "presents_as": self.presents_as, "bug": self.description}

    def alone(self, loaded: Any) -> Any:
        """A copy of `loaded.model` with the bug and no quantization: what the bug does on its own
        (a code bug or a wrong grid needs the quantization: then the quantized mutant itself)."""
        if self.bug is None or self.code_bug is not None or self.presents_as != self.base:
            return self.quantize(loaded, None)
        model = copy.deepcopy(loaded.model)
        with torch.no_grad():
            self.bug(model)
        return model

    def quantize(self, loaded: Any, ctx: QuantContext | None) -> Any:
        """A copy of `loaded.model` quantized by the base (weights and packed bytes), then the bug."""
        model = copy.deepcopy(loaded.model)
        with torch.no_grad():
            for linear in target_linears(model).values():
                w = linear.weight
                qt = G.quantize(self.grid, w)
                if self.code_bug is not None:
                    qt = self.code_bug(model, linear, qt)
                w.copy_(G.dequantize(self.grid, qt, w.shape).to(w.dtype))
                # counted by weight_bytes as the base's packed storage: a mutant claims the base's bytes
                setattr(linear, PACKED_NBYTES, G.nbytes(G.pack(self.grid, qt)))
            if self.bug is not None:
                self.bug(model)
        return model


MUTANTS: Registry[Mutant] = Registry("mutant")


def _register(name: str, bug: Bug) -> None:
    MUTANTS.register(name, Mutant(name, bug))


# The three bugs of issue 15 (each kept logits cosine >= 0.95 on the embedded model).
_register("linears-x1.10", scale_linears(1.10))
_register("noise-5pct-std", noise_linears(0.05))
_register("int6-in-int8", round_to_bits(6))
# Attention wiring, positions, norms.
_register("q-heads-rolled", roll_query_heads())
_register("rope-base-div10", rope_base(0.1))
_register("positions-off-by-one", positions_off_by_one())
_register("norm-weight-plus-one", norm_weight_offset(1.0))
_register("norm-eps-1e-2", norm_epsilon(1e-2))
# One sub-projection of one middle layer.
_register(
    "mid-o_proj-x1.10", in_middle_layer(lambda k: scale_linears(1.10, k, ("o_proj",)), "middle layer's o_proj x1.1")
)
_register(
    "mid-down_proj-noise-20pct",
    in_middle_layer(lambda k: noise_linears(0.2, k, ("down_proj",)), "middle layer's down_proj + noise 20% of std"),
)

# The 4-bit class (int4 g64 with integer zero points, the grid GPTQ/AWQ checkpoints store): bugs of a
# few percent that a 4-bit model's own rounding error (logits cosine 0.87 on SmolLM2) hides from the
# outer cosine, each measured in suites/correctness/test_quant_gate_kill.py.
INT4 = "rtn-int4-g64-zp"
MUTANTS.register(
    "int4-g128-as-g64",
    Mutant(
        "int4-g128-as-g64", description="int4 g128 weights presented as g64", base="rtn-int4-g128-zp", presents_as=INT4
    ),
)
MUTANTS.register(
    "int4-mid-layer-zero-plus-one",
    Mutant(
        "int4-mid-layer-zero-plus-one",
        base=INT4,
        code_bug=in_middle(lambda k: zero_points_shifted(1, k, PROJECTIONS), "middle layer's zero points + 1"),
    ),
)
MUTANTS.register(
    "int4-mid-layer-x1.05",
    Mutant("int4-mid-layer-x1.05", in_middle_layer(lambda k: scale_linears(1.05, k), "middle layer x1.05"), base=INT4),
)
MUTANTS.register("int4-noise-4pct-std", Mutant("int4-noise-4pct-std", noise_linears(0.04), base=INT4))
MUTANTS.register(
    "awq-int4-g64-falls-back-to-rtn",
    Mutant(
        "awq-int4-g64-falls-back-to-rtn",
        description="awq-int4-g64 that silently returns plain RTN",
        base=INT4,
        presents_as="awq-int4-g64",
    ),
)
