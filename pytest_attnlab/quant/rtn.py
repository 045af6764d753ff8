"""Round-to-nearest: the reference every machine can run. int8 per channel (symmetric) and int4
per group (asymmetric, or symmetric as GPTQ stores it), no calibration. See grid.py for the formulas."""

from __future__ import annotations

from typing import Any

from pytest_attnlab.quant.base import QuantContext
from pytest_attnlab.quant.grid import Grid
from pytest_attnlab.quant.layers import target_linears
from pytest_attnlab.quant.packed import QuantState
from pytest_attnlab.quant.state_quantizer import StateQuantizer


class RTN(StateQuantizer):
    modifies_model = False

    def __init__(
        self,
        name: str,
        bits: int,
        group_size: int | None,
        symmetric: bool,
        zero: str = "int",
        runtime: str = "fake",
    ) -> None:
        super().__init__(runtime)
        self.name, self.bits = name, bits
        self.grid = Grid(bits, group_size, symmetric, zero if not symmetric else "int")

    def settings(self) -> dict[str, Any]:
        return {
            "method": "rtn",
            "bits": self.grid.bits,
            "group_size": self.grid.group_size or "per-channel",
            "symmetric": self.grid.symmetric,
            "zero": "none" if self.grid.symmetric else self.grid.zero,
            "runtime": self.runtime,
        }

    def make_state(self, model: Any, ctx: QuantContext) -> QuantState:
        state = QuantState(self.grid, info={"method": "rtn"})
        for name, linear in target_linears(model).items():
            state.add_linear(name, linear.weight.detach())
        return state
