"""A tolerance per test: `@pytest.mark.attnlab_gate(tpot="+10%")` and an experiment's `gate:` land in
metrics.csv's threshold column, and compare and history gate that test's metric by it."""

from __future__ import annotations

import csv
import io

import pytest

from pytest_attnlab.compare import main as compare_main
from pytest_attnlab.experiments import ExperimentConfigError, from_mapping
from pytest_attnlab.history.runs import load_all
from pytest_attnlab.history.series import build, thresholds
from pytest_attnlab.metrics import tolerance
from pytest_attnlab.metrics.row import MetricRow

SUITE = """
import pytest

pytestmark = pytest.mark.attnlab_gate(tpot="+20%", ttft="+30%")

@pytest.mark.attnlab_gate(tpot="+10%")
def test_tolerant(metrics):
    metrics.record("tpot", 0.010 * FACTOR, "s", samples=[0.010 * FACTOR * (1 + i / 1000) for i in range(5)])
    metrics.record("ttft", 0.100, "s")
    metrics.record("cosine", 0.99, threshold=0.95)

def test_default(metrics):
    metrics.record("tpot", 0.010 * FACTOR, "s", samples=[0.010 * FACTOR * (1 + i / 1000) for i in range(5)])
"""


def _run(pytester: pytest.Pytester, name: str, factor: float, *args: str):
    pytester.makepyfile(test_tol=f"FACTOR = {factor}\n" + SUITE)
    report = pytester.path / name
    result = pytester.runpytest("--attnlab-report-dir", str(report), "-p", "no:html", *args)
    result.assert_outcomes(passed=2)
    return report


def _thresholds(report) -> dict[tuple[str, str], str]:
    rows = csv.DictReader(open(report / "metrics.csv"))
    return {(r["nodeid"].split("::")[1], r["metric"]): r["threshold"] for r in rows}


def test_marker_reaches_the_threshold_column_and_gates_compare(pytester):
    base = _run(pytester, "base", 1.0)
    rows = _thresholds(base)
    assert rows == {
        ("test_tolerant", "tpot"): "+10%",  # the test's own marker beats the module's
        ("test_tolerant", "ttft"): "+30%",  # the module's marker
        ("test_tolerant", "cosine"): "0.95",  # a numeric threshold stays what it was
        ("test_default", "tpot"): "+20%",
    }
    # 15 % slower everywhere: test_tolerant's +10 % and the module's +20 % decide, not compare's default +5 %
    cur = _run(pytester, "cur", 1.15)
    out = io.StringIO()
    assert compare_main([str(base), str(cur), "--no-noise"], out=out) == 1
    text = out.getvalue()
    regressed = [ln for ln in text.splitlines() if "REGRESSED" in ln]
    assert len(regressed) == 1 and "test_tolerant" in regressed[0], text
    # 8 % slower: within every tolerance, though past compare's default +5 %
    ok = _run(pytester, "ok", 1.08)
    assert compare_main([str(base), str(ok), "--no-noise"], out=io.StringIO()) == 0
    # and history takes the same tolerance: test_default's series is gated at +20 %
    runs = load_all([base, ok])
    gates = {(s.cell.split("::")[1], s.metric): str(s.gate(thresholds())) for s in build(runs, thresholds())}
    assert gates[("test_default", "tpot")] == "tpot:+20%" and gates[("test_tolerant", "tpot")] == "tpot:+10%"


def test_experiment_gate_applies_to_every_test_and_a_marker_beats_it(pytester):
    pytester.makefile(".yaml", exp="experiment_name: tol\ngate:\n  tpot: '+7%'\n  ttft: '+50%'\n")
    report = _run(pytester, "r", 1.0, "--attnlab-config", "exp.yaml", "test_tol.py")
    rows = _thresholds(report)
    assert rows[("test_default", "tpot")] == "+20%"  # the module marker beats the experiment
    assert rows[("test_tolerant", "ttft")] == "+30%"


def test_bad_tolerances_name_the_format(pytester):
    with pytest.raises(ExperimentConfigError, match="bad tolerance tpot='10'.*expected METRIC='\\+N%'"):
        from_mapping({"experiment_name": "x", "gate": {"tpot": "10"}})
    with pytest.raises(ValueError, match="an absolute growth"):
        tolerance.parse({"cosine": "-0.01"}, "here")  # an absolute drop would read as a numeric threshold
    pytester.makepyfile(
        test_bad="import pytest\n@pytest.mark.attnlab_gate(tpot='fast')\ndef test_x(metrics):\n    pass\n"
    )
    result = pytester.runpytest("-p", "no:html", "--attnlab-report-dir", "r")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_x: @pytest.mark.attnlab_gate: bad tolerance tpot='fast'*"])


def test_a_row_reads_back_its_tolerance_or_its_threshold():
    def back(row: MetricRow) -> MetricRow:
        return MetricRow.from_csv(row.as_csv())

    tol = back(MetricRow("t", "tpot", 0.01, "s", tolerance="+10%"))
    assert (tol.threshold, tol.tolerance) == (None, "+10%")
    num = back(MetricRow("t", "cosine", 0.9, threshold=-0.5))
    assert (num.threshold, num.tolerance) == (-0.5, "")
    assert tolerance.pick({"tok_s": "-5%"}, "decode_tok_s") == "-5%" and tolerance.pick({}, "tpot") == ""
