"""reports/summary.md and reports/experiments/NAME.json, written by the controller at session end."""

from __future__ import annotations

import base64
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_attnlab.metrics.row import MetricRow
from pytest_attnlab.registry import BASELINE_ATTENTION, BASELINE_QUANT
from pytest_attnlab.reports import plots, selftest
from pytest_attnlab.reports.layout import METRICS_CSV, ReportLayout
from pytest_attnlab.reports.perf_table import SPREAD_NOTE, PerfLine, perf_conclusions, perf_grid, perf_lines
from pytest_attnlab.reports.rows import (
    SUMMARY_COLUMNS,
    SummaryLine,
    failed_without_rows,
    fmt_value,
    summarize,
    summary_grid,
)

BASELINE = (BASELINE_QUANT, BASELINE_ATTENTION)  # quant, attention that other lines are compared with


def md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines)


def failures_list(failures: dict[str, str]) -> list[str]:
    """Markdown lines for the failed and errored tests, each with its first error line: what a reader needs first."""
    if not failures:
        return []
    out = [f"## Failed and errored tests ({len(failures)})", ""]
    out += [f"- `{nodeid}`: {why}" for nodeid, why in failures.items()]
    return [*out, ""]


def selftest_section(part: selftest.Partition) -> list[str]:
    """Markdown lines of the gate's self-test: "K of N planted bugs killed" and one line per planted bug."""
    if not part.lines and not part.aggregates:
        return []
    out = [f"## Gate self-test: {part.killed} of {len(part.lines)} planted bugs killed", "", selftest.NOTE, ""]
    out += [md_table(*selftest.selftest_grid(part)), ""] if part.lines else []
    return out + [f"- {text}" for text in selftest.aggregate_text(part)] + [""] * bool(part.aggregates)


def selftest_entry(line: selftest.SelftestLine) -> dict[str, Any]:
    """A planted bug for the experiment JSON."""
    figures = [
        {"metric": f.metric, "value": f.value, "threshold": f.threshold, "crossed": f.crossed} for f in line.figures
    ]
    return dict(name=line.name, verdict=line.verdict, source=line.source, bug=line.description, figures=figures)


def steps_table(steps: Sequence[Any]) -> str:
    """The "Long steps" table: each finished progress step (a StepTime), longest first."""
    body = [
        [s.name, f"{s.seconds:.1f}", f"`{s.nodeid}`" if s.nodeid else "(outside a test)"]
        for s in sorted(steps, key=lambda s: s.seconds, reverse=True)
    ]
    return md_table(["step", "seconds", "test"], body)


def conclusions(lines: list[SummaryLine], outcomes: dict[str, str], perf: list[PerfLine] | None = None) -> list[str]:
    """Plain statements derived from the tables, each with the numbers that back it."""
    out = []
    counts = Counter(outcomes.values())
    out.append(
        f"{counts.get('passed', 0)} tests passed, {counts.get('failed', 0)} failed, {counts.get('skipped', 0)} skipped."
    )
    failed = sorted(n for n, o in outcomes.items() if o == "failed")
    if failed:
        out.append("Failed: " + ", ".join(f"`{n}`" for n in failed[:10]) + (" ..." if len(failed) > 10 else ""))
    for col in SUMMARY_COLUMNS:
        have = [(ln, ln.cells[col.label]) for ln in lines if ln.cells[col.label] is not None]
        if len(have) < 2:
            continue
        ranked = sorted(have, key=lambda x: x[1][0], reverse=col.higher_is_better)
        base = next((c for ln, c in have if (ln.quant, ln.attention) == BASELINE), None)
        # name the best line, or the worst one when the baseline itself is best
        baseline_best = base is not None and ranked[0][1][0] == base[0]
        (ln, cell), word = (ranked[-1], "worst") if baseline_best else (ranked[0], "best")
        text = f"{col.label}: {word} {ln.quant}/{ln.attention} on {ln.model} = {fmt_value(cell)}"
        if base is not None and base[0] and not math.isnan(base[0]):
            delta = (cell[0] - base[0]) / abs(base[0]) * 100
            text += f" ({delta:+.1f}% vs {'/'.join(BASELINE)} = {fmt_value(base)})"
        out.append(text + ".")
    return out + perf_conclusions(perf or [], BASELINE)


def perf_entry(line: PerfLine) -> dict[str, Any]:
    """A perf line for the experiment JSON: the cell, and per column its mean and min–max."""
    model, quant, attention = line.variant
    path, batch, prompt, new = line.cell
    entry: dict[str, Any] = dict(model=model, quant=quant, attention=attention, path=path, batch=batch)
    entry.update(prompt_len=prompt, new_tokens=new, rounds=line.rounds, result=line.verdict)
    for label, cell in line.cells.items():
        entry[label] = None if cell is None else {"value": cell.value, "unit": cell.unit, "spread": cell.spread}
    return entry


def _no_nan(obj: Any) -> Any:
    """NaN / inf -> null, so the JSON is standard (json.dumps would write bare NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return obj


def write(
    layout: ReportLayout,
    rows: list[MetricRow],
    outcomes: dict[str, str],
    environment: dict[str, Any],
    experiment: Any | None,
    run_id: str,
    steps: Sequence[Any] = (),
    failures: dict[str, str] | None = None,
    contexts: dict[str, dict[str, str]] | None = None,
) -> list[Path]:
    """Write summary.md, one JSON per experiment and the run plots (PNG); returns the paths.

    `steps`: the run's finished progress steps (StepTime), listed under "Long steps" when any.
    `failures`: nodeid -> first error line of each failed or errored test; they open the summary.
    `contexts`: nodeid -> model/quant/attention of failed tests, for those that recorded no row (and of
    skipped ones: a planted bug that did not run is listed by the gate's self-test)."""
    default_name = experiment.experiment_name if experiment is not None else "default"
    contexts = contexts or {}
    part = selftest.partition(rows, outcomes, contexts)  # planted bugs never join the user's lines or plots
    lines = summarize(part.rows, part.outcomes, part.contexts)
    perf = perf_lines(part.rows, part.outcomes)
    written = []
    plot_links = []
    for title, fn in plots.RUN_PLOTS.items() if plots.available() else []:
        png = fn(part.rows)
        if png:
            path = layout.plot_png(title)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(png))
            plot_links.append(f"![{title}]({path.relative_to(layout.root).as_posix()})")
            written.append(path)
    env_rows = [
        ["command", f"`{environment['command']}`"],
        ["git sha", environment.get("git_sha") or "(not a git checkout)"],
        ["python", environment["python"]],
        ["platform", environment["platform"]],
        [
            "GPU",
            "; ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in environment["gpus"]) or "none",
        ],
        ["torch CUDA", str(environment["torch"].get("cuda") or "-")],
        *([name, ver] for name, ver in environment["packages"].items()),
    ]
    md = [
        f"# pytest-attnlab run `{run_id}`",
        "",
        f"Experiment: **{default_name}**"
        + (f" from `{experiment.source}`" if experiment and experiment.source else ""),
        "",
        *failures_list(failures or {}),
        "## Results (model x quant x attention)",
        "",
        md_table(*summary_grid(lines)) if lines else part.no_lines(),
        "",
        *(["## Perf (per decode path and cell)", "", SPREAD_NOTE, "", md_table(*perf_grid(perf)), ""] if perf else []),
        "## Conclusions",
        "",
        *(f"- {c}" for c in conclusions(lines, outcomes, perf)),
        *([f"- Gate self-test: {part.headline()}."] if part.lines else []),
        "",
        *selftest_section(part),
        *(["## Long steps", "", steps_table(steps), ""] if steps else []),
        *(["## Plots", "", *plot_links, ""] if plot_links else []),
        "## Environment",
        "",
        md_table(["what", "value"], env_rows),
        "",
        "## Reproduce",
        "",
        "```bash",
        f"git checkout {environment.get('git_sha', '').removesuffix('-dirty') or 'HEAD'}",
        environment["command"],
        f"python -m pytest_attnlab compare BASELINE/{METRICS_CSV} {layout.root.name}/{METRICS_CSV}",
        "```",
        "",
        f"Every number above comes from `{layout.root.name}/{METRICS_CSV}` ({len(rows)} rows);"
        f" per-experiment JSON under `{layout.root.name}/{layout.experiments_dir.name}/`.",
        "",
    ]
    layout.summary_md.write_text("\n".join(md), encoding="utf-8")
    written.append(layout.summary_md)

    by_experiment: dict[str, list[MetricRow]] = {}
    for row in rows:
        by_experiment.setdefault(str(row.extra.get("experiment") or default_name), []).append(row)
    orphans: dict[str, set[str]] = {}  # experiment -> failed tests without rows
    for nodeid in failed_without_rows(rows, outcomes):
        exp = contexts.get(nodeid, {}).get("experiment") or default_name
        orphans.setdefault(exp, set()).add(nodeid)
        by_experiment.setdefault(exp, [])
    for name, exp_rows in (by_experiment or {default_name: []}).items():
        exp_contexts = {n: c for n, c in contexts.items() if (c.get("experiment") or default_name) == name}
        planted = {n for n, c in exp_contexts.items() if selftest.selftest_name(c)}  # skipped ones too
        nodeids = {r.nodeid for r in exp_rows} | orphans.get(name, set()) | planted
        exp_outcomes = {n: o for n, o in outcomes.items() if n in nodeids}
        exp_part = selftest.partition(exp_rows, exp_outcomes, exp_contexts)
        exp_lines = summarize(exp_part.rows, exp_part.outcomes, exp_part.contexts)
        exp_perf = perf_lines(exp_part.rows, exp_part.outcomes)
        doc = {
            "experiment": name,
            "run_id": run_id,
            "config": experiment.as_dict() if experiment is not None and name == default_name else None,
            "environment": environment,
            "outcomes": dict(Counter(exp_outcomes.values())),
            "summary": [
                {
                    "model": ln.model,
                    "quant": ln.quant,
                    "attention": ln.attention,
                    "result": ln.verdict,
                    **{c.label: (ln.cells[c.label] or (None, ""))[0] for c in SUMMARY_COLUMNS},
                }
                for ln in exp_lines
            ],
            "perf": [perf_entry(ln) for ln in exp_perf],
            "selftest": [selftest_entry(ln) for ln in exp_part.lines],
            "conclusions": conclusions(exp_lines, exp_outcomes, exp_perf),
            "rows": [r.as_dict() for r in exp_rows],
        }
        path = layout.experiment_json(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_no_nan(doc), indent=1, default=str), encoding="utf-8")
        written.append(path)
    return written
