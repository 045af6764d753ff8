"""The run's quality chart: one bar per variant along the axes that vary (quantizer, attention, model).

An attention run has one quantizer, a quant run one attention variant: the bars follow whichever
axis changes, labelled with the variant's name in full (horizontal bars, so long names stay readable).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_attnlab.metrics.row import MetricRow
from pytest_attnlab.reports.figure import figure, png
from pytest_attnlab.reports.rows import SUMMARY_COLUMNS

#: (MetricRow attribute, axis name) in label order.
AXES = (("model", "model"), ("quant", "quantizer"), ("attention", "attention variant"))
LABEL_WIDTH = 40  # characters per tick-label line; longer names wrap


@dataclass(frozen=True)
class QualityChart:
    metric: str
    axes: tuple[str, ...]  # the axis names that vary, e.g. ("attention variant",)
    labels: tuple[str, ...]
    values: tuple[float, ...]
    gates: tuple[float | None, ...]  # per bar: the one gate its rows share, else None
    higher_is_better: bool

    @property
    def title(self) -> str:
        return f"{self.metric} by {' x '.join(self.axes)}"

    def failing(self, i: int) -> bool:
        gate = self.gates[i]
        if gate is None:
            return False
        return self.values[i] < gate if self.higher_is_better else self.values[i] > gate


def quality_chart(rows: Sequence[MetricRow]) -> QualityChart | None:
    """Worst cosine (else mean perplexity) per variant, over the axes with more than one value."""
    for col in (c for c in SUMMARY_COLUMNS if c.label in ("cosine", "perplexity")):
        for name in col.metrics:
            hits = [r for r in rows if r.metric == name and r.value is not None and math.isfinite(r.value)]
            varying = [(attr, axis) for attr, axis in AXES if len({getattr(r, attr) for r in hits}) > 1]
            if not varying:
                continue
            groups: dict[tuple[str, ...], list[MetricRow]] = {}
            for r in hits:
                groups.setdefault(tuple(getattr(r, attr) for attr, _ in varying), []).append(r)
            gates = [{r.threshold for r in g} for g in groups.values()]
            return QualityChart(
                metric=name,
                axes=tuple(axis for _, axis in varying),
                labels=tuple(" / ".join(key) for key in groups),
                values=tuple(col.reduce([r.value for r in g]) for g in groups.values()),  # type: ignore[misc]
                gates=tuple(g.pop() if len(g) == 1 else None for g in gates),
                higher_is_better=col.higher_is_better,
            )
    return None


def quality_figure(chart: QualityChart) -> Any:
    n = len(chart.labels)
    fig, ax = figure(chart.title, chart.metric, "", size=(6.4, max(2.4, 0.32 * n + 1.2)))
    colours = ["#c0392b" if chart.failing(i) else "#3b6ea8" for i in range(n)]
    bars = ax.barh(range(n), chart.values, color=colours)
    labels = [textwrap.fill(lbl, LABEL_WIDTH, break_on_hyphens=True) for lbl in chart.labels]
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.invert_yaxis()  # first variant on top, as in the tables
    ax.bar_label(bars, [f"{v:.4g}" for v in chart.values], fontsize=7, padding=2)
    shared = set(chart.gates)
    if len(shared) == 1 and None not in shared:
        gate = shared.pop()
        ax.axvline(gate, color="#c0392b", linestyle="--", linewidth=1, label=f"gate {gate:.4g}")
        ax.legend(fontsize=7, loc="lower right")
    gates = [g for g in chart.gates if g is not None]
    lo, hi = min([0.0, *chart.values]), max([*chart.values, *gates])
    if chart.metric.endswith("cosine"):
        hi = max(hi, 1.0)
        if lo >= 0:  # zoom on the top: cosines of 0.99 and 0.999 differ a lot
            floor = min([*chart.values, *gates])
            lo = max(0.0, floor - (1 - floor) * 0.5 - 1e-4)
    margin = (hi - lo) * 0.15 + 1e-6  # room for the value labels beside the bars
    ax.set_xlim(lo - (margin if lo < 0 else 0.0), hi + margin)
    ax.set_xticks([t for t in ax.get_xticks() if lo - 1e-9 <= t <= hi + 1e-9])  # none in the margins
    return fig


def quality_by_variant(rows: Sequence[MetricRow]) -> str | None:
    chart = quality_chart(rows)
    return png(quality_figure(chart)) if chart is not None else None
