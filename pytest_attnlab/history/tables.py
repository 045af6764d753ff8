"""The history page's tables: the newest run against the one before it (judged by compare's `Line`), the
GPUs ranked per cell by their share of the roofline, and the engines side by side."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pytest_attnlab.compare.lines import Line
from pytest_attnlab.compare.thresholds import Threshold
from pytest_attnlab.history.runs import Run
from pytest_attnlab.history.series import WINDOW, Series, noise_of, observed

#: the fleet view's metrics: each a fraction of its roofline, so GPUs of different peaks share an axis
ROOFLINE = ("mbu", "mfu")
#: the engines table's columns: (metric, heading, scale to the shown unit)
ENGINE_COLUMNS = (
    ("ttft", "TTFT ms", 1e3),
    ("tpot", "TPOT ms", 1e3),
    ("decode_tok_s", "decode tok/s", 1.0),
    ("goodput_tok_s", "goodput tok/s", 1.0),  # --attnlab-perf-slo
    ("mbu", "MBU %", 1.0),
    ("peak_mem", "peak mem MiB", 1 / 2**20),
)


@dataclass
class Change:
    series: Series
    line: Line

    @property
    def order(self) -> tuple[int, str]:
        rank = {"REGRESSED": 0, "not finite": 1, "UNGATED": 2, "not significant": 3, "ok": 4}
        return rank.get(self.line.status, 5), f"{self.series.metric} {self.series.cell}"


def newest_changes(series: list[Series], gates: list[Threshold]) -> list[Change]:
    """Each series' newest point against the one before, as compare judges it: threshold, the noise of the
    earlier runs (three or more; UNGATED where its floor exceeds the threshold), the rank test on rounds.
    Regressions first."""
    out = []
    for s in series:
        if len(s.points) < 2:
            continue
        before, last = s.points[-2], s.points[-1]
        noise = noise_of([p.value for p in s.points[:-1][-WINDOW:]])
        key = (s.cell, s.metric, s.path)
        line = Line(key, observed(before.value), observed(last.value), s.gate(gates), noise)
        out.append(Change(s, line))
    return sorted(out, key=lambda c: c.order)


def _newest(runs: list[Run]) -> dict[tuple[str, str, str], Run]:
    """(GPU, cell, path) -> the newest run that measured that cell there (a later run of another grid does not
    hide it)."""
    newest: dict[tuple[str, str, str], Run] = {}
    for run in runs:  # oldest first: the last one seen is the newest
        for cell, _metric, path in run.values:
            newest[(run.gpu, cell, path)] = run
    return newest


def fleet(runs: list[Run]) -> list[tuple[str, str, list[tuple[str, float, float]]]]:
    """Per cell and path: the GPUs (the newest run of the cell on each) ranked by MBU, best first, as
    (gpu, mbu %, tpot s)."""
    table: dict[tuple[str, str], list[tuple[str, float, float]]] = {}
    for (gpu, cell, path), run in _newest(runs).items():
        mbu, tpot = run.values.get((cell, "mbu", path)), run.values.get((cell, "tpot", path))
        if mbu is not None and not math.isnan(mbu.value):
            table.setdefault((cell, path), []).append((gpu, mbu.value, tpot.value if tpot else math.nan))
    return [(cell, path, sorted(rows, key=lambda r: -r[1])) for (cell, path), rows in sorted(table.items())]


def engines(runs: list[Run]) -> list[tuple[str, str, str, list[float]]]:
    """Per GPU, cell and decode path (the newest run of each): the ENGINE_COLUMNS values (nan where not recorded)."""
    rows = []
    for (gpu, cell, path), run in sorted(_newest(runs).items()):
        if not path:
            continue
        values = []
        for metric, _heading, scale in ENGINE_COLUMNS:
            v = run.values.get((cell, metric, path))
            values.append(v.value * scale if v else math.nan)
        if not all(math.isnan(v) for v in values):
            rows.append((gpu, cell, path, values))
    return rows
