"""Progress steps: the records library code sends, the status line pytest shows, the durations in summary.md."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_attnlab import progress
from pytest_attnlab.status_line import StatusLine


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records(monkeypatch: pytest.MonkeyPatch) -> list[logging.LogRecord]:
    """The records progress.step sends, on a private logger of the same name (the running pytest's own
    status line, attached to the real one, sees none of them)."""
    logger = logging.Logger(progress.LOGGER_NAME, logging.DEBUG)
    handler = _Records()
    logger.addHandler(handler)
    monkeypatch.setattr(progress, "logger", logger)
    return handler.records


def _fields(r: logging.LogRecord) -> tuple[Any, ...]:
    return (r.name, r.step, r.phase, r.k, r.n, r.unit, r.failed)


def test_step_records_name_progress_and_elapsed(records: list[logging.LogRecord]) -> None:
    with progress.step("demo", total=3, unit="layer", interval=0) as p:
        for _ in range(3):
            p.advance()
    name = progress.LOGGER_NAME
    assert [_fields(r) for r in records] == [
        (name, "demo", "start", 0, 3, "layer", False),
        *((name, "demo", "update", k, 3, "layer", False) for k in (1, 2, 3)),
        (name, "demo", "end", 3, 3, "layer", False),
    ]
    elapsed = [r.elapsed for r in records]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0
    assert [r.levelno for r in records] == [logging.INFO, *[logging.DEBUG] * 3, logging.INFO]
    assert records[-1].getMessage() == f"demo layer 3/3, {elapsed[-1]:.1f} s"


def test_updates_are_rate_limited_but_keep_the_first_and_the_last(records: list[logging.LogRecord]) -> None:
    with progress.step("many", total=1000, interval=3600) as p:
        for _ in range(1000):
            p.advance()
    assert [(r.phase, r.k) for r in records] == [("start", 0), ("update", 1), ("update", 1000), ("end", 1000)]


def test_a_failing_step_says_so_and_the_error_goes_through(records: list[logging.LogRecord]) -> None:
    with pytest.raises(ZeroDivisionError), progress.step("broken") as p:
        p.update(2)
        1 / 0  # noqa: B018
    assert [(r.phase, r.k, r.n, r.failed) for r in records] == [
        ("start", 0, None, False),
        ("update", 2, None, False),
        ("end", 2, None, True),
    ]


def test_describe() -> None:
    assert progress.describe("quantize awq", 3, 30, 12.345, "layer") == "quantize awq layer 3/30, 12.3 s"
    assert progress.describe("compile", 0, None, 61.0) == "compile, 61.0 s"
    assert progress.describe("load", 7, None, 1.0, "file") == "load file 7, 1.0 s"


class _FakeTerminal:
    """The parts of pytest's TerminalReporter the status line uses, writing into `out`."""

    def __init__(self, tty: bool) -> None:
        self.tty, self.out, self.currentfspath = tty, "", "test_x.py"

    def isatty(self) -> bool:
        return self.tty

    def ensure_newline(self) -> None:
        if self.currentfspath:
            self.out += "\n"
            self.currentfspath = None

    def rewrite(self, line: str, erase: bool = False) -> None:
        self.out += "\r" + line

    def write(self, text: str, flush: bool = False) -> None:
        self.out += text

    def write_line(self, line: str) -> None:
        self.ensure_newline()
        self.out += line + "\n"

    showfspath, showlongtestinfo = True, False  # default verbosity

    def write_fspath_result(self, nodeid: str, res: str) -> None:
        path = nodeid.split("::")[0]
        if self.currentfspath != path:
            self.out += "\n" + path + " "
            self.currentfspath = path
        self.out += res

    def flush(self) -> None:
        pass


def _status_line(tty: bool, verbosity: int = 0) -> tuple[StatusLine, _FakeTerminal]:
    terminal = _FakeTerminal(tty)
    plugins = {"terminalreporter": terminal}
    config = SimpleNamespace(pluginmanager=SimpleNamespace(get_plugin=plugins.get), get_verbosity=lambda: verbosity)
    line = StatusLine(config, [])  # type: ignore[arg-type]
    line.install()
    return line, terminal


def _feed(line: StatusLine, *events: tuple[str, int, float]) -> None:
    try:
        for phase, k, elapsed in events:
            attrs = dict(step="demo", k=k, n=3, unit="layer", elapsed=elapsed, phase=phase, failed=False)
            line.on_record(logging.makeLogRecord(attrs))
    finally:
        line.uninstall()


EVENTS = (("start", 0, 0.0), ("update", 1, 0.5), ("update", 3, 1.2), ("end", 3, 1.25))


def test_tty_rewrites_one_line_and_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "test_x.py::test_demo (call)")
    line, terminal = _status_line(tty=True)
    _feed(line, *EVENTS)
    # the test file's name is written again at the end, so the test's dot follows it as usual
    assert terminal.out == (
        "\n\rattnlab: demo layer 0/3, 0.0 s ...\rattnlab: demo layer 1/3, 0.5 s"
        "\rattnlab: demo layer 3/3, 1.2 s\rattnlab: demo layer 3/3, 1.2 s (done)\ntest_x.py "
    )
    assert line.steps == [progress.StepTime("demo", 1.25, "test_x.py::test_demo")]


def test_no_tty_writes_a_line_at_start_and_end_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_CURRENT_TEST")  # a step outside any test
    line, terminal = _status_line(tty=False)
    _feed(line, *EVENTS)
    assert terminal.out == "\nattnlab: demo layer 0/3, 0.0 s ...\nattnlab: demo layer 3/3, 1.2 s (done)\n"
    assert line.steps == [progress.StepTime("demo", 1.25, None)]


def test_a_failed_step_ends_with_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    line, terminal = _status_line(tty=False)
    try:
        attrs = dict(step="demo", k=1, n=None, unit="", elapsed=2.0, phase="end", failed=True)
        line.on_record(logging.makeLogRecord(attrs))
    finally:
        line.uninstall()
    assert terminal.out == "\nattnlab: demo 1, 2.0 s (failed)\n"


def test_quiet_shows_nothing_but_keeps_the_duration() -> None:
    line, terminal = _status_line(tty=True, verbosity=-1)
    _feed(line, *EVENTS)
    assert terminal.out == "" and [s.name for s in line.steps] == ["demo"]


# -- real runs -------------------------------------------------------------------------------------

DEMO = """
import time

from pytest_attnlab import progress


def _work(name, metrics):
    with progress.step(name, total=3, unit="layer") as p:
        for _ in range(3):
            time.sleep(0.01)
            p.advance()
    metrics.record("answer", 42.0)


def test_demo(metrics):
    _work("demo", metrics)


def test_other(metrics):
    _work("other", metrics)
"""


def _long_steps(pytester: pytest.Pytester) -> list[tuple[str, str]]:
    """(step, test) rows of summary.md's "Long steps" table."""
    md = (pytester.path / "out" / "summary.md").read_text()
    return re.findall(r"^\| (\w+) \| \d+\.\d \| `([^`]+)` \|$", md, flags=re.M)


EXPECTED_STEPS = [("demo", "test_demo.py::test_demo"), ("other", "test_demo.py::test_other")]


def test_run_shows_the_step_and_summary_lists_it(pytester: pytest.Pytester, run_attnlab) -> None:
    pytester.makepyfile(test_demo=DEMO)
    result = run_attnlab()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "attnlab: demo layer 0/3, 0.0 s ...",
            "attnlab: demo layer 3/3, *.* s (done)",
            "attnlab: other layer 0/3, 0.0 s ...",
            "attnlab: other layer 3/3, *.* s (done)",
        ]
    )
    assert sorted(_long_steps(pytester)) == EXPECTED_STEPS


def test_quiet_run_shows_no_step(pytester: pytest.Pytester, run_attnlab) -> None:
    pytester.makepyfile(test_demo=DEMO)
    result = run_attnlab("-q")
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*attnlab: demo*")
    assert sorted(_long_steps(pytester)) == EXPECTED_STEPS


def test_xdist_run_passes_and_brings_the_workers_steps_home(pytester: pytest.Pytester, run_attnlab) -> None:
    """Workers show no line (they have no terminal); their durations reach summary.md through workeroutput."""
    pytest.importorskip("xdist")
    pytester.makepyfile(test_demo=DEMO)
    result = run_attnlab("-n", "2")
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
    result.stdout.no_fnmatch_line("*attnlab: demo*")
    assert sorted(_long_steps(pytester)) == EXPECTED_STEPS
