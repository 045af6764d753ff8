"""The live status line of `pytest_attnlab.progress` steps, and the record of their durations.

`StatusLine` is registered as a plugin in `pytest_configure`. From session start to session end it
attaches a handler to the progress logger (level DEBUG, propagation off: the rate-limited updates
of a 20-minute quantization would otherwise fill each test's captured log), then detaches it and
restores the logger. What shows where:

- a terminal (TTY): one line rewritten in place, `attnlab: quantize awq layer 3/30, 12.3 s`, kept on
  screen with ` (done)` or ` (failed)` when the step ends;
- not a TTY (CI logs): one plain line when a step starts and one when it ends;
- `-q` (verbosity < 0) or no terminal reporter: nothing;
- xdist workers: nothing (their output never reaches the terminal, and xdist has no live channel
  to the controller); each worker hands its steps' durations to the controller in `workeroutput`
  at its end, so summary.md still lists them (lost only if the worker crashes).

Every finished step is appended, as a `StepTime`, to the list the session passes in (summary.md's
"Long steps" table).
"""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import nullcontext
from typing import Any

import pytest

from pytest_attnlab.progress import LOGGER_NAME, StepTime, describe

WORKEROUTPUT_KEY = "attnlab_steps"
#: the terminal reporter's `currentfspath` while our line is the one open on screen: anything pytest
#: writes next then starts a new line first, as it does after its own xdist status lines (-2)
_OPEN = "attnlab-status-line"
_SUFFIX = {"start": " ...", "update": "", "end": " (done)"}


class _Handler(logging.Handler):
    def __init__(self, owner: StatusLine) -> None:
        super().__init__(logging.DEBUG)
        self.owner = owner

    def emit(self, record: logging.LogRecord) -> None:
        self.owner.on_record(record)

    def handleError(self, record: logging.LogRecord) -> None:
        pass  # a status line must never fail a run


class StatusLine:
    """Renders progress records on the terminal reporter and keeps finished steps in `steps`."""

    def __init__(self, config: pytest.Config, steps: list[StepTime]) -> None:
        self.config = config
        self.steps = steps
        self.worker = hasattr(config, "workerinput")
        self._handler: _Handler | None = None
        self._saved: tuple[int, bool] = (logging.NOTSET, True)
        self._terminal: Any = None  # the terminal reporter, when lines are shown
        self._shown: str | None = None  # the step whose line is open on a TTY

    # -- hooks -----------------------------------------------------------------------------------
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.install()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.uninstall()
        if self.worker:  # xdist's worker sends workeroutput after every sessionfinish implementation
            self.config.workeroutput[WORKEROUTPUT_KEY] = [[s.name, s.seconds, s.nodeid] for s in self.steps]

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.uninstall()  # a run interrupted before sessionfinish

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: take over the durations a worker recorded."""
        rows = (getattr(node, "workeroutput", None) or {}).get(WORKEROUTPUT_KEY, [])
        self.steps.extend(StepTime(str(name), float(seconds), nodeid) for name, seconds, nodeid in rows)

    # -- the handler -----------------------------------------------------------------------------
    def install(self) -> None:
        if self._handler is not None:
            return
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        quiet = self.config.get_verbosity() < 0
        self._terminal = None if self.worker or quiet else reporter
        logger = logging.getLogger(LOGGER_NAME)
        self._saved = (logger.level, logger.propagate)
        self._handler = _Handler(self)
        logger.addHandler(self._handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False

    def uninstall(self) -> None:
        if self._handler is None:
            return
        logger = logging.getLogger(LOGGER_NAME)
        logger.removeHandler(self._handler)
        logger.setLevel(self._saved[0])
        logger.propagate = self._saved[1]
        self._handler = None

    def on_record(self, record: logging.LogRecord) -> None:
        phase = getattr(record, "phase", None)
        if phase not in _SUFFIX:
            return
        current = os.environ.get("PYTEST_CURRENT_TEST")  # "path::name (call)"
        nodeid = current.rsplit(" ", 1)[0] if current else None
        if phase == "end":
            self.steps.append(StepTime(record.step, record.elapsed, nodeid))
        if self._terminal is None:
            return
        suffix = " (failed)" if getattr(record, "failed", False) else _SUFFIX[phase]
        line = "attnlab: " + describe(record.step, record.k, record.n, record.elapsed, record.unit) + suffix
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
            self._show(line, record.step, phase, nodeid)

    def _show(self, line: str, step: str, phase: str, nodeid: str | None) -> None:
        tr = self._terminal
        if not tr.isatty():
            if phase == "start":
                tr.write_line(line)
            elif phase == "end":
                tr.ensure_newline()
                tr.write(line)
                self._close(nodeid)
            return
        if phase == "start" or tr.currentfspath != _OPEN or self._shown != step:
            tr.ensure_newline()  # leave pytest's current line (or another step's) as it is
        tr.rewrite(line[: shutil.get_terminal_size().columns - 1], erase=True)
        if phase == "end":
            self._close(nodeid)
        else:
            tr.flush()
            tr.currentfspath, self._shown = _OPEN, step

    def _close(self, nodeid: str | None) -> None:
        """End a step's last line the way pytest's next output expects."""
        tr = self._terminal
        self._shown = None
        if nodeid and tr.showfspath and not tr.showlongtestinfo:
            tr.currentfspath = None
            tr.write_fspath_result(nodeid, "")  # "path.py " again on a new line, as at test start: the dot follows
        elif nodeid:
            tr.currentfspath = _OPEN  # -v: pytest starts the test's result line on a new line itself
        else:
            tr.write("\n")
            tr.currentfspath = None
        tr.flush()
