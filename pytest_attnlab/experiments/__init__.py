"""Experiment configs (`--attnlab-config FILE`): YAML -> validated dataclasses -> test parameters.

Other areas read the parsed config from `config.stash[EXPERIMENT_KEY]` (None without
`--attnlab-config`) or from the `attnlab_experiment` fixture; see docs/reports.md.
"""

import pytest

from pytest_attnlab.experiments.config import (
    BATCH_LEVELS,
    ExperimentCase,
    ExperimentConfig,
    ExperimentConfigError,
    Generation,
    Techniques,
    check_names,
    from_mapping,
    load,
)

#: The parsed `--attnlab-config` (an ExperimentConfig) or None; set in pytest_configure.
EXPERIMENT_KEY = pytest.StashKey["ExperimentConfig | None"]()

__all__ = [
    "EXPERIMENT_KEY",
    "BATCH_LEVELS",
    "ExperimentCase",
    "ExperimentConfig",
    "ExperimentConfigError",
    "Generation",
    "Techniques",
    "check_names",
    "from_mapping",
    "load",
]
