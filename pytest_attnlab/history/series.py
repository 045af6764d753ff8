"""Series of one metric over runs, and where each changed beyond its noise.

A series is one cell's metric on one GPU model and decode path, run after run. A point is marked where the
series steps away from its current segment (the runs since its last mark), judged as `compare` judges a
change (`compare.lines.Line`): the segment is BASE (the median of its runs' values, with their rounds) and
the point CURRENT, against the metric's threshold and the segment's noise (`compare.noise_model`: the
spread of log(value) over its k >= 3 runs, floor t(0.99, k-1) sd sqrt(2), bounded below by the rounds), with
the rank test on rounds. The step must also hold: the median of the point and the next two runs lies
beyond the same limit. A marked point starts a new segment, so a step is marked once; its noise stays the
last one measured until the new segment has three runs. Before a series has three runs its noise is
unknown and nothing is marked.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from pytest_attnlab.compare.lines import Line
from pytest_attnlab.compare.loaders import Observed
from pytest_attnlab.compare.noise_model import Noise, estimate, level
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

    def gate(self, gates: list[Threshold]) -> Threshold | None:
        """The newest run's own tolerance of this metric (@pytest.mark.attnlab_gate) where it recorded one, else
        the first threshold that names the metric (compare's rule)."""
        own = next((p.value.tolerance for p in reversed(self.points) if p.value.tolerance), "")
        return Threshold.parse(f"{self.metric}:{own}") if own else pick(gates, self.metric)


def thresholds(specs: list[str] | None = None) -> list[Threshold]:
    return [Threshold.parse(s) for s in (specs or DEFAULT_THRESHOLDS)]


def build(runs: list[Run], gates: list[Threshold], metrics: set[str] | None = None) -> list[Series]:
    """Every series of a gated metric (one a threshold names, or one in `metrics`), points oldest first,
    each with its change marks."""
    series: dict[tuple[str, str, str, str], Series] = {}
    for run in runs:
        for (cell, metric, path), value in run.values.items():
            gated = pick(gates, metric) or value.tolerance
            if (metrics is not None and metric not in metrics) or (metrics is None and not gated):
                continue
            key = (metric, cell, run.gpu, path)
            series.setdefault(key, Series(cell, metric, path, run.gpu)).points.append(Point(run, value))
    out = sorted(series.values(), key=lambda s: (s.metric, s.cell, s.gpu, s.path))
    for s in out:
        gate = s.gate(gates)
        if gate is not None:
            mark(s.points, gate)
    return out


_KEY = ("series", "value", "")


def observed(value: Value) -> Observed:
    return Observed(value.value, value.samples)


def noise_of(values: list[Value]) -> Noise | None:
    """compare's noise of one run's value, from k >= 3 runs of a series (None with fewer, or if one is not a
    finite positive number)."""
    if len(values) < 3:
        return None
    return estimate([[{_KEY: observed(v)} for v in values]]).get(_KEY)


def _segment(values: list[Value]) -> Observed:
    """A segment as compare's BASE: the median of its runs' values, with every run's rounds."""
    return Observed(statistics.median(level(observed(v)) for v in values), tuple(s for v in values for s in v.samples))


def mark(points: list[Point], gate: Threshold) -> None:
    start = 0
    noise: Noise | None = None
    flipped = Threshold(gate.name, not gate.increase_is_bad, gate.amount, gate.relative)
    for i in range(1, len(points)):
        before = [p.value for p in points[max(start, i - WINDOW) : i]]
        noise = noise_of(before) or noise
        if noise is None:  # fewer than 3 runs seen: the series' noise is not known yet
            continue
        base, now = _segment(before), observed(points[i].value)
        held = statistics.median(level(observed(p.value)) for p in points[i : i + HOLD])
        if not all(math.isfinite(x) for x in (base.value, now.value, held)):
            continue
        for verdict, rule in (("regressed", gate), ("improved", flipped)):
            line = Line(_KEY, base, now, rule, noise)
            if line.status == "REGRESSED" and rule.beyond(line.values[0], held, line.limit()):
                change = gate.change(*line.values)
                points[i].mark = verdict
                points[i].change = f"{change * 100:+.1f}%" if gate.relative else f"{change:+.4g}"
                start = i
                break
