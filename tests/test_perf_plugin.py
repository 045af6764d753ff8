"""The perf sub-plugin end to end through pytester: options, usage errors, grid ids, benchmark
JSON that `pytest-benchmark compare` reads, metrics.csv rows with units, monitor timelines."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

SUITE = """
def test_cell(perf_model, perf_prompt_len, perf_batch, perf_new_tokens, perf_path,
              generation_benchmark, gpu_monitor):
    m = generation_benchmark(perf_model, prompt_len=perf_prompt_len, batch=perf_batch,
                             new_tokens=perf_new_tokens, path=perf_path)
    assert tuple(m.tokens.shape) == (perf_batch, perf_new_tokens)
"""


def test_help_lists_perf_options(pytester):
    result = pytester.runpytest("--help")
    for flag in (
        "--attnlab-perf-prompt-lens",
        "--attnlab-perf-batch",
        "--attnlab-perf-new-tokens",
        "--attnlab-perf-path",
        "--attnlab-perf-monitor-interval",
        "--attnlab-perf-compile",
    ):
        result.stdout.fnmatch_lines([f"*{flag}*"])


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--attnlab-perf-batch", "huge"],
            "*--attnlab-perf-batch: invalid value 'huge'; choose from: small, medium, large*",
        ),
        (
            ["--attnlab-perf-path", "warp"],
            "*--attnlab-perf-path: unknown decode path *warp*; choose from: hf, fast*",
        ),
        (["--attnlab-perf-prompt-lens", "0"], "*--attnlab-perf-prompt-lens: 0 must be >= 1*"),
        (["--attnlab-perf-monitor", "gpu"], "*choose from: auto, nvml, psutil, none*"),
        (["--attnlab-perf-compile", "fast"], "*choose from: auto, none, default, max-autotune-no-cudagraphs*"),
        (["--attnlab-perf-monitor-interval", "-5"], "*must be > 0 ms*"),
    ],
)
def test_bad_values_are_usage_errors(pytester, args, message):
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_grid_ids_and_levels(pytester):
    pytester.makepyfile(test_grid=SUITE)
    result = pytester.runpytest(
        "--collect-only",
        "-q",
        "--attnlab-device",
        "cpu",
        "--attnlab-perf-batch",
        "small,medium",
        "--attnlab-perf-prompt-lens",
        "16",
        "--attnlab-perf-new-tokens",
        "3",
    )
    result.stdout.fnmatch_lines(["*test_cell[model-p16-b1-n3-hf]*", "*test_cell[model-p16-b8-n3-fast]*"])


def test_quant_axis_keeps_the_baseline_beside_quantizers(pytester):
    pytester.makepyfile(test_q="def test_q(perf_quant):\n    pass\n")
    result = pytester.runpytest("--collect-only", "-q", "--attnlab-quant", "none,rtn-int4-g64-zp")
    result.stdout.fnmatch_lines(["*test_q[[]none[]]*", "*test_q[[]rtn-int4-g64-zp[]]*"])
    assert result.ret == pytest.ExitCode.OK


def test_benchmark_json_metrics_and_monitor(pytester):
    pytester.makepyfile(test_grid=SUITE)
    report = pytester.path / "reports"
    out = pytester.path / "out.json"
    # a subprocess: an in-process run would drop torch's submodules from sys.modules afterwards
    result = pytester.runpytest_subprocess(
        "--attnlab-model",
        "random:tiny-qwen2",
        "--attnlab-device",
        "cpu",
        "--attnlab-report-dir",
        str(report),
        "--attnlab-perf-prompt-lens",
        "8",
        "--attnlab-perf-batch",
        "1,2",
        "--attnlab-perf-new-tokens",
        "3",
        "--attnlab-perf-rounds",
        "2",
        "--attnlab-perf-monitor-interval",
        "5",
        "--attnlab-perf-path",
        "hf,fast",
        f"--benchmark-json={out}",
        "-p",
        "no:html",
    )
    result.assert_outcomes(passed=4)
    data = json.loads(out.read_text())
    assert data["machine_info"]["attnlab"]["model"] == "random:tiny-qwen2"
    info = data["benchmarks"][0]["extra_info"]
    for key in (
        "ttft_ms",
        "tpot_ms",
        "itl_p99_ms",
        "prefill_tok_s",
        "decode_tok_s",
        "e2e_tok_s",
        "mbu_pct",
        "mfu_pct",
    ):
        assert info[key] > 0, key
    # the per-round samples behind each figure (the compare gate's rank test reads them)
    assert len(info["samples"]["tpot_ms"]) == 2
    assert sum(info["samples"]["tpot_ms"]) / 2 == pytest.approx(info["tpot_ms"])
    groups = {b["group"] for b in data["benchmarks"]}
    assert groups == {"p8-b1-n3", "p8-b2-n3"}  # hf and fast side by side per cell
    compare = subprocess.run(
        [sys.executable, "-c", "from pytest_benchmark.cli import main; main()", "compare", str(out)],
        capture_output=True,
        text=True,
    )
    assert compare.returncode == 0, compare.stderr
    assert "benchmark 'p8-b1-n3'" in compare.stdout and "n3-fast]" in compare.stdout
    rows = list(csv.DictReader(open(report / "metrics.csv")))
    units = {r["metric"]: r["unit"] for r in rows}
    assert units["ttft"] == "s" and units["decode_tok_s"] == "tokens/s" and units["mbu"] == "%"
    assert units["psutil_rss_peak"] == "bytes"
    assert {r["backend"] for r in rows if r["metric"] == "tpot"} == {"hf", "fast"}
    for r in rows:
        if r["metric"] in ("ttft", "tpot", "decode_tok_s"):
            rounds = [float(x) for x in r["samples"].split()]
            assert len(rounds) == 2 and min(rounds) > 0, r
            if r["metric"] != "decode_tok_s":  # a throughput is of the mean times, not a mean of rates
                assert sum(rounds) / 2 == pytest.approx(float(r["value"])), r
        elif r["metric"] in ("itl_p99", "mbu"):
            assert r["samples"] == "", r  # pooled or derived: no per-round value
    assert len(list((report / "monitor").glob("*.json"))) == 4


def test_perf_models_reach_tests_that_take_only_perf_model(pytester):
    # --attnlab-perf-models was once ignored by tests that asked for perf_model alone (the grid's
    # model axis was parametrized only where a test named perf_model_name): every cell ran the
    # default model. Each named model must now reach such a test, under its own id.
    pytester.makepyfile(test_m="def test_m(perf_model, perf_batch):\n    print('LABEL', perf_model.spec.label)\n")
    result = pytester.runpytest_subprocess(
        "-s",
        "--attnlab-device",
        "cpu",
        "--attnlab-perf-models",
        "random:tiny-qwen2",
        "--attnlab-perf-batch",
        "1",
        "--attnlab-report-dir",
        str(pytester.path / "reports"),
        "-v",
    )
    result.stdout.fnmatch_lines(["*test_m[[]tiny-qwen2-b1[]]*", "PASSED*", "*1 passed*"])
    labels = [line.split("LABEL ", 1)[1].split()[0] for line in result.outlines if "LABEL " in line]
    assert labels == ["random:tiny-qwen2"], labels


def test_a_quantizer_whose_library_is_missing_skips_naming_the_extra(pytester):
    pytest.importorskip("torch")
    if __import__("importlib").util.find_spec("gptqmodel") is not None:
        pytest.skip("gptqmodel is installed here: the skip path is not reachable")
    pytester.makepyfile(test_q="def test_q(perf_model, perf_quant):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "--attnlab-model", "random:tiny-qwen2", "--attnlab-device", "cpu", "--attnlab-quant",
        "gptq-int4-g128", "-rs", "--attnlab-report-dir", str(pytester.path / "reports"),
    )
    result.stdout.fnmatch_lines(["*SKIPPED*gptq-int4-g128*pytest-attnlab[[]gptq[]]*", "*1 skipped*"])
    assert result.ret == pytest.ExitCode.OK
