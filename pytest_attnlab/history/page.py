"""history.html: one self-contained page (inline CSS and PNG plots, no script, no network fetch).

Top down: the runs read; the newest run against the one before it (regressions first); the GPUs ranked
per cell by their share of the roofline; the engines side by side; then one figure per gated metric, a
panel per cell, a line per GPU model x decode path with each run's min-max band, and a triangle where the
series changed beyond its noise (red: worse, green: better)."""

from __future__ import annotations

import html
import math
from collections import defaultdict

from pytest_attnlab.history.runs import Run
from pytest_attnlab.history.series import Series
from pytest_attnlab.history.tables import ENGINE_COLUMNS, ROOFLINE, Change, engines, fleet
from pytest_attnlab.reports.figure import png

#: panels per figure row, and at most this many cells per metric figure (the rest are listed, not drawn)
COLUMNS, MAX_PANELS = 3, 24
_STYLE = """body{font-family:sans-serif;margin:16px;color:#222}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}th{background:#eee}
tr.REGRESSED td{background:#fdd}tr.not-finite td{background:#fdd}tr.UNGATED td{background:#ffe8b0}
tr.improved td{background:#dfd}
code{font-size:12px}figure{margin:8px 0}"""


def _fmt(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.4g}"


def _table(title: str, header: list[str], rows: list[list[str]], classes: list[str] | None = None, anchor: str = ""):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for n, cells in enumerate(rows):
        cls = f' class="{html.escape(classes[n])}"' if classes and classes[n] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    ident = f' id="{anchor}"' if anchor else ""
    return f"<h2{ident}>{html.escape(title)}</h2><table><tr>{head}</tr>{''.join(body)}</table>"


def _runs_table(runs: list[Run]) -> str:
    rows = [[str(n + 1), r.when, r.commit[:10] or "-", r.gpu or "?", r.label] for n, r in enumerate(runs)]
    return _table(f"Runs ({len(runs)})", ["#", "time", "commit", "GPU", "source"], rows, anchor="runs")


def verdict(c: Change) -> str:
    """The line's status, with what it detects when UNGATED, and "rounds only" where no noise between runs is
    known (fewer than 3 earlier runs): such a verdict sees the spread within one run, not between processes."""
    if c.line.status == "UNGATED":
        return f"UNGATED (detects {c.line.detects()})"
    if c.line.floor is None and c.line.status in ("REGRESSED", "not significant"):
        return f"{c.line.status} (rounds only)"
    return c.line.status


def headline(changes: list[Change]) -> str:
    regressed = [c for c in changes if c.line.status == "REGRESSED"]
    blind = sum(c.line.floor is None for c in regressed)
    text = f"{len(regressed)} regressed of {len(changes)} series"
    if blind:
        text += f" ({blind} on rounds only: under 3 earlier runs, the noise between runs is unknown)"
    return text


def _changes_table(changes: list[Change]) -> str:
    if not changes:
        return "<h2 id='newest'>Newest run against the one before</h2><p>No series has two runs yet.</p>"
    rows, classes = [], []
    for c in changes:
        base, cur = c.line.values if c.line.base and c.line.current else (math.nan, math.nan)
        floor = c.line.floor
        rows.append([c.series.metric, c.series.cell, c.series.label, _fmt(base), _fmt(cur), c.line.change(),
                     "-" if floor is None else f"{floor * 100:.1f}%", verdict(c)])  # fmt: skip
        classes.append(c.line.status.replace(" ", "-"))
    title = f"Newest run against the one before: {headline(changes)}"
    header = ["metric", "cell", "GPU · path", "before", "newest", "change", "noise floor", "verdict"]
    shown = [n for n, c in enumerate(changes) if c.line.status != "ok"]  # the ok ones fold away, below them
    table = _table(title, header, [rows[n] for n in shown], [classes[n] for n in shown], anchor="newest")
    ok = [n for n in range(len(changes)) if n not in set(shown)]
    if not ok:
        return table
    folded = _table("", header, [rows[n] for n in ok], [classes[n] for n in ok]).removeprefix("<h2></h2>")
    return f"{table}<details><summary>{len(ok)} series ok</summary>{folded}</details>"


def markdown(runs: list[Run], changes: list[Change], limit: int = 40) -> str:
    """The newest run against the one before as a Markdown table, regressions first (a CI job summary)."""
    newest = runs[-1] if runs else None
    head = (f"### History: {len(runs)} runs; newest {newest.name if newest else '-'} ({newest.gpu if newest else '-'})"
            f" against the one before: {headline(changes)}\n\n")  # fmt: skip
    if not changes:
        return head + "No series has two runs yet.\n"
    lines = ["| verdict | metric | cell | GPU · path | before | newest | change |", "|---|---|---|---|---|---|---|"]
    for c in changes[:limit]:
        base, cur = c.line.values if c.line.base and c.line.current else (math.nan, math.nan)
        cell = c.series.cell.split("::")[-1]
        lines.append(f"| {verdict(c)} | {c.series.metric} | {cell} | {c.series.label} | {_fmt(base)} | {_fmt(cur)} | "
                     f"{c.line.change()} |")  # fmt: skip
    more = f"\n{len(changes) - limit} more series in history.html.\n" if len(changes) > limit else ""
    return head + "\n".join(lines) + "\n" + more


def _fleet_table(runs: list[Run]) -> str:
    rows = []
    for cell, path, ranked in fleet(runs):
        for rank, (gpu, mbu, tpot) in enumerate(ranked, 1):
            rows.append([cell, path, str(rank), gpu, f"{mbu:.1f}", _fmt(tpot * 1e3)])
    if not rows:
        return "<h2 id='fleet'>GPUs ranked per cell</h2><p>No run recorded MBU.</p>"
    header = ["cell", "path", "rank", "GPU", "MBU % (of its own roofline)", "TPOT ms"]
    return _table("GPUs ranked per cell (the newest run of the cell on each GPU)", header, rows, anchor="fleet")


def engines_markdown(runs: list[Run]) -> str:
    """The engines side by side (the newest run of each cell on each GPU) as a Markdown table."""
    lines = ["| GPU | cell | path | " + " | ".join(h for _m, h, _s in ENGINE_COLUMNS) + " |", "|---" * 9 + "|"]
    for gpu, cell, path, values in engines(runs):
        lines.append(f"| {gpu} | {cell.split('::')[-1]} | {path} | " + " | ".join(_fmt(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def _engines_table(runs: list[Run]) -> str:
    rows = [[gpu, cell, path, *(_fmt(v) for v in values)] for gpu, cell, path, values in engines(runs)]
    if not rows:
        return "<h2 id='engines'>Engines side by side</h2><p>No perf cell was recorded.</p>"
    header = ["GPU", "cell", "path", *(h for _m, h, _s in ENGINE_COLUMNS)]
    return _table("Engines side by side (the newest run of each cell on each GPU)", header, rows, anchor="engines")


def _figure(metric: str, series: list[Series], runs: list[Run]) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    cells = sorted({s.cell for s in series})
    shown = cells[:MAX_PANELS]
    rows = math.ceil(len(shown) / COLUMNS)
    cols = min(COLUMNS, len(shown))
    fig = Figure(figsize=(4.6 * cols, 3.0 * rows + 0.6), dpi=80, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    index = {id(r): n for n, r in enumerate(runs)}
    colours: dict[str, str] = {}
    palette = [f"C{i}" for i in range(10)]
    for ax, cell in zip(axes.flat, shown, strict=False):
        ax.set_title(cell.split("::")[-1][:60], fontsize=8)
        ax.grid(True, alpha=0.3)
        for s in (s for s in series if s.cell == cell):
            colour = colours.setdefault(s.label, palette[len(colours) % len(palette)])
            xs = [index[id(p.run)] + 1 for p in s.points]
            ys = [p.value.value for p in s.points]
            lo, hi = zip(*(p.value.band for p in s.points), strict=True)
            ax.plot(xs, ys, marker="o", ms=3, color=colour, label=s.label)
            ax.fill_between(xs, lo, hi, color=colour, alpha=0.15, linewidth=0)
            for p, x in zip(s.points, xs, strict=True):
                if p.mark:
                    ax.plot([x], [p.value.value], marker="v" if p.mark == "regressed" else "^", ms=11,
                            color="#c00" if p.mark == "regressed" else "#080", zorder=5)  # fmt: skip
        ax.set_xticks(range(1, len(runs) + 1))
        ax.set_xticklabels([r.name for r in runs], rotation=60, ha="right", fontsize=6)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    handles = {lbl: h for ax in axes.flat for h, lbl in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=min(4, len(handles)), fontsize=8)
    unit = next((p.value.unit for s in series for p in s.points if p.value.unit), "")
    fig.suptitle(f"{metric}" + (f" ({unit})" if unit else ""), fontsize=11)
    more = f"<p>{len(cells) - len(shown)} more cells not drawn.</p>" if len(cells) > len(shown) else ""
    marks = sum(len(s.marks) for s in series)
    cap = f"{metric}: {len(series)} series, {marks} change{'s' if marks != 1 else ''} beyond noise"
    return (f'<figure class="history-plot" data-metric="{html.escape(metric)}" data-marks="{marks}">'
            f'<img alt="{html.escape(cap)}" src="data:image/png;base64,{png(fig)}"/>'
            f"<figcaption>{html.escape(cap)}</figcaption></figure>{more}")  # fmt: skip


def render(runs: list[Run], series: list[Series], changes: list[Change], roofline: list[Series]) -> str:
    by_metric: dict[str, list[Series]] = defaultdict(list)
    for s in series:
        by_metric[s.metric].append(s)
    by_roof: dict[str, list[Series]] = defaultdict(list)
    for s in roofline:
        by_roof[s.metric].append(s)
    figures = "".join(_figure(m, ss, runs) for m, ss in sorted(by_metric.items()))
    roof = "".join(_figure(m, ss, runs) for m, ss in sorted(by_roof.items()) if m in ROOFLINE)
    gpus = sorted({r.gpu or "?" for r in runs})
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>pytest-attnlab history</title>"
        f"<style>{_STYLE}</style></head><body><h1>pytest-attnlab history</h1>"
        f"<p>{len(runs)} runs on {len(gpus)} GPU model(s): {html.escape(', '.join(gpus))}.</p>"
        f"{_changes_table(changes)}{_fleet_table(runs)}{_engines_table(runs)}"
        f"<h2 id='plots'>Gated metrics over time</h2>{figures or '<p>No gated metric was recorded.</p>'}"
        "<h2 id='roofline'>Share of the roofline (MBU, MFU): GPUs on one axis</h2>"
        f"{roof or '<p>No roofline metric was recorded.</p>'}"
        f"{_runs_table(runs)}</body></html>"
    )
