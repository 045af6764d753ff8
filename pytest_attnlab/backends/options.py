"""`--attnlab-backend` and `--attnlab-vllm-*` options: typed converters raising pytest.UsageError."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_attnlab import options as core_options
from pytest_attnlab.options import OptionSpec

#: vLLM's KV-cache dtypes that make sense for a user to pick (vllm.config.cache.CacheDType).
KV_CACHE_DTYPES = ("auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2")
#: weights/activations dtype of the engine; auto = the --attnlab-dtype the HF reference uses.
VLLM_DTYPES = ("auto", "float32", "float16", "bfloat16")
_BOOL = {**dict.fromkeys(("1", "true", "on", "yes"), True), **dict.fromkeys(("0", "false", "off", "no"), False)}


def _quant_format(value: str) -> str:
    value = value.strip()
    if value == "auto":  # the default needs no registry (whose exporters import torch)
        return value
    from pytest_attnlab.quant.export import AUTO, EXPORT_FORMATS

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


def _int(flag: str, minimum: int) -> Any:
    return core_options.parse_number(flag, int, "an integer", lambda n: n >= minimum, f"must be >= {minimum}")


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
        _int("--attnlab-vllm-max-model-len", 16),
        "N",
        "longest prompt + output vLLM plans its KV cache for.",
    ),
    OptionSpec(
        "vllm-tensor-parallel-size",
        "1",
        _int("--attnlab-vllm-tensor-parallel-size", 1),
        "N",
        "GPUs to shard the model over (tensor parallelism).",
    ),
    OptionSpec(
        "vllm-kv-cache-dtype",
        "auto",
        core_options.parse_choice("--attnlab-vllm-kv-cache-dtype", KV_CACHE_DTYPES),
        "DTYPE",
        "KV-cache storage dtype: " + ", ".join(KV_CACHE_DTYPES) + " (auto: the model dtype).",
    ),
    OptionSpec(
        "vllm-dtype",
        "auto",
        core_options.parse_choice("--attnlab-vllm-dtype", VLLM_DTYPES),
        "DTYPE",
        "engine dtype: " + ", ".join(VLLM_DTYPES) + " (auto: the resolved --attnlab-dtype, as the HF reference).",
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

ALL_OPTIONS = [BACKEND_OPTION, *VLLM_OPTIONS]


def add_options(parser: pytest.Parser) -> None:
    core_options.add_options(parser, ALL_OPTIONS)
