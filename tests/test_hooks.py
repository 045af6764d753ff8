"""One extension contract: a conftest registers into every registry through the registration hooks,
and each name works where a built-in one does: on the command line and in an `--attnlab-config` file."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

CONFTEST = """
from pytest_attnlab.attention import sliding_window
from pytest_attnlab.models.random_models import TINY_QWEN2
from pytest_attnlab.paths import DecodePath
from pytest_attnlab.quant import Quantizer


class HalfCast(Quantizer):
    name, bits = "half-cast", 16

    def settings(self):
        return {}

    def quantize(self, loaded, ctx):
        raise AssertionError("never called")


class MinePath(DecodePath):
    name = "mine"

    def __init__(self, options=None):
        self.options = options

    def prepare(self, model, batch, prompt_len, new_tokens):
        pass

    def generate(self, ids, new_tokens, on_token):
        raise AssertionError("never called")


def mine_writer(config, rows):
    path = config.rootpath / "mine-report.txt"
    path.write_text(f"{len(rows)} rows")
    return [path]


class MineMonitor:
    name, units = "mine", {}

    def __init__(self, device):
        self.device = device

    def sample(self):
        return {}

    def close(self):
        pass


def pytest_attnlab_register(registries, config):
    registries["quantizers"].register("half-cast", HalfCast())
    registries["attention"].register("sliding_window_5", sliding_window(5))
    registries["random_configs"].register("conftest-tiny", lambda: {**TINY_QWEN2, "hidden_size": 32})
    registries["decode_paths"].register("mine", MinePath)
    registries["monitors"].register("mine", MineMonitor)
    registries["report_writers"].register("mine", mine_writer)
"""

TEST = """
def test_named(quantizer, attention_patch, attnlab_backend, perf_settings, attnlab_settings):
    print("NAMED", quantizer, attention_patch.name, attnlab_backend, perf_settings.monitor,
          attnlab_settings.model.label)
"""

EXPERIMENT = """
experiment_name: conftest-names
model: random:conftest-tiny
techniques:
  quantizers: [half-cast]
  attention: [sliding_window_5]
  backends: [mine]
options:
  perf-monitor: mine
"""

NAMED = ["*NAMED half-cast sliding_window_5 mine mine random:conftest-tiny*", "*1 passed*"]


@pytest.mark.parametrize("where", ["command-line", "config"])
def test_conftest_names_work_everywhere(pytester: pytest.Pytester, where: str) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_named=TEST)
    pytester.makefile(".yaml", exp=EXPERIMENT)
    names = ["--attnlab-config", "exp.yaml"]
    if where == "command-line":
        names = ["--attnlab-model", "random:conftest-tiny", "--attnlab-quant", "half-cast", "--attnlab-attn"]
        names += ["sliding_window_5", "--attnlab-backend", "mine", "--attnlab-perf-monitor", "mine"]
    # a subprocess: the registries are process-wide and these names must not leak into other tests
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "--attnlab-device", "cpu", *names)
    result.stdout.fnmatch_lines(NAMED)
    assert (pytester.path / "mine-report.txt").read_text() == "0 rows"  # the registered report writer ran


def test_the_experiment_plans_what_the_command_line_leaves_open(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sel="def test_q(quantizer, attention_patch):\n    print('SEL', quantizer)\n")
    pytester.makefile(".yaml", exp="techniques:\n  quantizers: [none, rtn-int8]\n  attention: [sdpa]\n")
    planned = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--attnlab-config", "exp.yaml", "--co", "-q")
    planned.stdout.no_fnmatch_line("*recorded no metric rows*")  # nothing ran: nothing to say
    planned.stdout.fnmatch_lines(["*test_q[[]sdpa-none[]]", "*test_q[[]sdpa-rtn-int8[]]", "2 tests collected*"])
    given = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--attnlab-config", "exp.yaml", "--attnlab-quant", "rtn-int8", "--co", "-q"
    )
    given.stdout.fnmatch_lines(["*test_q[[]sdpa-rtn-int8[]]", "1 test collected*"])


def test_an_unknown_option_in_the_experiment_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", exp="options:\n  perf-speed: fast\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--attnlab-config", "exp.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*field 'options': unknown option 'perf-speed'; choose from: model,*"])


def test_experiment_suites_are_the_run_paths_and_an_empty_run_says_so(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntestpaths = tests\n")
    pytester.mkdir("tests").joinpath("test_own.py").write_text("def test_own():\n    pass\n")
    pytester.mkdir("bench").joinpath("test_bench.py").write_text(
        "def test_bench(metrics):\n    metrics.record('answer', 42.0)\n"
    )
    pytester.makefile(".yaml", exp="experiment_name: demo\nsuites: [bench]\n", idle="experiment_name: idle\n")
    ran = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--attnlab-config", "exp.yaml", "-v")
    ran.stdout.fnmatch_lines(["*bench/test_bench.py::test_bench PASSED*"])
    ran.stdout.no_fnmatch_line("*test_own*")
    ran.stdout.no_fnmatch_line("*recorded no metric rows*")
    idle = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--attnlab-config", "idle.yaml")
    idle.stdout.fnmatch_lines(["*attnlab: experiment 'idle' recorded no metric rows*suites:*"])
