"""The case a test runs, one object for every area: the model, the quantizer (under --attnlab-quant-cache), the
attention variant and the decode path, read from the test's parametrized axes, with the rule that skips a case
that cannot run and says why. The correctness, perf, backends and experiment suites ask it (`quantized_model`,
`perf_model`, `attnlab_run_case`); so can a user's test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from pytest_attnlab.paths.plugin import path_state
from pytest_attnlab.quant.plugin import settings_of
from pytest_attnlab.registry import BASELINE_ATTENTION, BASELINE_QUANT
from pytest_attnlab.session import SESSION_KEY

#: Case field -> the fixtures that parametrize it (correctness, perf, backends, experiments) with the attribute
#: of its value that holds the field (None: the value itself); the first one a test uses wins
AXES = {
    "model": (("perf_model_name", None),),
    "quant": (("quantizer", None), ("perf_quant", None), ("backend_quant", None), ("attnlab_case", "quant")),
    "attention": (
        ("attention_patch", "name"),
        ("perf_attn", None),
        ("quant_attention", None),
        ("attnlab_case", "attention"),
    ),
    "path": (("perf_path", None), ("attnlab_backend", None), ("attnlab_case", "backend")),
}


@dataclass(frozen=True)
class Case:
    model: str = ""  # an --attnlab-perf-models entry; "": --attnlab-model
    quant: str = BASELINE_QUANT
    attention: str = BASELINE_ATTENTION
    path: str = "hf"

    @classmethod
    def of(cls, request: pytest.FixtureRequest) -> Case:
        """This test's case: each field from the first of its AXES the test uses, else the baseline."""
        values = {}
        for field, fixtures in AXES.items():
            used = next(((f, attr) for f, attr in fixtures if f in request.fixturenames), None)
            if used is not None:
                value = request.getfixturevalue(used[0])
                values[field] = value if used[1] is None else getattr(value, used[1])
        return cls(**values)

    def skip_reason(self, config: pytest.Config) -> str:
        """Why this case cannot run ('' where it can): a decode path that runs its own attention on its own
        plain copy of the weights measures neither a quantizer nor an attention variant."""
        off = [f"{k} {v}" for k, v, base in (("quant", self.quant, BASELINE_QUANT),
               ("attention", self.attention, BASELINE_ATTENTION)) if v != base]  # fmt: skip
        if off and getattr(path_state(config).path(self.path), "plain_weights_only", False):
            return (
                f"the {self.path} path runs its own attention on plain weights: quant {BASELINE_QUANT} and "
                f"attention {BASELINE_ATTENTION} only, not {' and '.join(off)}"
            )
        return ""

    def check(self, config: pytest.Config) -> None:
        """Skip the test, with the reason, where this case cannot run."""
        why = self.skip_reason(config)
        if why:
            pytest.skip(why)

    def loaded(self, config: pytest.Config) -> Any:
        """The case's model quantized by its quantizer, as --attnlab-quant-cache says (skips the test with the
        reason where the case or its method cannot run here)."""
        self.check(config)
        return self.quantized(config)

    def quantized(self, config: pytest.Config) -> Any:
        """`loaded` without the case check (a caller that checked already, then memoises)."""
        session = config.stash[SESSION_KEY]
        return settings_of(config).quantize(session.model(self.model or None), self.quant)


@pytest.fixture
def attnlab_run_case(request: pytest.FixtureRequest) -> Case:
    """The Case this test runs (model, quantizer, attention variant, decode path), from its parametrized axes."""
    return Case.of(request)


@pytest.fixture
def quantized_model(request: pytest.FixtureRequest, attnlab_run_case: Case) -> Any:
    """The model under test quantized by `quantizer` (the baseline itself for 'none').

    Sets the CSV `quant` column of this test's `metrics` rows to the quantizer's name.
    """
    if "metrics" in request.fixturenames:
        request.getfixturevalue("metrics").update_context(quant=attnlab_run_case.quant)
    return attnlab_run_case.loaded(request.config)
