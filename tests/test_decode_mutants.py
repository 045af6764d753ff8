"""The decode self-test cannot hide a survivor: a mutant registered from a conftest.py through
`pytest_attnlab_register` is collected by suites/correctness/test_decode_gate_kill.py, and one that
plants nothing fails its test and the kill rate. The built-in mutants are undone on exit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from pytest_attnlab.models.random_models import build
from pytest_attnlab.selftest.decode_mutants import DECODE_MUTANTS

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parents[1]

CONFTEST = """
from pytest_attnlab.selftest.decode_mutants import DecodeMutant


def pytest_attnlab_register(registries, config):
    nothing = DecodeMutant("plants-nothing", "a bug that changes nothing", lambda model: lambda: None,
                           ("cached_decode",))
    registries["decode_mutants"].register("plants-nothing", nothing)
"""


def test_a_surviving_mutant_fails_the_suite(pytester: pytest.Pytester) -> None:
    suite = REPO / "suites" / "correctness"
    for name in ("test_decode_gate_kill.py", "test_generation.py"):
        shutil.copy(suite / name, pytester.path / name)
    pytester.makeconftest((suite / "conftest.py").read_text() + CONFTEST)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", "--attnlab-model", "random:tiny-qwen2", "--attnlab-report-dir", "out",
        "test_decode_gate_kill.py", "-k", "plants-nothing or kill_rate",
    )  # fmt: skip
    result.assert_outcomes(failed=2, deselected=len(DECODE_MUTANTS))
    result.stdout.fnmatch_lines(["*decode bug 'plants-nothing' (a bug that changes nothing) SURVIVED*"])
    result.stdout.fnmatch_lines(["*not run (deselected?): [[]'decode-position-off-by-one'*"])


@pytest.mark.parametrize("name", DECODE_MUTANTS.names())
def test_a_planted_bug_is_undone(name: str) -> None:
    model = build("tiny-qwen2", num_hidden_layers=2)
    ids = torch.arange(16, 40)[None]
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.inference_mode():
        before = model(ids, attention_mask=mask).logits
        with DECODE_MUTANTS.get(name).planted(model):
            model(ids, attention_mask=mask)
        after = model(ids, attention_mask=mask).logits
    assert torch.equal(before, after)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
