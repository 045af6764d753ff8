"""Options: --help, bad values as usage errors naming the choices, ini keys, precedence."""

from __future__ import annotations

import pytest

SHOW_SETTINGS = """
def test_show(attnlab_settings):
    s = attnlab_settings
    print(f"SETTINGS model={s.model.label} device={s.device} dtype={s.dtype} cos={s.logits_cosine} dir={s.report_dir}")
"""


def test_help_lists_the_attnlab_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "pytest-attnlab*",
            "*--attnlab-model=MODEL*",
            "*--attnlab-device=DEVICE*",
            "*--attnlab-dtype=DTYPE*",
            "*--attnlab-report-dir=DIR*",
        ]
    )
    assert result.ret == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--attnlab-device", "tpu"], "*invalid device 'tpu'; choose from: auto, cpu, cuda, cuda:N*"),
        (["--attnlab-dtype", "int3"], "*invalid dtype 'int3'; choose from: auto, float32, float16, bfloat16*"),
        (["--attnlab-model", "random:nope"], "*unknown random model shape 'nope'; choose from: random:tiny-qwen2*"),
        (["--attnlab-model", "./not/a/dir"], "*invalid model './not/a/dir'; use one of: embedded*"),
        (["--attnlab-logits-cosine", "high"], "*--attnlab-logits-cosine: expected a number, got 'high'*"),
    ],
)
def test_bad_values_are_usage_errors(pytester: pytest.Pytester, args: list[str], expected: str) -> None:
    pytester.makepyfile(test_a="def test_a(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


def test_cuda_without_gpu_is_a_usage_error(pytester: pytest.Pytester) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    pytester.makepyfile(test_a="def test_a(): pass")
    result = pytester.runpytest("--attnlab-device", "cuda:0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--attnlab-device cuda:0: CUDA is not available here*"])


def test_defaults(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_show=SHOW_SETTINGS)
    result = pytester.runpytest("-s")
    result.stdout.fnmatch_lines(["*SETTINGS model=smollm2-135m-instruct device=auto dtype=auto cos=0.95 dir=reports"])


def test_ini_keys_and_command_line_precedence(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        attnlab_model = random:tiny-qwen2
        attnlab_device = cpu
        attnlab_dtype = bfloat16
        attnlab_logits_cosine = 0.99
        attnlab_report_dir = custom
        """
    )
    pytester.makepyfile(test_show=SHOW_SETTINGS)
    result = pytester.runpytest("-s")
    result.stdout.fnmatch_lines(["*SETTINGS model=random:tiny-qwen2 device=cpu dtype=bfloat16 cos=0.99 dir=custom"])
    result = pytester.runpytest("-s", "--attnlab-dtype", "float16")
    result.stdout.fnmatch_lines(["*SETTINGS model=random:tiny-qwen2 device=cpu dtype=float16 cos=0.99 dir=custom"])


def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nattnlab_dtype = fp8\n")
    pytester.makepyfile(test_a="def test_a(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid dtype 'fp8'; choose from*"])


def test_pyproject_ini_options(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nattnlab_device = "cpu"\n')
    pytester.makepyfile(test_show=SHOW_SETTINGS)
    result = pytester.runpytest("-s")
    result.stdout.fnmatch_lines(["*SETTINGS * device=cpu *"])


def test_gpu_marker_skips_on_cpu_with_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpu
        def test_needs_gpu():
            pass
        """
    )
    result = pytester.runpytest("-rs", "--attnlab-device", "cpu")
    result.stdout.fnmatch_lines(["*SKIPPED*needs a CUDA GPU (device resolved to 'cpu')*"])


def test_every_attnlab_option_has_an_ini_key(pytester: pytest.Pytester) -> None:
    """`pytest --help` lists `attnlab_x` under the ini keys for every `--attnlab-x` flag."""
    import re

    text = pytester.runpytest("--help").stdout.str()
    flags = set(re.findall(r"--attnlab-([a-z0-9-]+)", text))
    inis = set(re.findall(r"^\s+(attnlab_[a-z0-9_]+)", text, flags=re.M))
    assert len(flags) > 20, flags
    missing = sorted(f for f in flags if "attnlab_" + f.replace("-", "_") not in inis)
    assert not missing, f"options without an ini key: {missing}"


def test_module_cli_help_lists_commands_and_each_has_its_own(pytester: pytest.Pytester) -> None:
    import sys

    top = pytester.run(sys.executable, "-m", "pytest_attnlab", "--help")
    assert top.ret == 0
    top.stdout.fnmatch_lines(["usage: python -m pytest_attnlab*COMMAND*", "*compare*regression gate*"])
    sub = pytester.run(sys.executable, "-m", "pytest_attnlab", "compare", "--help")
    assert sub.ret == 0
    sub.stdout.fnmatch_lines(["usage: python -m pytest_attnlab compare*", "*--threshold*", "*tpot:+5%*"])
    bad = pytester.run(sys.executable, "-m", "pytest_attnlab", "bogus")
    assert bad.ret == 2
    bad.stderr.fnmatch_lines(["*invalid choice: 'bogus' (choose from*compare*"])


def test_one_parser_for_a_technique_axis() -> None:
    """--attnlab-quant means one thing everywhere: names in the order given, the baseline beside them."""
    from pytest_attnlab.quant.plugin import parse_quant

    assert parse_quant("none") == parse_quant("") == ("none",)
    assert parse_quant("none,rtn-int8,rtn-int8") == ("none", "rtn-int8")
    with pytest.raises(pytest.UsageError, match="unknown quantizer 'int3'; choose from: none, all, rtn-int8"):
        parse_quant("rtn-int8,int3")


def test_options_are_read_in_one_place() -> None:
    """Only options.py reads an --attnlab-* option from the config; no module writes one."""
    import re
    from pathlib import Path

    import pytest_attnlab

    root = Path(pytest_attnlab.__file__).parent
    pattern = re.compile(r"get(option|ini)\(\s*[\"']attnlab_|config\.option\.attnlab_")
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "options.py" and pattern.search(path.read_text())
    ]
    assert offenders == []
