"""metrics.csv never loses a row: crashes, Ctrl-C, MemoryError, and xdist merging (pytester runs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

RECORD = """
import os, signal
import pytest

def test_a(metrics):
    metrics.record("m_a", 1.0)

def test_b(metrics):
    metrics.record("m_b", 2.0)
    {body}

def test_c(metrics):
    metrics.record("m_c", 3.0)
"""


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def metrics_of(path: Path) -> list[str]:
    return sorted(r["metric"] for r in rows(path))


@pytest.mark.parametrize("body", ["os._exit(3)", "os.kill(os.getpid(), signal.SIGKILL)"], ids=["os._exit", "SIGKILL"])
def test_rows_survive_a_test_that_kills_the_process(pytester: pytest.Pytester, body: str) -> None:
    pytester.makepyfile(RECORD.format(body=body))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--attnlab-report-dir", "out")
    assert result.ret != 0  # the process died mid-run: no session finish, no summary
    assert not (pytester.path / "out" / "summary.md").exists()
    # the row test_b wrote just before dying is on disk, as is test_a's; test_c never ran
    assert metrics_of(pytester.path / "out" / "metrics.csv") == ["m_a", "m_b"]


def test_rows_survive_ctrl_c(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(RECORD.format(body="raise KeyboardInterrupt"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--attnlab-report-dir", "out")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*KeyboardInterrupt*"])
    out = pytester.path / "out"
    assert metrics_of(out / "metrics.csv") == ["m_a", "m_b"]
    # the session finish still ran: the summary JSON holds the same rows
    doc = json.loads((out / "experiments" / "default.json").read_text())
    assert sorted(r["metric"] for r in doc["rows"]) == ["m_a", "m_b"]


def test_memory_error_in_one_case_later_cases_still_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(RECORD.format(body="raise MemoryError('CUDA out of memory (simulated)')"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--attnlab-report-dir", "out")
    result.assert_outcomes(passed=2, failed=1)
    assert metrics_of(pytester.path / "out" / "metrics.csv") == ["m_a", "m_b", "m_c"]


XDIST = """
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_many(metrics, i):
    metrics.record("idx", i)
    metrics.record("square", i * i)
"""


def test_xdist_workers_merge_into_one_file_every_row_once(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    n = 12
    pytester.makepyfile(XDIST.format(n=n))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--attnlab-report-dir", "out")
    result.assert_outcomes(passed=n)
    out = pytester.path / "out"
    got = rows(out / "metrics.csv")
    keys = [(r["nodeid"], r["metric"]) for r in got]
    expected = {(f"test_xdist_workers_merge_into_one_file_every_row_once.py::test_many[{i}]", m)
                for i in range(n) for m in ("idx", "square")}  # fmt: skip
    assert len(keys) == len(set(keys)) == 2 * n
    assert set(keys) == expected
    assert len({r["run_id"] for r in got}) == 1
    assert not list((out / "workers").glob("*.csv"))  # parts removed after the merge
    # the summary the controller wrote at the end saw the merged rows, each once
    doc = json.loads((out / "experiments" / "default.json").read_text())
    assert len(doc["rows"]) == 2 * n


def test_xdist_worker_crash_keeps_its_rows(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(RECORD.format(body="os._exit(3)"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--attnlab-report-dir", "out")
    result.stdout.fnmatch_lines(["*crashed*"])
    # the crashed worker's part (with m_b) is merged; the other tests ran on the other/replacement worker
    assert metrics_of(pytester.path / "out" / "metrics.csv") == ["m_a", "m_b", "m_c"]


def test_merge_keeps_rows_already_in_dest_and_is_atomic(tmp_path: Path) -> None:
    from pytest_attnlab.metrics.csv_file import CsvWriter, merge
    from pytest_attnlab.metrics.row import MetricRow

    dest, parts = tmp_path / "metrics.csv", [tmp_path / "p0.csv", tmp_path / "p1.csv"]
    with_rows = {dest: ["controller"], parts[0]: ["w0a", "w0b"], parts[1]: ["w1"]}
    for path, names in with_rows.items():
        writer = CsvWriter(path)
        for name in names:
            writer.write(MetricRow("t::x", name, 1.0))
        writer.close()
    assert merge(parts, dest) == 4
    assert [r["metric"] for r in rows(dest)] == ["controller", "w0a", "w0b", "w1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "p0.csv", "p1.csv"]  # no temp left
