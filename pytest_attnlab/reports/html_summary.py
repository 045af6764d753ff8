"""report.html additions: the run summary table and plots at the top, plot extras per test."""

from __future__ import annotations

import html
from typing import Any

import pytest

from pytest_attnlab.metrics.recorder import Table
from pytest_attnlab.reports import monitor, plots
from pytest_attnlab.reports.html import render_table
from pytest_attnlab.reports.rows import Row, summarize, summary_grid

_VERDICT_COLOUR = {"pass": "#dfd", "fail": "#fdd"}


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
        '<div id="attnlab-failures" style="background:#fdd;padding:6px">'
        f"<h3>Failed and errored tests ({len(failures)})</h3><ul>{items}</ul></div>"
    )


def render(rows: list[Row], outcomes: dict[str, str], failures: dict[str, str] | None = None) -> str:
    """The block above pytest-html's results: failures, summary per model x quant x attention, run plots."""
    lines = summarize(rows, outcomes)
    top = failures_block(failures or {})
    if not lines:
        return f'<div id="attnlab-summary"><h2>attnlab summary</h2>{top}<p>No metric rows were recorded.</p></div>'
    header, body = summary_grid(lines)
    table = render_table(Table("model x quant x attention", header, body))
    for ln in lines:  # colour the result cell
        cell = f"<td>{html.escape(body[lines.index(ln)][-1])}</td>"
        colour = _VERDICT_COLOUR.get(ln.verdict)
        if colour:
            table = table.replace(
                cell, f'<td style="background:{colour}">{html.escape(body[lines.index(ln)][-1])}</td>', 1
            )
    run_plots = plots.RUN_PLOTS.items() if plots.available() else []
    figures = [_img(b64, title) for title, fn in run_plots if (b64 := fn(rows))]
    return (
        f'<div id="attnlab-summary"><h2>attnlab summary</h2>{top}{table}'
        f'<div class="attnlab-run-plots">{"".join(figures)}</div></div>'
    )


def add_plot_extras(report: pytest.TestReport, item: pytest.Item, core: Any) -> None:
    """Per-test PNG extras: plots from this test's rows, and its monitor timelines (REPORT_DIR/monitor/)."""
    try:
        from pytest_html import extras
    except ImportError:
        return
    from pytest_attnlab.plugin import RECORDER_KEY

    if not plots.available():
        return
    recorder = item.stash.get(RECORDER_KEY, None)
    rows = [Row.from_csv(r.as_csv()) for r in recorder.rows] if recorder is not None else []
    items = list(getattr(report, "extras", []))
    for title, fn in plots.PER_TEST_PLOTS.items():
        b64 = fn(rows) if rows else None
        if b64:
            items.append(extras.png(b64, name=title))
    for name, columns in monitor.load_timelines(core.report_dir, item.nodeid):
        b64 = plots.monitor_timeline(columns, f"monitor timeline ({name})")
        if b64:
            items.append(extras.png(b64, name=f"monitor: {name}"))
    report.extras = items
