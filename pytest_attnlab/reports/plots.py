"""Report plots: matplotlib (Agg) figures returned as base64 PNG for pytest-html and summary.md.

Each function returns None when the rows do not carry what its plot needs, so callers can offer
every plot and keep the ones that apply.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_attnlab.metrics.row import MetricRow, to_float
from pytest_attnlab.reports.figure import figure, png
from pytest_attnlab.reports.quality_plot import quality_by_variant
from pytest_attnlab.reports.rows import (
    BATCH_KEYS,
    LAYER_KEYS,
    NEW_TOKENS_KEYS,
    PERF_COLUMNS,
    PROMPT_LEN_KEYS,
    extra_text,
    value_spread,
)


def available() -> bool:
    """matplotlib is installed (extra `plots`); without it reports keep their tables, minus the plots."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


@dataclass(frozen=True)
class Point:
    """One plotted point: the mean of the rows at x, and the min–max spread around it."""

    x: float
    y: float
    lo: float
    hi: float


def _point(x: float, rows: Sequence[MetricRow]) -> Point:
    y = statistics.fmean(r.value for r in rows)  # type: ignore[misc]
    lo, hi = value_spread(rows) or (y, y)
    return Point(x, y, min(lo, y), max(hi, y))


def _finite_value(r: MetricRow) -> bool:
    return isinstance(r.value, (int, float)) and math.isfinite(r.value)  # a test's own rows may hold text


def _series(
    rows: Sequence[MetricRow], metrics: Sequence[str], x_keys: Sequence[str], label: Callable[[MetricRow], str]
) -> tuple[str, dict[str, list[Point]]]:
    """{series label: points sorted by x} for the first metric name that has points with an x."""
    for name in metrics:
        series: dict[str, dict[float, list[MetricRow]]] = {}
        for r in rows:
            x = to_float(r.get_extra(x_keys))
            if r.metric == name and x is not None and _finite_value(r):
                series.setdefault(label(r), {}).setdefault(x, []).append(r)
        if series:
            return name, {k: [_point(x, rs) for x, rs in sorted(v.items())] for k, v in series.items()}
    return "", {}


def line_plot(*args: Any, **kwargs: Any) -> str | None:
    """line_figure's figure as a base64 PNG (None when there is nothing to draw)."""
    fig = line_figure(*args, **kwargs)
    return png(fig) if fig is not None else None


def line_figure(
    rows: Sequence[MetricRow],
    metrics: Sequence[str],
    x_keys: Sequence[str],
    label: Callable[[MetricRow], str],
    title: str,
    xlabel: str,
    min_points: int = 2,
    spread: bool = True,
) -> Any:
    """Mean per x, one line per series; with `spread`, min–max error bars, so round-to-round noise is
    not read as a trend."""
    name, series = _series(rows, metrics, x_keys, label)
    if not series or max(len(v) for v in series.values()) < min_points:
        return None
    hits = [r for r in rows if r.metric == name]
    unit = next((r.unit for r in hits), "")
    heading = f"{title}\n({_spread_note(hits, series)})" if spread else title
    fig, ax = figure(heading, xlabel, f"{name} ({unit})" if unit else name)
    for lbl, points in series.items():
        xs, ys = [p.x for p in points], [p.y for p in points]
        if spread:
            err = [[p.y - p.lo for p in points], [p.hi - p.y for p in points]]
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=3, label=lbl)
        else:
            ax.plot(xs, ys, marker="o", ms=3, label=lbl)
    if len(series) > 1 or next(iter(series)):
        ax.legend(fontsize=7)
    return fig


def _spread_note(hits: Sequence[MetricRow], series: dict[str, list[Point]]) -> str:
    """What the error bars show, so a reader knows whether the spread was measured at all."""
    if any(r.samples for r in hits):
        return "mean; bars: min–max over rounds"
    if any(p.lo < p.hi for points in series.values() for p in points):
        return "mean; bars: min–max over the rows of a point"
    return "one value per point: no per-round spread recorded"


def layer_cosine(rows: Sequence[MetricRow]) -> str | None:
    """Per-layer cosine curve, one line per (quant, attention) candidate."""
    label = lambda r: f"{r.quant}/{r.attention}"  # noqa: E731
    return line_plot(rows, ("layer_cosine",), LAYER_KEYS, label, "per-layer cosine vs reference", "layer", spread=False)


def perf_series_label(rows: Sequence[MetricRow], metrics: Sequence[str], held: Sequence[tuple[str, Sequence[str]]]):
    """Series label: quant/attention, plus whatever else varies and is not the x axis (model, decode path,
    batch 'b4', prompt 'p64', new tokens 'n32'), so no line averages different paths or cells."""
    hits = [r for r in rows if r.metric in metrics]

    def several(key: Callable[[MetricRow], str]) -> bool:
        return len({key(r) for r in hits}) > 1

    varying = [(prefix, keys) for prefix, keys in held if several(lambda r, k=keys: extra_text(r, k))]
    show_model, show_backend = several(lambda r: r.model), several(lambda r: r.backend)

    def label(r: MetricRow) -> str:
        parts = [r.model] if show_model else []
        parts.append(f"{r.quant}/{r.attention}")
        parts += [r.backend] if show_backend else []
        parts += [f"{prefix}{extra_text(r, keys)}" for prefix, keys in varying if extra_text(r, keys)]
        return " ".join(parts)

    return label


TOK_METRICS = next(c.metrics for c in PERF_COLUMNS if c.label == "decode tok/s")


def tpot_vs_prompt_len(rows: Sequence[MetricRow]) -> str | None:
    """Mean TPOT per prompt length, one line per variant, decode path, batch and output length."""
    label = perf_series_label(rows, ("tpot",), (("b", BATCH_KEYS), ("n", NEW_TOKENS_KEYS)))
    return line_plot(rows, ("tpot",), PROMPT_LEN_KEYS, label, "TPOT vs prompt length", "prompt tokens")


def toks_vs_batch(rows: Sequence[MetricRow]) -> str | None:
    """Mean decode tokens/s per batch size, one line per variant, decode path, prompt and output length."""
    label = perf_series_label(rows, TOK_METRICS, (("p", PROMPT_LEN_KEYS), ("n", NEW_TOKENS_KEYS)))
    return line_plot(rows, TOK_METRICS, BATCH_KEYS, label, "tokens/s vs batch size", "batch size")


def monitor_timeline(samples: dict[str, list[float]], title: str) -> str | None:
    """GPU/CPU monitor timeline: `samples` maps 't' (s) and series names to equal-length lists."""
    t = samples.get("t")
    series = {k: v for k, v in samples.items() if k != "t" and len(v) == len(t or ()) and len(v) > 1}
    if not t or not series:
        return None
    fig, ax = figure(title, "time (s)", "value")
    pct = {k: v for k, v in series.items() if "util" in k or k.endswith(("_pct", "percent"))}
    other = {k: v for k, v in series.items() if k not in pct}
    for k, v in pct.items():
        ax.plot(t, v, label=k)
    if pct:
        ax.set_ylabel("utilisation (%)")
    if other:
        ax2 = ax.twinx() if pct else ax
        for k, v in other.items():
            ax2.plot(t, [x / 2**20 if "byte" in k or "mem" in k else x for x in v], linestyle="--", label=k)
        ax2.set_ylabel("memory (MiB)" if any("mem" in k or "byte" in k for k in other) else "value")
        if ax2 is not ax:
            ax2.legend(fontsize=7, loc="lower right")
    ax.legend(fontsize=7, loc="upper left")
    return png(fig)


#: Plots offered per test (from that test's rows) and in the summary (from the whole run).
PER_TEST_PLOTS: dict[str, Callable[[Sequence[MetricRow]], str | None]] = {
    "per-layer cosine": layer_cosine,
    "TPOT vs prompt length": tpot_vs_prompt_len,
    "tokens/s vs batch size": toks_vs_batch,
}
RUN_PLOTS: dict[str, Callable[[Sequence[MetricRow]], str | None]] = {
    "quality by variant": quality_by_variant,
    "TPOT vs prompt length": tpot_vs_prompt_len,
    "tokens/s vs batch size": toks_vs_batch,
}
