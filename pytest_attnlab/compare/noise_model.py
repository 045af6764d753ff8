"""Each gated cell's noise: how far one run's value wanders between identical processes, and the floor a
change must pass before the gate calls it a regression.

Most of the spread of a GPU timing is between processes (identical runs' HF TPOT medians 17.6, 22.2, 16.7 and
15.9 ms on an H100, while each run's rounds stayed within about 7 %), so the unit of noise is a run, and a
run's value is the median of its rounds. For a cell, sd is the standard deviation of log(value) over identical
runs. Three runs give sd two degrees of freedom, and a floor of t(0.999, 2) sd sqrt(2) = 31.6 sd; so:

- cells of one path that differ only in their sizes (batch 1 and 8, prompt 128 and 512) pool their
  variances when a Brown-Forsythe test does not tell their spreads apart, adding their degrees of freedom;
- the rounds within a run bound sd from below (var of log rounds / rounds), so a few runs that happen
  to agree cannot make a floor tighter than one run's own scatter;
- floor = t(confidence, df) sd spread (in log(value): +e^floor - 1 for a metric that grows worse, 1 - e^-floor
  for one that drops), where spread is sqrt(2) for one run against one run and
  sqrt(1/n + 1/m) for n runs against m (A/B); at a floor at or under the threshold a cell is gated, and a
  change of twice the threshold is then missed with probability under 1 - confidence;
- detect = (t(confidence, df) + z(power)) sd spread: the smallest change caught with probability `power`.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_attnlab.compare.loaders import Key, Observed
from pytest_attnlab.compare.stats import equal_spread, t_quantile, z_quantile

#: one-sided confidence of each floor: a cell cries wolf in about 1 identical pair in 100 (the issue asks at most
#: 1 in 20 per cell). 0.999 would also keep a comparison of ~20 cells under 1 in 20, but with few identical runs
#: it leaves a 2.5x slower HF path within its floor (docs/reports.md)
DEFAULT_CONFIDENCE = 0.99
#: the chance of catching a change of `detect`
POWER = 0.95
#: a test's parameters that are sizes (p128, b8, n64, 4096): cells differing only in these may pool
_SIZE_PARAM = re.compile(r"(?<![^\[-])[A-Za-z]?\d+(?![^\]-])")


@dataclass(frozen=True)
class Noise:
    """One cell's noise: relative sd of a run's value, its degrees of freedom and the cells pooled for it."""

    sd: float
    df: int
    cells: int = 1
    confidence: float = DEFAULT_CONFIDENCE
    spread: float = math.sqrt(2)  # sd of a difference in units of sd: sqrt(2) one run vs one, sqrt(1/n+1/m) A/B

    @property
    def floor(self) -> float:
        return t_quantile(self.confidence, self.df) * self.sd * self.spread

    @property
    def detect(self) -> float:
        return (t_quantile(self.confidence, self.df) + z_quantile(POWER)) * self.sd * self.spread

    def as_dict(self) -> dict[str, float]:
        return {"floor": self.floor, "detect": self.detect, "sd": self.sd, "df": self.df, "cells": self.cells}


def level(obs: Observed) -> float:
    """A run's value of a cell: the median of its rounds when it kept them, else the recorded value; NaN when
    either is not finite (a NaN round or value is a broken measurement, never one to outvote)."""
    if not math.isfinite(obs.value) or not all(map(math.isfinite, obs.samples)):
        return math.nan
    return statistics.median(obs.samples) if len(obs.samples) >= 2 else obs.value


def _log_rounds_var(obs: Observed) -> float:
    s = [math.log(x) for x in obs.samples if x > 0 and math.isfinite(x)]
    return statistics.variance(s) / len(s) if len(s) >= 2 else 0.0


def pool_key(key: Key) -> tuple[str, str, str]:
    """Cells of one path: the test id with its size parameters blanked, the metric, and the context less sizes."""
    test, metric, ctx = key
    fields = json.loads(ctx) if ctx else {}
    fixed = {k: v for k, v in fields.items() if not isinstance(v, (int, float))} if isinstance(fields, dict) else {}
    return _SIZE_PARAM.sub("*", test), metric, json.dumps(fixed, sort_keys=True)


def estimate(
    sides: Sequence[Sequence[dict[Key, Observed]]],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    spread: float | None = None,
) -> dict[Key, Noise]:
    """The noise of every key present, finite and positive in every run. `sides` are groups of identical runs
    (one group for identical runs of one commit; BASE's and HEAD's runs in an A/B comparison): each group's
    deviations from its own mean count, with its runs less one degree of freedom."""
    runs = [r for side in sides for r in side]
    if len(runs) - len(sides) < 1:
        raise ValueError("a noise estimate needs at least 2 identical runs")
    if spread is None:
        spread = math.sqrt(2) if len(sides) == 1 else math.sqrt(sum(1 / len(s) for s in sides))
    common = set(runs[0]).intersection(*runs[1:])
    dev: dict[Key, list[float]] = {}  # each run's log value less its side's mean
    within: dict[Key, float] = {}
    for key in sorted(common):
        logs = [[level(r[key]) for r in side] for side in sides]
        if not all(v > 0 and math.isfinite(v) for s in logs for v in s):
            continue
        dev[key] = [math.log(v) - statistics.fmean(map(math.log, s)) for s in logs for v in s]
        within[key] = statistics.fmean(_log_rounds_var(r[key]) for r in runs)
    df_one = len(runs) - len(sides)
    groups: dict[tuple[str, str, str], list[Key]] = {}
    for key in dev:
        groups.setdefault(pool_key(key), []).append(key)
    out: dict[Key, Noise] = {}
    for keys in groups.values():
        pooled = len(keys) > 1 and equal_spread([dev[k] for k in keys])
        parts = [keys] if pooled else [[k] for k in keys]
        for part in parts:
            var = sum(sum(d * d for d in dev[k]) for k in part) / (df_one * len(part))
            for k in part:
                sd = math.sqrt(max(var, within[k]))
                out[k] = Noise(sd, df_one * len(part), len(part), confidence, spread)
    return out
