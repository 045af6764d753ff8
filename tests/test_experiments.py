"""--attnlab-config: YAML experiments validated with errors that name the field, expanded into cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_attnlab.experiments import ExperimentConfigError, from_mapping, load

EXAMPLES = sorted((Path(__file__).parents[1] / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_shipped_examples_load(path: Path) -> None:
    cfg = load(path)
    cases = cfg.cases()
    t = cfg.techniques
    n_sizes = sum(len(cfg.batch_sizes[lvl]) for lvl in cfg.batch_levels)
    assert len(cases) == len(t.quantizers) * len(t.attention) * len(t.backends) * n_sizes
    assert len({c.id for c in cases}) == len(cases)
    assert cfg.suites and all((path.parents[1] / suite).exists() for suite in cfg.suites), cfg.suites


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3


def test_seed_003_flat_spelling_and_expansion() -> None:
    cfg = from_mapping(
        {"experiment_name": "e", "batch_level": "large", "max_tokens": 100, "temperature": 0.8, "top_p": 0.95,
         "techniques": {"quantizers": "none,rtn-int8"}, "batch_sizes": {"large": [16, 32]},
         "warmup_iterations": 3, "test_iterations": 5}
    )  # fmt: skip
    assert cfg.generation.max_tokens == 100 and cfg.generation.top_p == 0.95
    assert [c.id for c in cfg.cases()] == [
        "none-sdpa-hf-bs16", "none-sdpa-hf-bs32", "rtn-int8-sdpa-hf-bs16", "rtn-int8-sdpa-hf-bs32",
    ]  # fmt: skip
    ctx = cfg.cases()[3].context()
    assert ctx == {"quant": "rtn-int8", "attention": "sdpa", "backend": "hf", "batch": 32,
                   "batch_level": "large", "experiment": "e"}  # fmt: skip


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"batch_levels": ["huge"]},
            "field 'batch_levels': invalid value 'huge'; allowed: small, medium, large",
        ),
        (
            {"generation": {"top_p": 1.5}},
            "field 'generation.top_p': invalid value 1.5; allowed: a number in (0, 1]",
        ),
        ({"generation": {"max_tokens": 0}}, "field 'generation.max_tokens': invalid value 0"),
        ({"warmup": 3}, "unknown field 'warmup' (did you mean 'warmup_iterations'?)"),
        ({"techniques": {"quant": ["x"]}}, "unknown field 'techniques.quant' (did you mean 'quantizers'?)"),
        ({"techniques": {"attention": []}}, "field 'techniques.attention': invalid value []"),
        ({"batch_sizes": {"small": [0]}}, "field 'batch_sizes.small': invalid value [0]"),
        ({"test_iterations": 0}, "field 'test_iterations': invalid value 0; allowed: an integer >= 1"),
    ],
)
def test_bad_values_name_the_field_and_allowed_values(data: dict, message: str) -> None:
    with pytest.raises(ExperimentConfigError) as exc:
        from_mapping(data)
    assert message in str(exc.value)


def test_prompts_file_relative_to_the_yaml(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("one\n\ntwo\nthree\n")
    (tmp_path / "e.yaml").write_text("generation:\n  prompts_file: p.txt\n  num_prompts: 2\n")
    assert load(tmp_path / "e.yaml").prompts() == ["one", "two"]


CASE_TEST = """
def test_case(attnlab_case, attnlab_experiment, metrics):
    metrics.update_context(**attnlab_case.context())
    metrics.record("batch", attnlab_case.batch_size)
    assert attnlab_case.experiment is attnlab_experiment or attnlab_experiment is None

def test_stash(pytestconfig):
    from pytest_attnlab.experiments import EXPERIMENT_KEY
    cfg = pytestconfig.stash[EXPERIMENT_KEY]
    print("EXPERIMENT", cfg.experiment_name if cfg else None)
"""


def test_plugin_expands_config_into_test_ids(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(CASE_TEST)
    pytester.makefile(".yaml", exp="experiment_name: demo\ntechniques:\n  quantizers: [none, rtn-int8]\n"
                                   "batch_levels: [small, medium]\nbatch_sizes:\n  medium: 3\n")  # fmt: skip
    result = pytester.runpytest("--attnlab-config", "exp.yaml", "--attnlab-report-dir", "out", "-s", "-v",
                                "-p", "no:html")  # fmt: skip
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        ["attnlab experiment: demo (exp.yaml), 4 cases", "*test_case?none-sdpa-hf-bs1? PASSED*",
         "*test_case?rtn-int8-sdpa-hf-bs3? PASSED*", "*EXPERIMENT demo*"]
    )  # fmt: skip
    text = (pytester.path / "out" / "metrics.csv").read_text()
    assert '"experiment": "demo"' in text.replace('""', '"')


def test_without_config_one_default_case(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(CASE_TEST)
    result = pytester.runpytest("--attnlab-report-dir", "out", "-v", "-p", "no:html")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_case?none-sdpa-hf-bs1? PASSED*"])


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        (
            "techniques:\n  quantizers: [int3]\n",
            "*field 'techniques.quantizers': unknown name 'int3'; allowed: none, rtn-int8*",
        ),
        (
            "techniques:\n  attention: [nope]\n",
            "*field 'techniques.attention': unknown name 'nope'; allowed: *sdpa*",
        ),
        (
            "batch_levels: [huge]\n",
            "*field 'batch_levels': invalid value 'huge'; allowed: small, medium, large*",
        ),
        (": : :\n", "*not valid YAML*"),
    ],
    ids=["quantizer", "attention", "batch-level", "yaml"],
)
def test_bad_file_is_a_usage_error(pytester: pytest.Pytester, yaml: str, message: str) -> None:
    pytester.makefile(".yaml", bad=yaml)
    result = pytester.runpytest("--attnlab-config", "bad.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --attnlab-config: bad.yaml: {message.lstrip('*')}"])


def test_missing_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--attnlab-config", "nope.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --attnlab-config: nope.yaml: no such experiment file"])
