"""`--attnlab-perf-*` options: the benchmark grid, rounds and monitor (the fast path's variant options are the
decode paths' own: paths/options.py).

Grid defaults depend on the device: `auto` means a small CPU grid (so CI runs every code path in
minutes) and, on CUDA, a grid that finishes in under 3 minutes on one H200 (AUTO_GRID gives the
options for the full sweep).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from pytest_attnlab import options as core_options
from pytest_attnlab.options import OptionSpec, parse_model_option
from pytest_attnlab.paths.base import GEMV_CONFIG
from pytest_attnlab.perf.monitors import MONITORS
from pytest_attnlab.perf.slo import Slo, parse_slo

#: batch-size levels, as the small / medium / large configs of the seed benchmark (seed 003)
BATCH_LEVELS = {"small": 1, "medium": 8, "large": 32}
AUTO_GRID = {
    "cpu": {"prompt_lens": "16,64", "batch": "small", "new_tokens": "6", "rounds": "2"},
    # Finishes in under 3 minutes on one H200, compile included. The full sweep of the seed benchmark:
    # --attnlab-perf-prompt-lens 128,512,2048 --attnlab-perf-batch small,medium,large
    # --attnlab-perf-new-tokens 128 --attnlab-perf-rounds 5
    # 5 rounds, not 3: compare's one-sided rank test on 3 rounds against 3 reaches p = 1/C(6,3) = 0.05 at best,
    # its alpha, so one round out of order hides a regression; 5 against 5 reach 1/C(10,5) = 0.004.
    "cuda": {"prompt_lens": "128,512", "batch": "small,medium", "new_tokens": "64", "rounds": "5"},
}


def _auto_help(key: str) -> str:
    """The help's "auto: X on CPU, Y on CUDA", from AUTO_GRID, so the help never disagrees with the grid."""
    return f"auto: {AUTO_GRID['cpu'][key]} on CPU, {AUTO_GRID['cuda'][key]} on CUDA"


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
    return core_options.parse_int(flag, minimum, auto=True)


def _monitor(value: str) -> str:
    return core_options.parse_choice("--attnlab-perf-monitor", ("auto", *sorted(MONITORS.names()), "none"))(value)


_interval_ms = core_options.parse_number(
    "--attnlab-perf-monitor-interval", float, "milliseconds", lambda ms: ms > 0, "must be > 0 ms"
)


def _models(value: str) -> tuple[str, ...]:
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
        f"prompt lengths in tokens ({_auto_help('prompt_lens')}).",
    ),
    OptionSpec(
        "perf-batch",
        "auto",
        _int_list("--attnlab-perf-batch", names=BATCH_LEVELS),
        "B,...",
        f"batch sizes or levels small=1, medium=8, large=32 ({_auto_help('batch')}).",
    ),
    OptionSpec(
        "perf-new-tokens",
        "auto",
        _int_list("--attnlab-perf-new-tokens"),
        "N,...",
        f"output lengths in tokens ({_auto_help('new_tokens')}).",
    ),
    OptionSpec(
        "perf-path",
        "all",
        core_options.parse_names("--attnlab-perf-path", "decode_paths", tail=" (or all)"),
        "PATHS",
        "decode paths: hf (HF generate), fast (static KV + CUDA graph), all.",
    ),
    OptionSpec(
        "perf-rounds",
        "auto",
        _int("--attnlab-perf-rounds", 1),
        "N",
        f"timed rounds per test ({_auto_help('rounds')}).",
    ),
    OptionSpec("perf-warmup", "1", _int("--attnlab-perf-warmup", 0), "N", "untimed warmup rounds per test."),
    OptionSpec(
        "perf-monitor",
        "auto",
        _monitor,
        "NAME",
        "device monitor: auto (nvml on CUDA, psutil on CPU), nvml, psutil, none.",
    ),
    OptionSpec("perf-monitor-interval", "20", _interval_ms, "MS", "monitor sampling interval in milliseconds."),
]


_plant = core_options.parse_number(
    "--attnlab-perf-plant-slowdown", float, "a fraction", lambda f: 0 <= f < 10, "must be in [0, 10)"
)
PERF_OPTIONS.append(
    OptionSpec(
        "perf-plant-slowdown",
        "0",
        _plant,
        "F",
        "plant a bug: hold every decode step for F times its own time (0.1: TPOT grows by a tenth), to prove that "
        "`python -m pytest_attnlab compare` catches it. Never set it in a baseline run.",
    )
)


PERF_OPTIONS.append(
    OptionSpec(
        "perf-profile-steps",
        "0",
        core_options.parse_number(
            "--attnlab-perf-profile-steps", int, "a whole number of steps (0: off)", lambda n: n >= 0, "must be >= 0"
        ),
        "N",
        "after the fast path's timed rounds, profile N decode steps (torch.profiler: CUDA kernels on GPU, ops on "
        "CPU) and record where the step's time goes: kernel vs wall time, kernel count, the share of GEMV, "
        "attention, copy, elementwise and other kernels, the top kernels (perf.profile_step). 0: off.",
    )
)


def _gemv_configs(value: str) -> tuple[str, ...]:
    configs = tuple(c.strip() for c in value.split(",") if c.strip())
    bad = [c for c in configs if not GEMV_CONFIG.match(c)]
    if bad:
        raise pytest.UsageError(
            f"--attnlab-perf-gemv-configs: {', '.join(bad)} is not a config; write BLOCK_NxBLOCK_KwWARPS[sSTAGES]"
            "[kSPLIT][pdl|nopdl], e.g. 1x1024w4, 2x2048w4s3pdl or 16x256w4s3k4 (split-K: 2+ rows)"
        )
    return configs


PERF_OPTIONS.append(
    OptionSpec(
        "perf-gemv-configs",
        "",
        _gemv_configs,
        "LIST",
        "suites/perf/test_decode_gemv.py: also time the Triton GEMV at these launch configs (a comma list of "
        "BLOCK_NxBLOCK_KwWARPS[sSTAGES][kSPLIT][pdl|nopdl], e.g. 1x1024w4,2x2048w4s3pdl,16x256w4s3k4; kSPLIT "
        "splits K SPLIT ways, at 2+ rows), beside its own pick: the "
        "sweep that tunes paths/triton_gemv.config for a GPU.",
    )
)


PERF_OPTIONS.append(
    OptionSpec(
        "perf-slo",
        "",
        parse_slo,
        "NAME:VALUE,...",
        "service-level objectives for goodput, as vLLM's benchmark defines it: e.g. ttft:200ms,tpot:50ms "
        "(also e2el; a bare number is ms). A request meeting every one is good; goodput_req_s and goodput_tok_s "
        "join each perf cell's metrics (empty: no goodput).",
    )
)


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
    plant_slowdown: float = 0.0
    profile_steps: int = 0  # decode steps profiled after the fast path's timed rounds; 0: off
    gemv_configs: tuple[str, ...] = ()  # extra Triton GEMV launch configs test_decode_gemv times
    slo: Slo = ()  # --attnlab-perf-slo: (name, seconds) objectives for goodput; (): no goodput

    @classmethod
    def from_config(cls, config: pytest.Config, device: str) -> PerfSettings:
        values = core_options.selection(config)
        v = {o.dest.removeprefix("attnlab_perf_"): values[o.name] for o in PERF_OPTIONS}
        auto = AUTO_GRID["cuda" if device.startswith("cuda") else "cpu"]
        for key, parse in (
            ("prompt_lens", _int_list("")),
            ("batch", _int_list("", names=BATCH_LEVELS)),
            ("new_tokens", _int_list("")),
            ("rounds", _int("", 1)),
        ):
            if v[key] == "auto":
                v[key] = parse(auto[key])
        same = ("models", "prompt_lens", "batch", "new_tokens", "rounds", "warmup", "monitor", "plant_slowdown")
        same += ("profile_steps", "gemv_configs", "slo")
        return cls(**{k: v[k] for k in same}, paths=v["path"], monitor_interval_s=v["monitor_interval"] / 1e3)
