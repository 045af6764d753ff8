"""Goodput under --attnlab-perf-slo, as vLLM's benchmark defines it: the objectives parsed with their units,
the good requests counted per round, and the two figures beside tok/s in metrics.csv and benchmark JSON."""

from __future__ import annotations

import csv
import json

import pytest

from pytest_attnlab.perf.llm_metrics import Run, Summary
from pytest_attnlab.perf.slo import describe, goodput, parse_slo


def test_parse_slo_units_and_errors():
    assert parse_slo("ttft:200ms, tpot:50") == (("ttft", 0.2), ("tpot", 0.05))  # a bare number is ms, as vLLM's
    assert parse_slo("e2el:1.5s") == (("e2el", 1.5),)
    assert parse_slo("") == ()
    assert describe(parse_slo("ttft:200ms,tpot:0.05s")) == "ttft:200ms,tpot:50ms"
    for bad in ("ttft", "itl:5ms", "ttft:-1ms", "ttft:0ms", "tpot:5us"):
        with pytest.raises(pytest.UsageError, match="--attnlab-perf-slo.*(choose from: ttft:N.*tpot:N.*e2el:N|> 0)"):
            parse_slo(bad)


def test_goodput_counts_the_requests_of_rounds_that_meet_every_objective():
    # three rounds of batch 4, 5 tokens each: TTFT 0.1 / 0.1 / 0.3 s, TPOT 0.02 / 0.06 / 0.02 s
    runs = [
        Run(4, 16, (0.1, 0.12, 0.14, 0.16, 0.18)),
        Run(4, 16, (0.1, 0.16, 0.22, 0.28, 0.34)),
        Run(4, 16, (0.3, 0.32, 0.34, 0.36, 0.38)),
    ]
    duration = 0.18 + 0.34 + 0.38
    got = goodput(runs, parse_slo("ttft:200ms,tpot:50ms"))  # only the first round is good
    assert got["goodput_req_s"] == (pytest.approx(4 / duration), "requests/s")
    assert got["goodput_tok_s"] == (pytest.approx(4 * 5 / duration), "tokens/s")
    every = goodput(runs, parse_slo("ttft:1s"))  # every request is good: token goodput is e2e tok/s
    assert every["goodput_tok_s"][0] == pytest.approx(Summary(runs).as_dict()["e2e_tok_s"])
    assert goodput(runs, parse_slo("e2el:100ms"))["goodput_req_s"][0] == 0.0


def test_goodput_reaches_metrics_csv_and_benchmark_json_from_an_experiment_file(pytester):
    pytester.makepyfile(
        test_grid="""
def test_cell(perf_model, perf_batch, generation_benchmark):
    generation_benchmark(perf_model, prompt_len=8, batch=perf_batch, new_tokens=3, path="hf")
"""
    )
    pytester.makefile(".yaml", exp="experiment_name: slo\noptions:\n  perf-slo: ttft:1000s,tpot:1000s\n")
    report, out = pytester.path / "reports", pytester.path / "out.json"
    result = pytester.runpytest_subprocess(
        "--attnlab-config", "exp.yaml", "--attnlab-model", "random:tiny-qwen2", "--attnlab-device", "cpu",
        "--attnlab-report-dir", str(report), "--attnlab-perf-batch", "2", "--attnlab-perf-rounds", "2",
        "--attnlab-perf-monitor", "none", f"--benchmark-json={out}", "-p", "no:html", "test_grid.py",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    info = json.loads(out.read_text())["benchmarks"][0]["extra_info"]
    assert info["slo"] == "ttft:1000s,tpot:1000s"
    assert info["goodput_tok_s"] == pytest.approx(info["e2e_tok_s"])  # every request met these objectives
    assert info["goodput_req_s"] == pytest.approx(info["e2e_tok_s"] / 3)
    rows = {r["metric"]: r for r in csv.DictReader(open(report / "metrics.csv"))}
    assert rows["goodput_tok_s"]["unit"] == "tokens/s" and rows["goodput_req_s"]["unit"] == "requests/s"
    assert json.loads(rows["tpot"]["extra"])["slo"] == "ttft:1000s,tpot:1000s"


def test_the_option_is_a_usage_error_naming_the_objectives(pytester):
    result = pytester.runpytest("--attnlab-perf-slo", "ttft:fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--attnlab-perf-slo: invalid item 'ttft:fast'; choose from: ttft:N*"])
