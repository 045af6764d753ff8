"""The quant sub-plugin: options, usage errors, parametrization, user quantizers from a conftest, skips."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

FIXTURE_TEST = """
def test_names(quantizer):
    pass
"""


def test_help_lists_the_quant_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        ["*--attnlab-quant=NAMES*", "*--attnlab-quant-threshold=*", "*--attnlab-quant-cache=MODE*"]
    )


def test_unknown_quantizer_is_a_usage_error_listing_the_names(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FIXTURE_TEST)
    result = pytester.runpytest("--attnlab-quant", "rtn-int8,int3-magic")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--attnlab-quant: unknown quantizer 'int3-magic'; choose from: none, all, rtn-int8,*"]
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--attnlab-quant-threshold", "rtn-int8"], "*is not NAME=COSINE with NAME one of: rtn-int8,*"),
        (["--attnlab-quant-threshold", "rtn-int8=high"], "*'high' (for rtn-int8) is not a number*"),
        (["--attnlab-quant-cache", "maybe"], "*invalid mode 'maybe'; choose from: on, off, rebuild*"),
    ],
)
def test_bad_option_values(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile(FIXTURE_TEST)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_quant_all_parametrizes_every_registered_name(pytester: pytest.Pytester) -> None:
    from pytest_attnlab.quant import QUANTIZERS

    pytester.makepyfile(FIXTURE_TEST)
    result = pytester.runpytest("--attnlab-quant", "all", "--co", "-q")
    result.stdout.fnmatch_lines([f"*test_names[[]{name}[]]*" for name in QUANTIZERS.names()])
    default = pytester.runpytest("--co", "-q")
    default.stdout.fnmatch_lines(["*test_names[[]none[]]*", "1 test collected*"])


def test_ini_and_marker_select_quantizers(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nattnlab_quant = rtn-int8,rtn-int4-g32\n")
    pytester.makepyfile(
        FIXTURE_TEST
        + """
import pytest

@pytest.mark.quant("rtn-int4-g128")
def test_marked(quantizer):
    assert quantizer == "rtn-int4-g128"
"""
    )
    result = pytester.runpytest("--co", "-q")
    result.stdout.fnmatch_lines(
        [
            "*test_names[[]rtn-int8[]]*",
            "*test_names[[]rtn-int4-g32[]]*",
            "*test_marked[[]rtn-int4-g128[]]*",
            "3 tests collected*",
        ]
    )


USER_CONFTEST = """
import copy
from pytest_attnlab.quant import Quantizer

class HalfCast(Quantizer):
    name, bits = "fp16-cast", 16

    def settings(self):
        return {"dtype": "float16"}

    def quantize(self, loaded, ctx):
        return copy.deepcopy(loaded.model).half().float()

class NeedsLib(Quantizer):
    name, extra, modules = "needs-lib", "magic", ("attnlab_no_such_module",)

    def settings(self):
        return {}

    def quantize(self, loaded, ctx):
        raise AssertionError("never called")

def pytest_attnlab_register_quantizers(quantizers):
    quantizers.register("fp16-cast", HalfCast())
    quantizers.register("needs-lib", NeedsLib())
"""

USER_TEST = """
import torch

def test_runs(quantizer, quantized_model, attnlab_model, metrics):
    assert quantized_model.context()["quant"] == quantizer
    assert quantized_model.model is not attnlab_model.model
    ids = torch.arange(3, 20)[None]
    with torch.no_grad():
        a, b = attnlab_model.model(ids).logits, quantized_model.model(ids).logits
    torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)
    metrics.record("ok", 1)
"""


def test_user_quantizer_from_conftest_and_missing_extra_skip(pytester: pytest.Pytester) -> None:
    """A conftest registers two quantizers: one runs, the other skips naming its pip extra."""
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(USER_TEST)
    # a subprocess: the registry is process-wide and this must not leak into other tests
    result = pytester.runpytest_subprocess(
        "--attnlab-model",
        "random:tiny-qwen2",
        "--attnlab-quant",
        "fp16-cast,needs-lib",
        "-rs",
        "--attnlab-report-dir",
        str(pytester.path / "reports"),
    )
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*needs attnlab_no_such_module: pip install 'pytest-attnlab[[]magic[]]'*"])
    csv = (pytester.path / "reports" / "metrics.csv").read_text()
    assert ",fp16-cast," in csv
