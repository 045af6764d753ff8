"""pytest-html integration: report.html in the report dir by default, tables as per-test extras."""

from __future__ import annotations

import html

import pytest

from pytest_attnlab.metrics.recorder import MetricRecorder, Table
from pytest_attnlab.reports.layout import ReportLayout


def default_report_path(config: pytest.Config, layout: ReportLayout) -> None:
    """Point pytest-html at the report dir's report.html (self-contained) unless the user chose --html."""
    if not config.pluginmanager.hasplugin("html") or getattr(config.option, "htmlpath", None):
        return
    if hasattr(config, "workerinput"):
        return
    config.option.htmlpath = str(layout.report_html)
    config.option.self_contained_html = True


def enable_late(session: pytest.Session, layout: ReportLayout, earlier: list[pytest.TestReport]) -> None:
    """Start pytest-html's report after pytest_configure (the run turned out to use attnlab).

    pytest-html builds its report in its own pytest_configure when --html is set; here that runs late,
    then its sessionstart, and the reports it missed are replayed into it.
    """
    config = session.config
    if not config.pluginmanager.hasplugin("html") or getattr(config.option, "htmlpath", None):
        return
    if hasattr(config, "workerinput"):
        return
    from pytest_html import plugin as html_plugin

    before = set(config.pluginmanager.get_plugins())
    default_report_path(config, layout)
    html_plugin.pytest_configure(config)
    for report_plugin in set(config.pluginmanager.get_plugins()) - before:
        report_plugin.pytest_sessionstart(session)
        for report in earlier:
            report_plugin.pytest_runtest_logreport(report)


def table_html(title: str, columns: list[str], trs: list[str], caption: str = "") -> str:
    """A titled monospace table around rendered <tr> lines (the per-test tables and the run summary)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    return (
        f'<div class="attnlab-table"><h4>{html.escape(title)}</h4>{caption}'
        f'<table border="1" cellpadding="3" style="border-collapse:collapse;font-family:monospace">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(trs)}</tbody></table></div>"
    )


def render_table(table: Table) -> str:
    body = []
    for i, row in enumerate(table.rows):
        style = ' style="background:#fdd"' if i == table.highlight_row else ""
        body.append(f"<tr{style}>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
    return table_html(table.title, table.columns, body)


def render_metrics(recorder: MetricRecorder) -> str:
    rows = [
        [r.metric, r.value if not isinstance(r.value, float) else f"{r.value:.6g}", r.unit, r.threshold or ""]
        for r in recorder.rows
    ]
    return render_table(Table("metrics", ["metric", "value", "unit", "threshold"], rows))


def add_extras(report: pytest.TestReport, recorder: MetricRecorder) -> None:
    try:
        from pytest_html import extras
    except ImportError:  # pytest-html is a dependency, but stay usable with -p no:html setups
        return
    items = list(getattr(report, "extras", []))
    if recorder.rows:
        items.append(extras.html(render_metrics(recorder)))
    items.extend(extras.html(render_table(t)) for t in recorder.tables)
    report.extras = items
