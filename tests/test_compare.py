"""The regression gate: `python -m pytest_attnlab compare BASE CURRENT --threshold ...`."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_attnlab.compare import Threshold, main
from pytest_attnlab.compare.thresholds import ThresholdError
from pytest_attnlab.metrics.row import COLUMNS, MetricRow


def write_csv(path: Path, values: dict[tuple[str, str], float], **extra: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for (nodeid, metric), value in values.items():
            ctx = {"model": "m", "quant": "none", "attention": "sdpa", **extra}
            w.writerow(MetricRow(nodeid, metric, value, context=ctx, run_id="r").as_csv())
    return path


BASE = {("t::perf", "tpot"): 0.020, ("t::perf", "ttft"): 0.100, ("t::q", "logits_cosine"): 0.995,
        ("t::perf", "decode_tok_s"): 50.0}  # fmt: skip


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_identical_runs_pass(tmp_path: Path) -> None:
    base = write_csv(tmp_path / "a.csv", BASE)
    cur = write_csv(tmp_path / "b.csv", BASE)
    rc, out = run(str(base), str(cur), "-t", "tpot:+5%", "-t", "cosine:-0.01")
    assert rc == 0
    assert "PASS: 0 regressed, 2 checked" in out


@pytest.mark.parametrize(
    ("key", "factor", "threshold", "regressed"),
    [
        (("t::perf", "tpot"), 1.06, "tpot:+5%", True),  # 6 % slower
        (("t::perf", "tpot"), 1.04, "tpot:+5%", False),
        (("t::perf", "tpot"), 0.50, "tpot:+5%", False),  # faster is never a regression
        (("t::q", "logits_cosine"), 0.985 / 0.995, "cosine:-0.01", False),  # exactly -0.01: at the limit
        (("t::q", "logits_cosine"), 0.980 / 0.995, "cosine:-0.01", True),
        (("t::perf", "decode_tok_s"), 0.90, "tok_s:-5%", True),
    ],
)
def test_injected_regression_fails(tmp_path: Path, key: tuple, factor: float, threshold: str, regressed: bool) -> None:
    base = write_csv(tmp_path / "base" / "metrics.csv", BASE)
    cur = write_csv(tmp_path / "cur" / "metrics.csv", {**BASE, key: BASE[key] * factor})
    rc, out = run(str(base.parent), str(cur.parent), "--threshold", threshold)  # report dirs work too
    assert rc == (1 if regressed else 0), out
    assert ("REGRESSED" in out) == regressed
    assert out.splitlines()[-1].startswith("FAIL" if regressed else "PASS")


def test_default_thresholds_catch_a_tpot_regression(tmp_path: Path) -> None:
    base = write_csv(tmp_path / "a.csv", BASE)
    cur = write_csv(tmp_path / "b.csv", {**BASE, ("t::perf", "tpot"): 0.030})
    rc, out = run(str(base), str(cur))
    assert rc == 1
    line = next(ln for ln in out.splitlines() if "REGRESSED" in ln)
    assert "tpot" in line and "+50.0%" in line and "+5%" in line


def test_missing_gate_metric_fails_unless_allowed(tmp_path: Path) -> None:
    base = write_csv(tmp_path / "a.csv", BASE)
    cur = write_csv(tmp_path / "b.csv", {k: v for k, v in BASE.items() if k[1] != "ttft"})
    rc, out = run(str(base), str(cur))  # ttft is gated by the default ttft:+10%
    assert rc == 4, out
    assert out.splitlines()[-1].startswith("FAIL (gate metrics of BASE missing from CURRENT")
    assert "1 gate metrics missing" in out.splitlines()[-1]
    rc, out = run(str(base), str(cur), "--allow-missing")
    assert rc == 0 and out.splitlines()[-1].startswith("PASS: 0 regressed, 3 checked, 1 gate metrics missing")


def test_missing_ungated_metric_fails_only_when_asked(tmp_path: Path) -> None:
    base = write_csv(tmp_path / "a.csv", {**BASE, ("t::perf", "peak_mem"): 1.0})
    cur = write_csv(tmp_path / "b.csv", BASE)
    rc, out = run(str(base), str(cur))
    assert rc == 0 and "ungated, not compared: 1 absent from CURRENT" in out
    rc, out = run(str(base), str(cur), "--fail-on-missing")
    assert rc == 4 and "FAIL (metrics of BASE missing" in out


def test_a_gate_that_checked_nothing_fails(tmp_path: Path) -> None:
    """Two runs with no metric in common (was: "PASS: 0 regressed, 0 checked, 44 missing", exit 0)."""
    base = write_csv(tmp_path / "a.csv", BASE)
    cur = write_csv(tmp_path / "b.csv", {("other::test", k[1]): v for k, v in BASE.items()})
    for extra in ([], ["--allow-missing"]):
        rc, out = run(str(base), str(cur), *extra)
        assert rc == 3, out
        assert out.splitlines()[-1].startswith("FAIL (nothing checked"), out


def bench_json(path: Path, mean: float, tpot: float) -> Path:
    doc = {"machine_info": {}, "benchmarks": [
        {"fullname": "suites/perf/test_x.py::test_decode[sdpa]", "name": "test_decode[sdpa]",
         "stats": {"min": mean * 0.9, "median": mean, "mean": mean, "max": mean * 1.2, "stddev": 0.001,
                   "ops": 1 / mean},
         "extra_info": {"tpot": tpot, "ttft": 0.05, "path": "hf"}},
    ]}  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


def test_pytest_benchmark_json_with_extra_info(tmp_path: Path) -> None:
    base = bench_json(tmp_path / "base.json", 0.5, 0.010)
    same = bench_json(tmp_path / "same.json", 0.5, 0.010)
    slow = bench_json(tmp_path / "slow.json", 0.5, 0.012)  # stats equal, extra_info tpot +20 %
    assert run(str(base), str(same), "-t", "tpot:+5%", "-t", "mean:+5%")[0] == 0
    rc, out = run(str(base), str(slow), "-t", "tpot:+5%", "-t", "mean:+5%")
    assert rc == 1
    assert "test_decode[...]" in out and "[sdpa]" in out and "+20.0%" in out


def test_rows_told_apart_by_extra_context(tmp_path: Path) -> None:
    """Per-layer rows (extra layer=N) are compared layer by layer, not averaged together."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    with open(a, "w", newline="") as fa, open(b, "w", newline="") as fb:
        wa, wb = csv.DictWriter(fa, fieldnames=COLUMNS), csv.DictWriter(fb, fieldnames=COLUMNS)
        wa.writeheader(), wb.writeheader()
        for layer in range(4):
            wa.writerow(MetricRow("t::p", "layer_cosine", 0.99, context={"layer": layer}).as_csv())
            wb.writerow(MetricRow("t::p", "layer_cosine", 0.99 if layer != 2 else 0.90,
                                  context={"layer": layer}).as_csv())  # fmt: skip
    rc, out = run(str(a), str(b), "-t", "cosine:-0.01")
    assert rc == 1
    regressed = [ln for ln in out.splitlines() if "REGRESSED" in ln]
    assert len(regressed) == 1 and "layer=2" in regressed[0]


@pytest.mark.parametrize("spec", ["tpot", "tpot:5%", "tpot:+x%", ":+5%"])
def test_bad_threshold_is_rejected(spec: str) -> None:
    with pytest.raises(ThresholdError, match="expected NAME:"):
        Threshold.parse(spec)


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write_csv(tmp_path / "a.csv", BASE)
    assert run(str(base), str(tmp_path / "nope.csv"))[0] == 2
    assert run(str(base), str(base), "-t", "tpot:5")[0] == 2
    assert "expected NAME:+N%" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    base = write_csv(tmp_path / "a.csv", BASE)
    cur = write_csv(tmp_path / "b.csv", {**BASE, ("t::perf", "tpot"): 0.025})
    cmd = [sys.executable, "-m", "pytest_attnlab", "compare", str(base), str(cur), "--threshold", "tpot:+5%"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "REGRESSED" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "pytest_attnlab", "nope"], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    from pytest_attnlab.__main__ import COMMANDS

    choices = ", ".join(repr(c) for c in COMMANDS)
    assert bad.returncode == 2 and f"invalid choice: 'nope' (choose from {choices})" in bad.stderr
