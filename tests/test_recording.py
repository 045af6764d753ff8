"""The metrics fixture, metrics.csv durability and the HTML extras."""

from __future__ import annotations

import csv

import pytest

from pytest_attnlab.metrics.row import COLUMNS


def _rows(pytester: pytest.Pytester) -> list[dict[str, str]]:
    with open(pytester.path / "out" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_rows_carry_value_unit_threshold_and_context(pytester: pytest.Pytester, run_attnlab) -> None:
    pytester.makepyfile(
        """
        def test_a(metrics):
            metrics.update_context(quant="rtn-int8")
            metrics.record("cosine", 0.987, threshold=0.95)
            metrics.record("tpot", 12.5, "ms", attention="sliding_window_256", prompt_len=512)
        """
    )
    run_attnlab("--attnlab-device", "cpu").assert_outcomes(passed=1)
    rows = _rows(pytester)
    assert list(rows[0]) == COLUMNS
    cos, tpot = rows
    assert (cos["metric"], cos["value"], cos["threshold"], cos["quant"]) == ("cosine", "0.987", "0.95", "rtn-int8")
    assert (tpot["unit"], tpot["attention"], tpot["extra"]) == ("ms", "sliding_window_256", '{"prompt_len": 512}')
    assert cos["model"] == "smollm2-135m-instruct" and cos["device"] == "cpu" and cos["dtype"] == "float32"
    assert cos["nodeid"].endswith("::test_a") and cos["run_id"] == tpot["run_id"] != ""


def test_rows_written_before_a_crash_survive(pytester: pytest.Pytester, run_attnlab) -> None:
    """The process dies mid-test (SIGKILL, Ctrl-C, xdist: tests/test_reports_csv_faults.py)."""
    pytester.makepyfile(
        """
        import os

        def test_1(metrics):
            metrics.record("first", 1.0)

        def test_2(metrics):
            metrics.record("second", 2.0)
            os._exit(3)

        def test_3(metrics):
            metrics.record("never", 3.0)
        """
    )
    run_attnlab("--attnlab-device", "cpu")
    assert [r["metric"] for r in _rows(pytester)] == ["first", "second"]


def test_failing_test_keeps_its_rows_and_later_tests_run(pytester: pytest.Pytester, run_attnlab) -> None:
    pytester.makepyfile(
        """
        def test_fails(metrics):
            metrics.record("cosine", 0.5, threshold=0.95)
            assert False

        def test_next(metrics):
            metrics.record("after", 1)
        """
    )
    run_attnlab("--attnlab-device", "cpu").assert_outcomes(passed=1, failed=1)
    assert [r["metric"] for r in _rows(pytester)] == ["cosine", "after"]


def test_each_run_starts_a_fresh_csv(pytester: pytest.Pytester, run_attnlab) -> None:
    pytester.makepyfile("def test_a(metrics):\n    metrics.record('x', 1)\n")
    run_attnlab("--attnlab-device", "cpu")
    run_attnlab("--attnlab-device", "cpu")
    assert len(_rows(pytester)) == 1


def test_report_html_has_the_tables(pytester: pytest.Pytester, run_attnlab) -> None:
    pytester.makepyfile(
        """
        def test_a(metrics):
            metrics.record("cosine", 0.99)
            metrics.table("per-layer diff", [{"layer": 0, "cosine": "0.999"}, {"layer": 1, "cosine": "0.42"}])
        """
    )
    run_attnlab("--attnlab-device", "cpu").assert_outcomes(passed=1)
    html = (pytester.path / "out" / "report.html").read_text()
    assert "per-layer diff" in html and "0.42" in html and "cosine" in html
