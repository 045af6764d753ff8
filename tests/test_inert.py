"""The plugin stays out of runs that do not use it: no files, no torch import at startup.

A run uses attnlab when it gives an --attnlab-* option or ini key, or a test needs one of its
fixtures (directly or through another fixture); only then are reports written.
"""

from __future__ import annotations

import pytest

PLAIN = """
import sys

def test_plain():
    assert 1 + 1 == 2
    assert "torch" not in sys.modules, "the plugin imported torch at startup"
"""

USES_FIXTURE = """
import pytest

@pytest.fixture
def mine(metrics):
    return metrics

def test_records(mine):
    mine.record("answer", 42.0)
"""


def _written(pytester: pytest.Pytester) -> list[str]:
    """Files the run left, less the test files and runpytest_subprocess's own stdout/stderr captures."""
    own = {"stdout", "stderr"}
    return sorted(
        str(p.relative_to(pytester.path))
        for p in pytester.path.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".ini") and p.name not in own
    )


def test_plain_run_writes_nothing_and_imports_no_torch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain=PLAIN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert _written(pytester) == []
    result.stdout.no_fnmatch_line("*html report*")


def test_plain_run_under_xdist_writes_nothing(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_plain=PLAIN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=1)
    assert _written(pytester) == []


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_test_using_a_fixture_turns_reports_on(pytester: pytest.Pytester, workers: list[str]) -> None:
    """The fixture is found at collection (in xdist's workers), and report.html still lists every test."""
    if workers:
        pytest.importorskip("xdist")
    pytester.makepyfile(test_plain=PLAIN.replace('    assert "torch"', "    # "), test_uses=USES_FIXTURE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *workers)
    result.assert_outcomes(passed=2)
    written = _written(pytester)
    assert "reports/metrics.csv" in written and "reports/report.html" in written, written
    assert "answer" in (pytester.path / "reports" / "metrics.csv").read_text()
    html = (pytester.path / "reports" / "report.html").read_text()
    assert "test_plain.py::test_plain" in html and "test_uses.py::test_records" in html


def test_an_attnlab_option_turns_reports_on(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain=PLAIN.replace('    assert "torch"', "    # "))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--attnlab-report-dir", "out")
    result.assert_outcomes(passed=1)
    assert {"out/metrics.csv", "out/report.html"} <= set(_written(pytester))


def test_an_attnlab_ini_key_turns_reports_on(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nattnlab_report_dir = fromini\n")
    pytester.makepyfile(test_plain=PLAIN.replace('    assert "torch"', "    # "))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "fromini/report.html" in _written(pytester)
