"""report.html additions: the run summary table and plots at the top, plot extras per test."""

from __future__ import annotations

import html
from typing import Any

import pytest

from pytest_attnlab.metrics.row import MetricRow
from pytest_attnlab.reports import monitor, plots, selftest
from pytest_attnlab.reports.html import table_html
from pytest_attnlab.reports.perf_table import SPREAD_NOTE, perf_grid, perf_lines
from pytest_attnlab.reports.rows import summarize, summary_grid

_VERDICT_COLOUR = {
    "pass": "#dfd", "fail": "#fdd", "killed": "#dfd", "survived": "#fdd", "not-run": "#ffd", "below-resolution": "#ffd",
}  # fmt: skip


def _img(b64: str, title: str) -> str:
    return (
        f'<figure class="attnlab-plot" style="display:inline-block;margin:4px">'
        f'<img alt="{html.escape(title)}" src="data:image/png;base64,{b64}"/>'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
    )


def failures_block(failures: dict[str, str]) -> str:
    """The failed and errored tests with their first error line: the first thing a reader needs."""
    if not failures:
        return ""
    items = "".join(f"<li><code>{html.escape(node)}</code>: {html.escape(why)}</li>" for node, why in failures.items())
    return (
        '<div id="attnlab-failures" style="background:#fdd;color:#600;padding:6px">'
        f"<h3>Failed and errored tests ({len(failures)})</h3><ul>{items}</ul></div>"
    )


def verdict_table(title: str, header: list[str], body: list[list[str]], verdicts: list[str], note: str = "") -> str:
    """A results table whose last cell is coloured by its line's verdict (red fail, green pass)."""
    trs = []
    for cells, verdict in zip(body, verdicts, strict=True):
        tds = [f"<td>{html.escape(c)}</td>" for c in cells[:-1]]
        colour = _VERDICT_COLOUR.get(verdict)
        style = f' style="background:{colour}"' if colour else ""
        trs.append(f'<tr class="attnlab-{verdict}">{"".join(tds)}<td{style}>{html.escape(cells[-1])}</td></tr>')
    return table_html(title, header, trs, f"<p>{html.escape(note)}</p>" if note else "")


def selftest_block(part: selftest.Partition) -> str:
    """The gate's self-test, apart from the user's results: "K of N planted bugs killed" and each bug."""
    if not part.lines and not part.aggregates:
        return ""
    title = f"gate self-test: {part.killed} of {len(part.lines)} planted bugs killed"
    header, body = selftest.selftest_grid(part)
    verdicts = [ln.verdict.replace(" ", "-") for ln in part.lines]
    table = verdict_table(title, header, body, verdicts, selftest.NOTE) if part.lines else f"<h4>{title}</h4>"
    extra = "".join(f"<li>{html.escape(t)}</li>" for t in selftest.aggregate_text(part))
    return f'<div id="attnlab-selftest">{table}{f"<ul>{extra}</ul>" if extra else ""}</div>'


def render(
    rows: list[MetricRow],
    outcomes: dict[str, str],
    failures: dict[str, str] | None = None,
    contexts: dict[str, dict[str, str]] | None = None,
) -> str:
    """The block above pytest-html's results: failures, the model x quant x attention table, the perf
    table (per decode path and cell), the run plots and, apart, the gate's self-test (planted bugs)."""
    part = selftest.partition(rows, outcomes, contexts)  # planted bugs never join the user's lines or plots
    lines = summarize(part.rows, part.outcomes, part.contexts)
    top = failures_block(failures or {})
    if not lines:
        none = f"<p>{html.escape(part.no_lines())}</p>"
        return f'<div id="attnlab-summary"><h2>attnlab summary</h2>{top}{none}{selftest_block(part)}</div>'
    header, body = summary_grid(lines)
    tables = verdict_table("model x quant x attention", header, body, [ln.verdict for ln in lines])
    perf = perf_lines(part.rows, part.outcomes)
    if perf:
        header, body = perf_grid(perf)
        title = "perf per decode path and cell"
        tables += verdict_table(title, header, body, [ln.verdict for ln in perf], SPREAD_NOTE)
    run_plots = plots.RUN_PLOTS.items() if plots.available() else []
    figures = [_img(b64, title) for title, fn in run_plots if (b64 := fn(part.rows))]
    return (
        f'<div id="attnlab-summary"><h2>attnlab summary</h2>{top}{tables}'
        f'<div class="attnlab-run-plots">{"".join(figures)}</div>{selftest_block(part)}</div>'
    )


def add_plot_extras(
    report: pytest.TestReport, nodeid: str, rows: list[MetricRow], core: Any, skipped: bool = False
) -> None:
    """Per-test PNG extras: plots from this test's `rows`, and its monitor timelines (REPORT_DIR/monitor/).

    A skipped test gets none: what its monitor sampled before the skip is not a measurement."""
    if skipped:
        return
    try:
        from pytest_html import extras
    except ImportError:
        return
    if not plots.available():
        return
    items = list(getattr(report, "extras", []))
    for title, fn in plots.PER_TEST_PLOTS.items():
        b64 = fn(rows) if rows else None
        if b64:
            items.append(extras.png(b64, name=title))
    for name, columns in monitor.load_timelines(core.layout, nodeid):
        b64 = plots.monitor_timeline(columns, f"monitor timeline ({name})")
        if b64:
            items.append(extras.png(b64, name=f"monitor: {name}"))
    report.extras = items
