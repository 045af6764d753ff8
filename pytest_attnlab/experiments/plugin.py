"""pytest hooks, option and fixtures of the experiments (loaded by pytest_attnlab.plugin): `--attnlab-config`,
the `attnlab_case` parametrization and the `attnlab_experiment` / `attnlab_case` fixtures."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_attnlab import options as opts
from pytest_attnlab.experiments import EXPERIMENT_KEY, ExperimentConfig, ExperimentConfigError, check_names
from pytest_attnlab.experiments import load as load_experiment
from pytest_attnlab.registry import BASELINE_QUANT


def parse_config_file(value: str) -> ExperimentConfig | None:
    """The experiment file, its technique names checked against the registries (the hooks ran first)."""
    if not value:
        return None
    from pytest_attnlab.attention import ATTENTION  # the registries import torch: only when a file is given
    from pytest_attnlab.quant import QUANTIZERS  # torch: only when a file is given

    try:
        experiment = load_experiment(value)
        check_names(experiment, {"quantizers": [BASELINE_QUANT, *QUANTIZERS.names()], "attention": ATTENTION.names()})
    except ExperimentConfigError as exc:
        raise pytest.UsageError(f"--attnlab-config: {exc}") from None
    return experiment


OPTIONS = [
    opts.OptionSpec(
        "config",
        "",
        parse_config_file,
        "FILE",
        "experiment YAML (techniques, batch levels, generation parameters, iterations) expanded into the "
        "`attnlab_case` test parameters; examples in experiments/.",
    ),
]


pytest_addoption, pytest_attnlab_options = opts.area_hooks(OPTIONS)


def pytest_configure(config: pytest.Config) -> None:
    config.stash.setdefault(EXPERIMENT_KEY, None)  # the option layer's selection sets it


def pytest_report_header(config: pytest.Config) -> list[str]:
    ex = config.stash.get(EXPERIMENT_KEY, None)
    return [] if ex is None else [f"attnlab experiment: {ex.experiment_name} ({ex.source}), {len(ex.cases())} cases"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "attnlab_case" in metafunc.fixturenames:
        experiment = metafunc.config.stash.get(EXPERIMENT_KEY, None) or ExperimentConfig()
        cases = experiment.cases()
        metafunc.parametrize("attnlab_case", cases, ids=[c.id for c in cases], indirect=True)


@pytest.fixture(scope="session")
def attnlab_experiment(pytestconfig: pytest.Config) -> ExperimentConfig | None:
    """The parsed `--attnlab-config` (an ExperimentConfig), or None when no file was given."""
    return pytestconfig.stash.get(EXPERIMENT_KEY, None)


@pytest.fixture
def attnlab_case(request: pytest.FixtureRequest) -> Any:
    """One ExperimentCase (quant, attention, backend, batch size, generation params) of the experiment.

    Tests that request it run once per case of `--attnlab-config` (one default case without it).
    """
    return request.param
