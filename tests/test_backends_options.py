"""--attnlab-backend / --attnlab-vllm-* options, the backend switch onto perf's paths, skips without vLLM."""

from __future__ import annotations

import importlib.util

import pytest

BAD_VALUES = [
    ("--attnlab-backend", "tgi", "choose from: hf, fast, vllm"),
    ("--attnlab-vllm-enforce-eager", "maybe", "choose from: on, off"),
    ("--attnlab-vllm-gpu-memory-utilization", "1.5", "must be in (0, 1]"),
    ("--attnlab-vllm-gpu-memory-utilization", "lots", "expected a number in (0, 1]"),
    ("--attnlab-vllm-max-model-len", "8", "must be >= 16"),
    ("--attnlab-vllm-tensor-parallel-size", "two", "expected an integer"),
    ("--attnlab-vllm-kv-cache-dtype", "int4", "choose from: auto, bfloat16, fp8, fp8_e4m3, fp8_e5m2"),
    ("--attnlab-vllm-dtype", "fp64", "choose from: auto, float32, float16, bfloat16"),
    ("--attnlab-vllm-kv-cache-gb", "0", "must be > 0"),
]


def test_help_lists_backend_options(run_attnlab):
    result = run_attnlab("--help")
    for flag in (
        "--attnlab-backend=NAMES",
        "--attnlab-vllm-enforce-eager=on|off",
        "--attnlab-vllm-max-model-len=N",
        "--attnlab-vllm-tensor-parallel-size=N",
        "--attnlab-vllm-kv-cache-dtype=DTYPE",
        "--attnlab-vllm-gpu-memory-utilization=FRAC",
    ):
        result.stdout.fnmatch_lines([f"*{flag}*"])
    result.stdout.fnmatch_lines(["*attnlab_vllm_max_model_len. Default: '1024'*"])


@pytest.mark.parametrize(("flag", "value", "message"), BAD_VALUES, ids=[f"{f}={v}" for f, v, _ in BAD_VALUES])
def test_bad_values_are_usage_errors(pytester, flag, value, message):
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--attnlab-report-dir", "out", flag, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str(), result.stderr.str()


def test_ini_value_goes_through_the_same_converter(pytester):
    pytester.makeini("[pytest]\nattnlab_vllm_max_model_len = ten\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--attnlab-report-dir", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--attnlab-vllm-max-model-len: expected an integer, got 'ten'" in result.stderr.str()


def test_backend_sets_the_perf_path_and_parametrizes(pytester):
    pytester.makepyfile(
        """
        def test_paths(perf_settings, vllm_settings):
            assert perf_settings.paths == ("fast", "vllm")
            assert vllm_settings.max_model_len == 256 and vllm_settings.enforce_eager is False
            assert vllm_settings.dtype == "float32"  # auto follows --attnlab-dtype on CPU

        def test_each(attnlab_backend):
            assert attnlab_backend in ("fast", "vllm")
        """
    )
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "--attnlab-report-dir",
        "out",
        "--attnlab-device",
        "cpu",
        "--attnlab-backend",
        "fast,vllm",
        "--attnlab-vllm-max-model-len",
        "256",
        "--attnlab-vllm-enforce-eager",
        "off",
        "-v",
    )
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_each?fast? PASSED*", "*test_each?vllm? PASSED*"])
    result.stdout.fnmatch_lines(["attnlab backends: fast,vllm (*)"])


def test_backend_and_perf_path_must_agree(pytester):
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "--attnlab-report-dir",
        "out",
        "--attnlab-backend",
        "vllm",
        "--attnlab-perf-path",
        "hf",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--attnlab-backend vllm and --attnlab-perf-path hf disagree" in result.stderr.str()


def test_default_backends_are_every_registered_path(pytester):
    pytester.makepyfile("def test_each(attnlab_backend): pass")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--attnlab-report-dir", "out", "-v")
    result.stdout.fnmatch_lines(["*test_each?hf? PASSED*", "*test_each?fast? PASSED*", "*test_each?vllm? PASSED*"])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here: nothing to skip")
def test_vllm_skips_with_install_hint_without_vllm(pytester):
    pytester.makepyfile(
        """
        def test_engine(vllm_engine):
            pass

        def test_path(backend_state, model_factory):
            model = model_factory("random:tiny-qwen2").model
            backend_state.path("vllm").prepare(model, 1, 8, 4)
        """
    )
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "--attnlab-report-dir",
        "out",
        "--attnlab-model",
        "random:tiny-qwen2",
        "-rs",
        "-vv",
    )
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*vLLM is not installed: pip install 'pytest-attnlab?vllm?'*"] * 2)
