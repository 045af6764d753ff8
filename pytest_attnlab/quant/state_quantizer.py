"""Base for the pure-torch methods (RTN, GPTQ, AWQ): make a packed QuantState, cache it, apply it."""

from __future__ import annotations

import copy
import time
from abc import abstractmethod
from typing import Any

from pytest_attnlab.quant import cache
from pytest_attnlab.quant.base import QuantContext, Quantizer
from pytest_attnlab.quant.packed import RUNTIMES, QuantState, apply


class StateQuantizer(Quantizer):
    """Subclasses implement `make_state(model, ctx)`; the result is cached when `ctx.cache_dir` is set.

    `runtime`: "fake" (dequantized weights in nn.Linear, the default) or "packed" (PackedLinear).
    """

    #: False when make_state only reads the model (RTN): it then gets the original, not a copy
    modifies_model: bool = True

    def __init__(self, runtime: str = "fake") -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"{type(self).__name__}.runtime: {runtime!r} is not one of: {', '.join(RUNTIMES)}")
        self.runtime = runtime

    @abstractmethod
    def make_state(self, model: Any, ctx: QuantContext) -> QuantState:
        """Quantize a private copy of the model (it may be modified) and return the packed state."""

    def quantize(self, loaded: Any, ctx: QuantContext) -> Any:
        state = self.load_or_make(loaded.model, ctx)
        ctx.state = state
        return apply(copy.deepcopy(loaded.model), state, self.runtime)

    def load_or_make(self, model: Any, ctx: QuantContext) -> QuantState:
        def make() -> QuantState:
            start = time.perf_counter()
            state = self.make_state(copy.deepcopy(model) if self.modifies_model else model, ctx)
            state.info["build_seconds"] = time.perf_counter() - start
            ctx.report["from_cache"] = False
            return state

        ctx.report["from_cache"] = True
        if ctx.cache_dir is None:
            state = make()
        else:
            state = cache.load_or_build(ctx.cache_dir, make)
        ctx.report["build_seconds"] = float(state.info.get("build_seconds", "nan"))
        return state
