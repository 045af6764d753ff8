"""The decode self-test cannot hide a survivor: a mutant registered from a conftest.py through
`pytest_attnlab_register` is collected by suites/correctness/test_decode_gate_kill.py, and one that
plants nothing fails its test and the kill rate, in float32 and in bfloat16. A missed bug is excused (xfail)
only where its float32 form is told from the clean model yet within the run's bound; one whose float32 form
is beyond that bound fails. The built-in mutants are undone on exit."""

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


def decode_logits_plus(delta):
    \"\"\"Adds `delta` to the logits of each one-token (decode) forward: the cached-decode check's figure.\"\"\"
    def plant(model):
        state = {"decode": False}
        def flag(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            state["decode"] = ids is not None and ids.shape[-1] == 1
        def shift(module, args, out):
            return out + delta if state["decode"] else out
        hooks = [model.register_forward_pre_hook(flag, with_kwargs=True),
                 model.get_output_embeddings().register_forward_hook(shift)]
        return lambda: [h.remove() for h in hooks]
    return plant


def pytest_attnlab_register(registries, config):
    nothing = lambda model: lambda: None
    for mutant in (
        DecodeMutant("plants-nothing", "a bug that changes nothing", nothing, ("cached_decode",)),
        # 0.01 logits: beyond float32's bound (1e-3), within bfloat16's (0.25): below bfloat16's resolution
        DecodeMutant("small", "decode logits + 0.01", decode_logits_plus(0.01), ("cached_decode",)),
        # 3e-4 logits: told from the clean model (1e-7) in float32, yet within float32's bound (1e-3) too
        DecodeMutant("tiny", "decode logits + 3e-4", decode_logits_plus(3e-4), ("cached_decode",)),
        # missed in the run's dtype, though its float32 form moves logits by 1.0, beyond any bound: no excuse
        DecodeMutant("missed", "decode logits + 1 in float32 only", nothing, ("cached_decode",),
                     float32_form=decode_logits_plus(1.0)),
    ):
        registries["decode_mutants"].register(mutant.name, mutant)
"""


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_surviving_mutant_fails_the_suite(pytester: pytest.Pytester, dtype: str) -> None:
    suite = REPO / "suites" / "correctness"
    for name in ("test_decode_gate_kill.py", "test_generation.py"):
        shutil.copy(suite / name, pytester.path / name)
    pytester.makeconftest((suite / "conftest.py").read_text() + CONFTEST)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", "-rxf", "--attnlab-model", "random:tiny-qwen2", "--attnlab-dtype", dtype,
        "--attnlab-report-dir", "out", "test_decode_gate_kill.py", "-k",
        "nothing or small or tiny or missed or kill_rate",
    )  # fmt: skip
    result.stdout.fnmatch_lines([f"*XFAIL*tiny*cached_decode in {dtype} cannot resolve it on this model*0.0003*"])
    if dtype == "float32":  # 0.01 is beyond float32's bound: killed
        result.assert_outcomes(passed=1, failed=3, xfailed=1, deselected=len(DECODE_MUTANTS))
    else:
        result.assert_outcomes(failed=3, xfailed=2, deselected=len(DECODE_MUTANTS))
        result.stdout.fnmatch_lines(["*XFAIL*small*cached_decode in bfloat16 cannot resolve it on this model*0.01*"])
    result.stdout.fnmatch_lines(["*decode bug 'missed' (decode logits + 1 in float32 only) SURVIVED*"])
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
