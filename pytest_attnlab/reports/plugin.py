"""pytest hooks, options and fixtures of the report writers (loaded by pytest_attnlab.plugin).

Summary table and plots in report.html, summary.md + experiment JSON, Prometheus output and per-GPU xdist
workers (`--attnlab-config` is the experiments plugin's).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_attnlab import options as opts
from pytest_attnlab import xdist_gpu
from pytest_attnlab.experiments import EXPERIMENT_KEY
from pytest_attnlab.metrics.csv_file import load_rows
from pytest_attnlab.registry import BASELINE_ATTENTION, BASELINE_QUANT, Registry
from pytest_attnlab.reports import environment, html_summary, summary
from pytest_attnlab.reports.context import context_of_test
from pytest_attnlab.reports.prometheus import LiveExporter, write_textfile
from pytest_attnlab.session import RECORDER_KEY, SESSION_KEY


def parse_port(value: str) -> int | None:
    if not value:
        return None
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise pytest.UsageError(
            f"--attnlab-prometheus-port: expected a port number 0-65535 (0: any free), got {value!r}"
        )
    return port


OPTIONS = [
    opts.OptionSpec(
        "prometheus-textfile",
        "",
        lambda v: Path(v) if v else None,
        "PATH",
        "write the run's metrics at session end in Prometheus text format (node_exporter textfile collector).",
    ),
    opts.OptionSpec(
        "prometheus-port",
        "",
        parse_port,
        "PORT",
        "serve live gauges on 127.0.0.1:PORT during the run (xdist worker gwN: PORT+1+N); needs "
        "`pip install 'pytest-attnlab[prometheus]'`.",
    ),
    opts.OptionSpec(
        "xdist-gpus",
        "auto",
        opts.parse_choice("--attnlab-xdist-gpus", ("auto", "off")),
        "MODE",
        "auto: under xdist pin worker gwN to the N-th visible GPU (and -n auto = one worker per GPU); off: don't.",
    ),
]


@dataclass(eq=False)  # registered as a plugin: pluggy needs it hashable (identity)
class ReportsState:
    """Per-run state of the report writers (on config.stash; nothing in module globals)."""

    outcomes: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # nodeid -> "phase: first error line"
    #: failed or skipped nodeid -> model/quant/attention(/selftest): a failed test's line, a planted bug's test
    contexts: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)  # skipped, not xfailed: no plots for these
    exporter: Any = None
    pinned_gpu: str | None = None
    written: list[Path] = field(default_factory=list)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """nodeid -> passed / failed / skipped; a failure in any phase wins (xdist: on the controller)."""
        if report.failed:
            self.outcomes[report.nodeid] = "failed"
            self.failures.setdefault(report.nodeid, first_error(report))
            context = getattr(report, "attnlab_context", None)  # set on the worker; survives xdist
            if isinstance(context, dict):
                self.contexts.setdefault(report.nodeid, context)
        elif report.when == "call" or (report.when == "setup" and report.skipped):
            xfailed = report.skipped and hasattr(report, "wasxfail")  # a planted bug below resolution, say
            self.outcomes.setdefault(report.nodeid, "xfailed" if xfailed else report.outcome)
            context = getattr(report, "attnlab_context", None)  # a skipped planted bug still counts
            if report.skipped and isinstance(context, dict):
                self.contexts.setdefault(report.nodeid, context)
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skipped.add(report.nodeid)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A module that fails to import is what failed first: it leads the report too."""
        if report.failed:
            self.failures.setdefault(report.nodeid or "(collection)", first_error(report))

    def pytest_attnlab_metric_recorded(self, row: Any) -> None:
        if self.exporter is not None:
            self.exporter.observe(row)


STATE_KEY = pytest.StashKey[ReportsState]()


def first_error(report: pytest.TestReport | pytest.CollectReport) -> str:
    """'failed: AssertionError: ...' or 'error in setup: ...': the phase and the first line of the error."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    raised = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("E ")]  # a traceback as text: its error
    line = raised[-1] if raised else next((ln.strip() for ln in text.splitlines() if ln.strip()), "(no message)")
    when = getattr(report, "when", "collect")
    phase = "failed" if when == "call" else f"error in {'collection' if when == 'collect' else when}"
    return f"{phase}: {line[:300]}"


pytest_addoption, pytest_attnlab_options = opts.area_hooks(OPTIONS)


def _core_session(config: pytest.Config) -> Any:
    return config.stash[SESSION_KEY]


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    state = ReportsState()
    config.stash[STATE_KEY] = state
    config.pluginmanager.register(state, "attnlab_reports_state")
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and opts.selection(config)["xdist-gpus"] == "auto":
        state.pinned_gpu = xdist_gpu.pin(workerinput)  # before anything initialises CUDA
    port = opts.selection(config)["prometheus-port"]
    if port is not None:
        if port and workerinput is not None:
            port += 1 + xdist_gpu.worker_index(workerinput["workerid"])
        try:
            state.exporter = LiveExporter(port, workerinput["workerid"] if workerinput else None)
        except ImportError as exc:
            raise pytest.UsageError(str(exc)) from None


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is not None:
        if state.exporter is not None:
            state.exporter.close()
            state.exporter = None
        config.pluginmanager.unregister(state)


# -- xdist: one worker per GPU -------------------------------------------------------------------


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto`: one worker per visible GPU unless the run is on CPU; None leaves xdist's CPU count."""
    if opts.selection(config)["xdist-gpus"] == "off" or opts.selection(config)["device"] == "cpu":
        return None
    return len(xdist_gpu.visible_gpus()) or None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    config = node.config
    if opts.selection(config)["xdist-gpus"] == "auto" and opts.selection(config)["device"] != "cpu":
        node.workerinput[xdist_gpu.WORKERINPUT_KEY] = xdist_gpu.visible_gpus()


# -- outcomes, per-test plots, the HTML summary ---------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    core = _core_session(item.config)
    if not core.active:
        return report
    if report.failed or report.skipped:
        report.attnlab_context = _failed_context(item, core)
    if report.when == "teardown":
        skipped = item.nodeid in item.config.stash[STATE_KEY].skipped
        rows = list(getattr(item.stash.get(RECORDER_KEY, None), "rows", []))  # this test's rows, as recorded
        html_summary.add_plot_extras(report, item.nodeid, rows, core, skipped=skipped)
    return report


def _failed_context(item: pytest.Item, core: Any) -> dict[str, str]:
    """model/quant/attention of a failed test, so its summary line fails even when it recorded no row
    (and of a skipped one, so a planted bug that did not run is still listed by the self-test)."""
    recorder = item.stash.get(RECORDER_KEY, None)
    callspec = getattr(item, "callspec", None)
    defaults = {"model": core.settings.model.label, "quant": BASELINE_QUANT, "attention": BASELINE_ATTENTION}
    return context_of_test(callspec.params if callspec else {}, defaults, getattr(recorder, "context", None))


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix: list[str], summary: list[str], postfix: list[str], session: Any) -> None:
    config = session.config
    if not _core_session(config).active:
        return
    state = config.stash[STATE_KEY]
    prefix.append(html_summary.render(_rows(config), state.outcomes, state.failures, state.contexts))


def _rows(config: pytest.Config) -> list[Any]:
    core = _core_session(config)
    return load_rows(core.layout.run_csvs(core.run_id))


def _write_summary(config: pytest.Config, rows: list[Any]) -> list[Path]:
    core, state = _core_session(config), config.stash[STATE_KEY]
    env = environment.collect(config.rootpath, list(config.invocation_params.args))
    experiment = config.stash.get(EXPERIMENT_KEY, None)
    kw = {"steps": core.steps, "failures": state.failures, "contexts": state.contexts}
    return summary.write(core.layout, rows, state.outcomes, env, experiment, core.run_id, **kw)


def _write_prometheus(config: pytest.Config, rows: list[Any]) -> list[Path]:
    textfile = opts.selection(config)["prometheus-textfile"]
    if textfile is None:
        return []
    return [write_textfile(Path(config.invocation_params.dir, textfile), rows, _core_session(config).run_id)]


#: name -> fn(config, rows) -> paths written: run in order at the end of a run, on the xdist controller, with
#: every metric row (pytest_attnlab_register adds more under "report_writers")
REPORT_WRITERS: Registry[Callable[[pytest.Config, list[Any]], list[Path]]] = Registry("report writer")
REPORT_WRITERS.register("summary", _write_summary)
REPORT_WRITERS.register("prometheus-textfile", _write_prometheus)


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, None, None]:
    result = yield  # after every sessionfinish, so metrics.csv holds the merged rows
    config = session.config
    if _is_controller(config) and _core_session(config).active:
        rows = _rows(config)
        for name in REPORT_WRITERS.names():
            config.stash[STATE_KEY].written += REPORT_WRITERS.get(name)(config, rows)
    return result


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is None:
        return
    shown = [p for p in state.written if p.suffix in (".md", ".json", ".prom", ".txt")]
    for path in shown:
        terminalreporter.write_line(f"attnlab: wrote {os.path.relpath(path, config.invocation_params.dir)}")
    if state.exporter is not None:
        terminalreporter.write_line(f"attnlab: served Prometheus gauges on 127.0.0.1:{state.exporter.port}")
