"""pytest hooks, options and fixtures of pytest_attnlab.perf (loaded by pytest_attnlab.plugin).

Fixtures: `generation_benchmark` (LLM latency through pytest-benchmark), `gpu_monitor` (device
telemetry timeline per test), `perf_settings`, `perf_model` (the LoadedModel of a grid cell).
Any test that asks for `perf_prompt_len`, `perf_batch`, `perf_new_tokens`, `perf_path`,
`perf_model_name`, `perf_quant` or `perf_attn` is parametrized over the chosen grid.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from typing import Any

import pytest

from pytest_attnlab.attention.plugin import applied_or_skip
from pytest_attnlab.case import Case
from pytest_attnlab.options import area_hooks, selection
from pytest_attnlab.paths.plugin import path_state
from pytest_attnlab.perf import options as perf_options
from pytest_attnlab.perf.bench import GenerationBenchmark
from pytest_attnlab.perf.machine import describe
from pytest_attnlab.perf.monitors import MonitorUnavailable, pick
from pytest_attnlab.perf.monitors.handle import MonitorHandle
from pytest_attnlab.perf.roofline import device_peaks
from pytest_attnlab.session import SESSION_KEY

PERF_STATE_KEY = pytest.StashKey["PerfState"]()
GRID_FIXTURES = (
    "perf_model_name",
    "perf_quant",
    "perf_attn",
    "perf_prompt_len",
    "perf_batch",
    "perf_new_tokens",
    "perf_path",
)


class PerfState:
    """Run state of the perf area: settings, decode-path objects, device peaks, loaded models."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._settings: perf_options.PerfSettings | None = None
        self.models: dict[tuple[str, str], Any] = {}
        self._peaks: Any = None

    @property
    def attnlab(self) -> Any:
        return self.config.stash[SESSION_KEY]

    @property
    def device(self) -> str:
        return self.attnlab.settings.resolved_device()

    @property
    def settings(self) -> perf_options.PerfSettings:
        if self._settings is None:
            self._settings = perf_options.PerfSettings.from_config(self.config, self.device)
        return self._settings

    def path(self, name: str) -> Any:
        """The run's decode-path object `name`, from the paths plugin's one cache (the backends' too)."""
        return path_state(self.config).path(name)

    def peaks(self) -> Any:
        if self._peaks is None:
            self._peaks = device_peaks(self.device)
        return self._peaks

    def model(self, case: Case) -> Any:
        """The case's model, quantized, once per run (skips a case its decode path cannot run)."""
        case.check(self.config)
        if (case.model, case.quant) not in self.models:
            self.models[case.model, case.quant] = case.quantized(self.config)
        return self.models[case.model, case.quant]


pytest_addoption, pytest_attnlab_options = area_hooks(perf_options.PERF_OPTIONS)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[PERF_STATE_KEY] = PerfState(config)


def _ids(prefix: str) -> Any:
    return lambda v: f"{prefix}{v}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    wanted = [f for f in GRID_FIXTURES if f in metafunc.fixturenames]
    if not wanted:
        return
    state = metafunc.config.stash[PERF_STATE_KEY]
    s = state.settings
    chosen = selection(metafunc.config)  # the quantizer and attention axes, as the run resolved them
    axis = {
        "perf_model_name": (list(s.models) or [""], lambda v: v.replace("random:", "") or "model"),
        "perf_quant": (list(chosen["quant"]), str),
        "perf_attn": (list(chosen["attn"]), str),
        "perf_prompt_len": (list(s.prompt_lens), _ids("p")),
        "perf_batch": (list(s.batch), _ids("b")),
        "perf_new_tokens": (list(s.new_tokens), _ids("n")),
        "perf_path": (list(s.paths), str),
    }
    asked = set(inspect.signature(metafunc.function).parameters)
    for name in wanted:
        values, ids = axis[name]
        if name == "perf_model_name" and values == [""]:
            if name in asked:  # the test names the axis itself: keep its "model" id
                metafunc.parametrize(name, values, ids=["model"] if len(wanted) > 1 else None)
            continue  # reached through perf_model only: its default fixture, and ids as before
        metafunc.parametrize(name, values, ids=[ids(v) for v in values])


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """GPU, driver, library versions and the model under test, in every --benchmark-json."""
    state = config.stash[PERF_STATE_KEY]
    if not state.attnlab.active:  # pytest-benchmark in a run that does not use attnlab
        return
    settings = state.attnlab.settings
    dtype = str(settings.resolved_dtype()).removeprefix("torch.")
    machine_info["attnlab"] = describe(settings.resolved_device(), settings.model.label, dtype)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def perf_settings(pytestconfig: pytest.Config) -> perf_options.PerfSettings:
    """The resolved --attnlab-perf-* settings (grid, rounds, monitor, compile mode)."""
    return pytestconfig.stash[PERF_STATE_KEY].settings


@pytest.fixture
def perf_model_name() -> str:
    """The perf grid's model axis; "" (--attnlab-model) unless --attnlab-perf-models parametrizes it."""
    return ""


@pytest.fixture
def perf_model(request: pytest.FixtureRequest, perf_model_name: str, attnlab_run_case: Case) -> Any:
    """The LoadedModel of this grid cell's Case: `perf_model_name` (--attnlab-perf-models, default
    --attnlab-model) quantized by `perf_quant` (default none); loaded once per run; skips a case its decode
    path cannot run (the fast path with a quantizer or an attention variant)."""
    return request.config.stash[PERF_STATE_KEY].model(attnlab_run_case)


@pytest.fixture
def generation_benchmark(request: pytest.FixtureRequest, metrics: Any) -> Any:
    """`generation_benchmark(loaded, prompt_len=, batch=, new_tokens=, path="hf"|"fast", attention=)`:
    warmup + timed rounds through pytest-benchmark's `benchmark.pedantic`; TTFT, TPOT, ITL p50/p90/p99,
    tok/s, MBU/MFU and peak memory go to `benchmark.extra_info` and metrics.csv. Returns a Measurement.
    `generation_benchmark.measure(...)` measures without pytest-benchmark."""
    state = request.config.stash[PERF_STATE_KEY]
    try:
        benchmark = request.getfixturevalue("benchmark")
    except pytest.FixtureLookupError:
        benchmark = None
    s = state.settings
    return GenerationBenchmark(
        device=state.device,
        rounds=s.rounds,
        warmup=s.warmup,
        path_factory=state.path,
        peaks=state.peaks,
        benchmark=benchmark,
        recorder=metrics,
        attention=applied_or_skip,
        plant_slowdown=s.plant_slowdown,
        slo=s.slo,
    )


@pytest.fixture
def gpu_monitor(request: pytest.FixtureRequest, metrics: Any) -> Generator[Any, None, None]:
    """Device telemetry sampled every --attnlab-perf-monitor-interval ms while the test runs (nvml:
    memory used, utilisation, power, SM/memory clocks, temperature; psutil on CPU: cpu %, rss).
    `gpu_monitor.timeline` is a list of dicts; at teardown the timeline is written to
    <report-dir>/monitor/<test>.json and its peak and mean per field go to metrics.csv."""
    state = request.config.stash[PERF_STATE_KEY]
    s = state.settings
    monitor = None
    if s.monitor != "none":
        try:
            monitor = pick(s.monitor, state.device)
        except MonitorUnavailable as exc:
            pytest.skip(str(exc))
    handle = MonitorHandle(monitor, s.monitor_interval_s).start()
    yield handle
    handle.finish(state.attnlab.report_dir, request.node.nodeid, metrics)
