"""Series of one metric over runs, and where each changed beyond its noise.

A series is one cell's metric on one GPU model and decode path, run after run. A point is marked where
the series steps away from its current segment (the runs since its last mark) by more than the larger of
the metric's compare threshold and the segment's noise floor, and the step holds: the point itself and
the median of it and the next two runs both lie beyond. The noise floor and the rank test are compare's
(`compare.noise`, `compare.stats`): floor = t(C, k-1) * sd * sqrt(2) over the segment's k >= 3 run values
(relative), and with per-round samples the point's rounds must differ from the segment's by a one-sided
rank test at compare's alpha. A marked point starts a new segment, so a step is marked once; its
floor stays the last one measured until the new segment has three runs. Before a series has three runs
its noise is unknown and nothing is marked.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from pytest_attnlab.compare.cli import DEFAULT_ALPHA
from pytest_attnlab.compare.noise import DEFAULT_CONFIDENCE
from pytest_attnlab.compare.stats import min_p, rank_test_p, t_quantile
from pytest_attnlab.compare.thresholds import DEFAULT_THRESHOLDS, Threshold, pick
from pytest_attnlab.history.runs import Run, Value

#: runs before a point that its segment's level and noise are taken from, at most
WINDOW = 6
#: runs from a point on whose median must also lie beyond the limit (the step holds)
HOLD = 3


@dataclass
class Point:
    run: Run
    value: Value
    mark: str = ""  # "regressed" or "improved" where the series changed beyond its noise here
    change: str = ""  # against the segment before it: "+12.3%" (relative threshold) or "-0.02" (absolute)


@dataclass
class Series:
    cell: str
    metric: str
    path: str
    gpu: str
    points: list[Point] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.gpu or '?'} · {self.path or '-'}"

    @property
    def marks(self) -> list[Point]:
        return [p for p in self.points if p.mark]


def thresholds(specs: list[str] | None = None) -> list[Threshold]:
    return [Threshold.parse(s) for s in (specs or DEFAULT_THRESHOLDS)]


def build(runs: list[Run], gates: list[Threshold], metrics: set[str] | None = None) -> list[Series]:
    """Every series of a gated metric (one a threshold names, or one in `metrics`), points oldest first,
    each with its change marks."""
    series: dict[tuple[str, str, str, str], Series] = {}
    for run in runs:
        for (cell, metric, path), value in run.values.items():
            if (metrics is not None and metric not in metrics) or (metrics is None and not pick(gates, metric)):
                continue
            key = (metric, cell, run.gpu, path)
            series.setdefault(key, Series(cell, metric, path, run.gpu)).points.append(Point(run, value))
    out = sorted(series.values(), key=lambda s: (s.metric, s.cell, s.gpu, s.path))
    for s in out:
        gate = pick(gates, s.metric)
        if gate is not None:
            mark(s.points, gate)
    return out


def floor(values: list[float], confidence: float = DEFAULT_CONFIDENCE) -> float | None:
    """compare's relative noise floor of a metric from k >= 3 identical runs' values."""
    mean = statistics.fmean(values) if values else 0.0
    if len(values) < 3 or not mean or any(math.isnan(v) for v in values):
        return None
    return t_quantile(confidence, len(values) - 1) * statistics.stdev(v / mean for v in values) * math.sqrt(2)


def _significant(point: Value, before: list[Value], larger: bool, alpha: float) -> bool:
    """compare's one-sided rank test that the point's rounds are `larger` (else smaller) than the segment's
    (True when there are too few rounds to test)."""
    pooled = [s for v in before for s in v.samples]
    if len(point.samples) < 2 or len(pooled) < 2 or min_p(len(point.samples), len(pooled)) > alpha:
        return True
    hi, lo = (point.samples, pooled) if larger else (pooled, point.samples)
    return rank_test_p(hi, lo) <= alpha


def mark(points: list[Point], gate: Threshold, alpha: float = DEFAULT_ALPHA) -> None:
    start = 0
    last_floor: float | None = None
    for i in range(1, len(points)):
        before = [p.value for p in points[max(start, i - WINDOW) : i]]
        values = [v.value for v in before]
        if any(math.isnan(v) for v in values) or math.isnan(points[i].value.value):
            continue
        last_floor = floor(values) if len(values) >= 3 else last_floor
        if last_floor is None:  # fewer than 3 runs seen: the series' noise is not known yet
            continue
        base = statistics.median(values)
        held = statistics.median(p.value.value for p in points[i : i + HOLD])
        amount = gate.amount / 100 if gate.relative else gate.amount
        limit = max(amount, last_floor if gate.relative else last_floor * abs(base))
        flipped = Threshold(gate.name, not gate.increase_is_bad, gate.amount, gate.relative)
        for verdict, rule in (("regressed", gate), ("improved", flipped)):
            now = points[i].value
            if rule.beyond(base, now.value, limit) and rule.beyond(base, held, limit):
                if _significant(now, before, rule.increase_is_bad, alpha):
                    change = gate.change(base, now.value)
                    points[i].mark = verdict
                    points[i].change = f"{change * 100:+.1f}%" if gate.relative else f"{change:+.4g}"
                    start = i
                break
