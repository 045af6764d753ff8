"""`--attnlab-perf-*` options: the benchmark grid, rounds, monitor and decode-path settings.

Grid defaults depend on the device: `auto` means a small CPU grid (so CI runs every code path in
minutes) and, on CUDA, a grid that finishes in under 3 minutes on one H200 (AUTO_GRID gives the
options for the full sweep).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from pytest_attnlab import options as core_options
from pytest_attnlab.options import OptionSpec, resolve

#: batch-size levels, as the small / medium / large configs of the seed benchmark (seed 003)
BATCH_LEVELS = {"small": 1, "medium": 8, "large": 32}
MONITOR_CHOICES = ("auto", "nvml", "psutil", "none")
AUTO_GRID = {
    "cpu": {"prompt_lens": "16,64", "batch": "small", "new_tokens": "6", "rounds": "2"},
    # Finishes in under 3 minutes on one H200, compile included. The full sweep of the seed benchmark:
    # --attnlab-perf-prompt-lens 128,512,2048 --attnlab-perf-batch small,medium,large
    # --attnlab-perf-new-tokens 128 --attnlab-perf-rounds 5
    "cuda": {"prompt_lens": "128,512", "batch": "small,medium", "new_tokens": "64", "rounds": "3"},
}


def _int_list(flag: str, *, names: dict[str, int] | None = None) -> Any:
    def parse(value: str) -> tuple[int, ...] | str:
        value = value.strip()
        if value == "auto":
            return "auto"
        out = []
        for part in (p.strip() for p in value.split(",") if p.strip()):
            if names and part in names:
                out.append(names[part])
                continue
            try:
                n = int(part)
            except ValueError:
                choices = ", ".join([*(names or {}), "positive integers", "auto"])
                raise pytest.UsageError(f"{flag}: invalid value {part!r}; choose from: {choices}") from None
            if n < 1:
                raise pytest.UsageError(f"{flag}: {n} must be >= 1")
            out.append(n)
        if not out:
            raise pytest.UsageError(f"{flag}: give at least one value")
        return tuple(dict.fromkeys(out))

    return parse


def _int(flag: str, minimum: int) -> Any:
    return core_options.parse_number(
        flag, int, "an integer or auto", lambda n: n >= minimum, f"must be >= {minimum}", auto=True
    )


def _paths(value: str) -> tuple[str, ...]:
    from pytest_attnlab.perf.paths import DECODE_PATHS
    from pytest_attnlab.registry import UnknownNameError

    try:
        return tuple(DECODE_PATHS.select(value))
    except UnknownNameError as exc:
        raise pytest.UsageError(f"--attnlab-perf-path: {exc} (or all)") from None


_interval_ms = core_options.parse_number(
    "--attnlab-perf-monitor-interval", float, "milliseconds", lambda ms: ms > 0, "must be > 0 ms"
)


def _compile(value: str) -> str:
    from pytest_attnlab.perf.paths.base import COMPILE_MODES

    return core_options.parse_choice("--attnlab-perf-compile", COMPILE_MODES)(value)


#: keys of static_decode.DECODE_ATTENTION (listed here so option parsing needs no torch)
FAST_ATTENTION = ("sdpa", "math")


def _fast_attention(value: str) -> str:
    return core_options.parse_choice("--attnlab-perf-fast-attention", FAST_ATTENTION)(value)


def _models(value: str) -> tuple[str, ...]:
    from pytest_attnlab.options import parse_model_option

    names = tuple(v.strip() for v in value.split(",") if v.strip())
    for name in names:
        parse_model_option(name)
    return names


PERF_OPTIONS = [
    OptionSpec(
        "perf-models",
        "",
        _models,
        "MODELS",
        "comma list of models for the perf grid (empty: --attnlab-model).",
    ),
    OptionSpec(
        "perf-prompt-lens",
        "auto",
        _int_list("--attnlab-perf-prompt-lens"),
        "N,...",
        f"prompt lengths in tokens (auto: {AUTO_GRID['cpu']['prompt_lens']} on CPU, "
        f"{AUTO_GRID['cuda']['prompt_lens']} on CUDA).",
    ),
    OptionSpec(
        "perf-batch",
        "auto",
        _int_list("--attnlab-perf-batch", names=BATCH_LEVELS),
        "B,...",
        "batch sizes or levels small=1, medium=8, large=32 (auto: small on CPU, small,medium,large on CUDA).",
    ),
    OptionSpec(
        "perf-new-tokens",
        "auto",
        _int_list("--attnlab-perf-new-tokens"),
        "N,...",
        "output lengths in tokens (auto: 6 on CPU, 128 on CUDA).",
    ),
    OptionSpec(
        "perf-path",
        "all",
        _paths,
        "PATHS",
        "decode paths: hf (HF generate), fast (static KV + CUDA graph), all.",
    ),
    OptionSpec(
        "perf-rounds",
        "auto",
        _int("--attnlab-perf-rounds", 1),
        "N",
        "timed rounds per test (auto: 2 CPU, 5 CUDA).",
    ),
    OptionSpec("perf-warmup", "1", _int("--attnlab-perf-warmup", 0), "N", "untimed warmup rounds per test."),
    OptionSpec(
        "perf-monitor",
        "auto",
        core_options.parse_choice("--attnlab-perf-monitor", MONITOR_CHOICES),
        "NAME",
        "device monitor: auto (nvml on CUDA, psutil on CPU), nvml, psutil, none.",
    ),
    OptionSpec("perf-monitor-interval", "20", _interval_ms, "MS", "monitor sampling interval in milliseconds."),
    OptionSpec(
        "perf-compile",
        "none",
        _compile,
        "MODE",
        "torch.compile mode for the fast path's decode step: none, default, max-autotune-no-cudagraphs.",
    ),
    OptionSpec(
        "perf-fast-attention",
        "math",
        _fast_attention,
        "NAME",
        "the fast path's decode attention over the static cache: sdpa (fused kernel) or math "
        "(matmul-softmax-matmul, fused by --attnlab-perf-compile).",
    ),
]


@dataclass(frozen=True)
class PerfSettings:
    models: tuple[str, ...]
    prompt_lens: tuple[int, ...]
    batch: tuple[int, ...]
    new_tokens: tuple[int, ...]
    paths: tuple[str, ...]
    rounds: int
    warmup: int
    monitor: str
    monitor_interval_s: float
    compile: str
    fast_attention: str

    @classmethod
    def from_config(cls, config: pytest.Config, device: str) -> PerfSettings:
        v = {o.dest.removeprefix("attnlab_perf_"): resolve(config, o) for o in PERF_OPTIONS}
        auto = AUTO_GRID["cuda" if device.startswith("cuda") else "cpu"]
        for key, parse in (
            ("prompt_lens", _int_list("")),
            ("batch", _int_list("", names=BATCH_LEVELS)),
            ("new_tokens", _int_list("")),
            ("rounds", _int("", 1)),
        ):
            if v[key] == "auto":
                v[key] = parse(auto[key])
        return cls(
            models=v["models"],
            prompt_lens=v["prompt_lens"],
            batch=v["batch"],
            new_tokens=v["new_tokens"],
            paths=v["path"],
            rounds=v["rounds"],
            warmup=v["warmup"],
            monitor=v["monitor"],
            monitor_interval_s=v["monitor_interval"] / 1e3,
            compile=v["compile"],
            fast_attention=v["fast_attention"],
        )


def add_options(parser: pytest.Parser) -> None:
    core_options.add_options(parser, PERF_OPTIONS)
