"""pytest hooks of the decode paths (loaded by pytest_attnlab.plugin): their options (paths/options.py) and the
run's one PathState, which perf and backends both read (`path_state(config)`), never each other."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_attnlab.models.cache import cache_root
from pytest_attnlab.options import area_hooks, selection
from pytest_attnlab.paths.base import DECODE_PATHS, PathOptions, auto_wide_from, resolve_auto
from pytest_attnlab.paths.cache import PathCache
from pytest_attnlab.paths.options import PATH_OPTIONS, resolve_inductor_cache
from pytest_attnlab.paths.vllm_engine import EngineHolder, EngineSettings
from pytest_attnlab.session import SESSION_KEY

PATHS_KEY = pytest.StashKey["PathState"]()
#: PathOptions' fields whose option may be `auto`, with the option's name in PathState.values
AUTO_OPTIONS = (("fast_attention", "perf_fast_attention"), ("gemv", "perf_fast_gemv"), ("compile", "perf_compile"))


class PathState:
    """The run's decode paths: the resolved options, the vLLM engine holder (one engine at a time) and one
    path object per name (PathCache), whoever asks: perf's grid and generation_benchmark, the backends'
    backend_path."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._engines: Any = None
        self._paths: Any = None

    @property
    def values(self) -> dict[str, Any]:
        """This area's resolved options, by name without the vllm- prefix (underscores)."""
        values = selection(self.config)
        return {o.name.removeprefix("vllm-").replace("-", "_"): values[o.name] for o in PATH_OPTIONS}

    @property
    def selected(self) -> tuple[str, ...]:
        """--attnlab-backend, else every registered backend."""
        return self.values["backend"] or tuple(DECODE_PATHS.names())

    def engine_settings(self) -> Any:
        v = self.values
        dtype = v["dtype"]
        if dtype == "auto":
            dtype = str(self.config.stash[SESSION_KEY].settings.resolved_dtype()).removeprefix("torch.")
        names = ("enforce_eager", "gpu_memory_utilization", "max_model_len", "tensor_parallel_size", "kv_cache_dtype")
        return EngineSettings(**{k: v[k] for k in (*names, "kv_cache_gb")}, dtype=dtype)

    @property
    def engines(self) -> Any:
        if self._engines is None:
            self._engines = EngineHolder(self.engine_settings(), cache_root() / "vllm-checkpoints")
        return self._engines

    def options(self) -> PathOptions:
        """PathOptions from the resolved options, each under its own name: the fast path's variant (compile
        mode and scope, attention, weights, quant, GEMV, inductor cache; `auto` GEMVs, attention and compile
        made the device's pick, base.AUTO_FAST, and the batch where auto's pick changes, base.AUTO_WIDE_BATCH)
        and this run's vLLM engine holder."""
        v = self.values
        device = str(self.config.stash[SESSION_KEY].settings.resolved_device())
        attention, gemv, compile_ = (resolve_auto(f, v[o], device) for f, o in AUTO_OPTIONS)
        return PathOptions(
            compile=compile_, fast_attention=attention, compile_scope=v["perf_compile_scope"],
            weights=v["perf_fast_weights"], quant=v["perf_fast_quant"], gemv=gemv,
            inductor_cache=resolve_inductor_cache(v["perf_inductor_cache"]), engines=self.engines,
            vllm_quant_format=v["quant_format"],
            wide_from=auto_wide_from(v["perf_fast_gemv"], v["perf_compile"], device),
        )  # fmt: skip

    def path(self, name: str) -> Any:
        """The run's one path object per name (paths.PathCache), built from `options()`."""
        if self._paths is None:
            self._paths = PathCache(self.options())
        return self._paths(name)

    def close(self) -> None:
        if self._engines is not None:
            self._engines.close()


def path_state(config: pytest.Config) -> PathState:
    return config.stash[PATHS_KEY]


@pytest.fixture(scope="session")
def path_options(pytestconfig: pytest.Config) -> PathOptions:
    """The run's PathOptions: the fast path's variant as the options chose it, and the vLLM engine holder."""
    return path_state(pytestconfig).options()


pytest_addoption, pytest_attnlab_options = area_hooks(PATH_OPTIONS)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[PATHS_KEY] = PathState(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(PATHS_KEY, None)
    if state is not None:
        state.close()
