"""The decode paths' own options: which paths run (`--attnlab-backend`, which perf's `--attnlab-perf-path`
follows), the fast path's variant (`--attnlab-perf-compile`, `-compile-scope`, `-fast-*`, `-inductor-cache`)
and the vLLM engine's (`--attnlab-vllm-*`). `paths.plugin` builds the run's one PathCache from them; perf
and backends read that, never each other. Typed converters raise pytest.UsageError; nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_attnlab import options as core_options
from pytest_attnlab.models.cache import cache_root
from pytest_attnlab.options import OptionSpec
from pytest_attnlab.paths import base
from pytest_attnlab.paths.base import (
    AUTO_FAST,
    AUTO_WIDE_BATCH,
    COMPILE_MODES,
    FAST_ATTENTION,
    FAST_GEMV,
    KV_CACHE_DTYPES,
    VLLM_DTYPES,
)

_BOOL = {**dict.fromkeys(("1", "true", "on", "yes"), True), **dict.fromkeys(("0", "false", "off", "no"), False)}


def _quant_format(value: str) -> str:
    value = value.strip()
    if value == "auto":  # the default needs no registry (whose exporters import torch)
        return value
    from pytest_attnlab.quant.export import AUTO, EXPORT_FORMATS  # torch: only for a format named

    if value not in EXPORT_FORMATS:
        raise pytest.UsageError(
            f"--attnlab-vllm-quant-format: invalid value {value!r}; choose from: {AUTO}, "
            + ", ".join(EXPORT_FORMATS.names())
        )
    return value


def _bool(flag: str) -> Any:
    def parse(value: str) -> bool:
        try:
            return _BOOL[value.strip().lower()]
        except KeyError:
            raise pytest.UsageError(
                f"{flag}: invalid value {value!r}; choose from: on, off (or true/false, 1/0)"
            ) from None

    return parse


def _fraction(flag: str) -> Any:
    return core_options.parse_number(flag, float, "a number in (0, 1]", lambda x: 0 < x <= 1, "must be in (0, 1]")


def _positive(flag: str) -> Any:
    return core_options.parse_number(flag, float, "a number of GiB", lambda x: x > 0, "must be > 0")


BACKEND_OPTION = OptionSpec(
    "backend",
    "",
    core_options.parse_names("--attnlab-backend", "decode_paths", tail=" (or all)"),
    "NAMES",
    "backends (decode paths) the perf and cross-backend correctness suites run through: a comma list of "
    "hf (HF generate), fast (static KV decode step), vllm (vLLM offline engine, paged KV), or all. "
    "Sets --attnlab-perf-path (empty: the perf path option decides; correctness uses all).",
)

VLLM_OPTIONS = [
    OptionSpec(
        "vllm-enforce-eager",
        "on",
        _bool("--attnlab-vllm-enforce-eager"),
        "on|off",
        "run vLLM without CUDA graphs / torch.compile (on: starts faster; off: as vLLM serves, for timings).",
    ),
    OptionSpec(
        "vllm-gpu-memory-utilization",
        "0.5",
        _fraction("--attnlab-vllm-gpu-memory-utilization"),
        "FRAC",
        "share of GPU memory vLLM may take for weights + KV cache (ignored on CPU).",
    ),
    OptionSpec(
        "vllm-max-model-len",
        "1024",
        core_options.parse_int("--attnlab-vllm-max-model-len", 16),
        "N",
        "longest prompt + output vLLM plans its KV cache for.",
    ),
    OptionSpec(
        "vllm-tensor-parallel-size",
        "1",
        core_options.parse_int("--attnlab-vllm-tensor-parallel-size", 1),
        "N",
        "GPUs to shard the model over (tensor parallelism).",
    ),
    *(
        OptionSpec(
            f"vllm-{name}",
            "auto",
            core_options.parse_choice(f"--attnlab-vllm-{name}", choices),
            "DTYPE",
            f"{what}: {', '.join(choices)} (auto: {auto}).",
        )
        for name, choices, what, auto in (
            ("kv-cache-dtype", KV_CACHE_DTYPES, "KV-cache storage dtype", "the model dtype"),
            ("dtype", VLLM_DTYPES, "engine dtype", "the resolved --attnlab-dtype, as the HF reference"),
        )
    ),
    OptionSpec(
        "vllm-kv-cache-gb",
        "1",
        _positive("--attnlab-vllm-kv-cache-gb"),
        "GIB",
        "KV-cache size in GiB on CPU (vLLM's kv_cache_memory_bytes; GPUs use the utilization share).",
    ),
    OptionSpec(
        "vllm-quant-format",
        "auto",
        _quant_format,
        "FORMAT",
        "checkpoint format a quantized model is exported to for vLLM: auto, compressed-tensors, gptq, awq "
        "(auto: GPTQ for gptq-*, AWQ for awq-*, else compressed-tensors).",
    ),
]


def _paths_choice(flag: str, name: str) -> Any:
    """parse_choice over paths.base's tuple `name`."""
    return core_options.parse_choice(flag, getattr(base, name))


INDUCTOR_CACHE_CHOICES = ("auto", "torch", "a directory")


def _inductor_cache(value: str) -> str:
    from pathlib import Path

    value = value.strip()
    if not value or (value not in INDUCTOR_CACHE_CHOICES[:2] and Path(value).is_file()):
        choices = ", ".join(INDUCTOR_CACHE_CHOICES)
        raise pytest.UsageError(f"--attnlab-perf-inductor-cache: invalid value {value!r}; choose from: {choices}")
    return value


def resolve_inductor_cache(value: str) -> str:
    """The directory for inductor's caches: auto is $TORCHINDUCTOR_CACHE_DIR when set, else
    <attnlab cache>/inductor; torch is "" (torch's own default, a temp dir); else the path."""
    import os

    if value == "torch":
        return ""
    if value == "auto":
        return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or str(cache_root() / "inductor")
    return os.path.abspath(os.path.expanduser(value))


def _auto_help(field: str) -> str:
    """What `auto` picks for PathOptions' `field` (base.AUTO_FAST), for an option's help."""
    cuda, anywhere = AUTO_FAST[field]
    if cuda == anywhere:
        return f"{cuda} on every device for now: paths/base.AUTO_FAST says when CUDA gets another"
    return f"{cuda} on CUDA with triton, else {anywhere}"


FAST_OPTIONS = [
    OptionSpec(
        "perf-compile",
        "auto",
        core_options.parse_choice("--attnlab-perf-compile", ("auto", *COMPILE_MODES)),
        "MODE",
        "torch.compile mode for the fast path's decode step: none, default, max-autotune-no-cudagraphs or auto "
        f"(none; on CUDA with triton and --attnlab-perf-fast-gemv auto, from batch {AUTO_WIDE_BATCH} on, default "
        "over cuBLAS GEMVs: the compiled step is faster there).",
    ),
    OptionSpec(
        "perf-fast-attention",
        "auto",
        core_options.parse_choice("--attnlab-perf-fast-attention", ("auto", *FAST_ATTENTION)),
        "NAME",
        "the fast path's decode attention over the static cache: sdpa (fused kernel), math "
        "(matmul-softmax-matmul, fused by --attnlab-perf-compile), triton (split-KV Triton kernels; CUDA only) "
        f"or auto ({_auto_help('fast_attention')}).",
    ),
    OptionSpec(
        "perf-compile-scope",
        "step",
        _paths_choice("--attnlab-perf-compile-scope", "COMPILE_SCOPES"),
        "SCOPE",
        "what --attnlab-perf-compile compiles: step (the whole decode step, one graph) or layer (one "
        "decoder layer, one graph reused by every layer: a fraction of the compile time).",
    ),
    OptionSpec(
        "perf-fast-weights",
        "fused",
        _paths_choice("--attnlab-perf-fast-weights", "FAST_WEIGHTS"),
        "LAYOUT",
        "the fast path's q/k/v and gate/up weights: fused (one GEMV each) or separate (the model's five).",
    ),
    OptionSpec(
        "perf-fast-quant",
        "none",
        _paths_choice("--attnlab-perf-fast-quant", "FAST_QUANT"),
        "FORMAT",
        "the fast path's decoder weights: none (the model dtype), int4-g128 or int4-g32 (RTN int4 per group, "
        "the rtn-int4-gN grid, through torch's int4 matmul: tinygemm on CUDA) or int4-g128-zp (the "
        "rtn-int4-g128-zp grid, integer zero points: tinygemm, or Marlin with --attnlab-perf-fast-gemv marlin).",
    ),
    OptionSpec(
        "perf-fast-gemv",
        "auto",
        core_options.parse_choice("--attnlab-perf-fast-gemv", ("auto", *FAST_GEMV)),
        "KERNELS",
        "the fast path's decode GEMVs: torch (cuBLAS; tinygemm for int4), triton (the plugin's Triton GEMV "
        "kernels, with silu(gate) * up fused into the gate/up GEMV; CUDA only, skipped on CPU), triton-fused "
        "(those kernels also take the RMSNorms, RoPE, the KV-cache writes and the residual adds, batch 1-32), "
        "marlin (cuBLAS, and vLLM's Marlin for int4-g128-zp; CUDA with vLLM) "
        f"or auto ({_auto_help('gemv')}; from batch {AUTO_WIDE_BATCH} on, torch, compiled, with "
        "--attnlab-perf-compile auto).",
    ),
    OptionSpec(
        "perf-inductor-cache",
        "auto",
        _inductor_cache,
        "DIR",
        "where torch.compile keeps its FX-graph and autotune caches across runs: auto "
        "($TORCHINDUCTOR_CACHE_DIR, else <attnlab cache>/inductor), torch (its temp dir) or a directory.",
    ),
]


PATH_OPTIONS = [BACKEND_OPTION, *FAST_OPTIONS, *VLLM_OPTIONS]
