"""Report plots: matplotlib (Agg) figures returned as base64 PNG for pytest-html and summary.md.

Each function returns None when the rows do not carry what its plot needs, so callers can offer
every plot and keep the ones that apply.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from typing import Any

from pytest_attnlab.reports.rows import (
    BATCH_KEYS,
    LAYER_KEYS,
    PROMPT_LEN_KEYS,
    SUMMARY_COLUMNS,
    Row,
    to_float,
)


def available() -> bool:
    """matplotlib is installed (extra `plots`); without it reports keep their tables, minus the plots."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless; leaves an explicitly chosen backend alone
    from matplotlib.figure import Figure  # no pyplot: no global figure state across tests

    fig = Figure(figsize=(6.4, 3.4), dpi=90, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _series(
    rows: Sequence[Row], metrics: Sequence[str], x_keys: Sequence[str], label: Callable[[Row], str]
) -> tuple[str, dict[str, list[tuple[float, float]]]]:
    """{series label: sorted (x, mean y at x)} for the first metric name that has points with an x."""
    for name in metrics:
        series: dict[str, dict[float, list[float]]] = {}
        for r in rows:
            x = to_float(r.get_extra(x_keys))
            if r.metric == name and x is not None and r.value is not None:
                series.setdefault(label(r), {}).setdefault(x, []).append(r.value)
        if series:
            return name, {k: sorted((x, sum(ys) / len(ys)) for x, ys in v.items()) for k, v in series.items()}
    return "", {}


def line_plot(
    rows: Sequence[Row],
    metrics: Sequence[str],
    x_keys: Sequence[str],
    label: Callable[[Row], str],
    title: str,
    xlabel: str,
    min_points: int = 2,
) -> str | None:
    name, series = _series(rows, metrics, x_keys, label)
    if not series or max(len(v) for v in series.values()) < min_points:
        return None
    unit = next((r.unit for r in rows if r.metric == name), "")
    fig, ax = _figure(title, xlabel, f"{name} ({unit})" if unit else name)
    for lbl, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=lbl)
    if len(series) > 1 or next(iter(series)):
        ax.legend(fontsize=7)
    return _png(fig)


def layer_cosine(rows: Sequence[Row]) -> str | None:
    """Per-layer cosine curve, one line per (quant, attention) candidate."""
    return line_plot(
        rows,
        ("layer_cosine",),
        LAYER_KEYS,
        lambda r: f"{r.quant}/{r.attention}",
        "per-layer cosine vs reference",
        "layer",
    )


def _variant(rows: Sequence[Row]) -> Callable[[Row], str]:
    """Series label: quant/attention, plus the backend (decode path) when the rows use several."""
    several = len({r.backend for r in rows}) > 1
    return lambda r: f"{r.quant}/{r.attention}" + (f"/{r.backend}" if several else "")


def tpot_vs_prompt_len(rows: Sequence[Row]) -> str | None:
    """Mean TPOT per prompt length, one line per attention variant (and quantizer / backend)."""
    return line_plot(rows, ("tpot",), PROMPT_LEN_KEYS, _variant(rows), "TPOT vs prompt length", "prompt tokens")


def toks_vs_batch(rows: Sequence[Row]) -> str | None:
    tok_metrics = next(c.metrics for c in SUMMARY_COLUMNS if c.label == "tok/s")
    return line_plot(
        rows,
        tok_metrics,
        BATCH_KEYS,
        _variant(rows),
        "tokens/s vs batch size",
        "batch size",
    )


def quality_by_quant(rows: Sequence[Row]) -> str | None:
    """Bar chart of the worst logits cosine (or mean perplexity) per quantizer, bars per attention."""
    for col in (c for c in SUMMARY_COLUMNS if c.label in ("cosine", "perplexity")):
        for name in col.metrics:
            table: dict[str, dict[str, list[float]]] = {}
            for r in rows:
                if r.metric == name and r.value is not None:
                    table.setdefault(r.quant, {}).setdefault(r.attention, []).append(r.value)
            if len(table) < 2 and not any(len(v) > 1 for v in table.values()):
                continue
            quants = list(table)
            attns = list(dict.fromkeys(a for v in table.values() for a in v))
            fig, ax = _figure(f"quality vs quantizer ({name})", "quantizer", name)
            width = 0.8 / len(attns)
            for i, attn in enumerate(attns):
                ys = [col.reduce(table[q][attn]) if attn in table[q] else 0.0 for q in quants]
                ax.bar([j + i * width for j in range(len(quants))], ys, width, label=attn)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(quants))], quants, rotation=20, fontsize=8)
            lo = min(col.reduce(v) for t in table.values() for v in t.values())
            if name.endswith("cosine"):
                ax.set_ylim(max(0.0, lo - (1 - lo) * 0.5 - 1e-4), 1.0 + 1e-5)
            ax.legend(fontsize=7)
            return _png(fig)
    return None


def monitor_timeline(samples: dict[str, list[float]], title: str) -> str | None:
    """GPU/CPU monitor timeline: `samples` maps 't' (s) and series names to equal-length lists."""
    t = samples.get("t")
    series = {k: v for k, v in samples.items() if k != "t" and len(v) == len(t or ()) and len(v) > 1}
    if not t or not series:
        return None
    fig, ax = _figure(title, "time (s)", "value")
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
    return _png(fig)


#: Plots offered per test (from that test's rows) and in the summary (from the whole run).
PER_TEST_PLOTS: dict[str, Callable[[Sequence[Row]], str | None]] = {
    "per-layer cosine": layer_cosine,
    "TPOT vs prompt length": tpot_vs_prompt_len,
    "tokens/s vs batch size": toks_vs_batch,
}
RUN_PLOTS: dict[str, Callable[[Sequence[Row]], str | None]] = {
    "quality vs quantizer": quality_by_quant,
    "TPOT vs prompt length": tpot_vs_prompt_len,
    "tokens/s vs batch size": toks_vs_batch,
}
