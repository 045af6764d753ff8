"""How often the compare gate cries wolf, and how often it catches a planted slowdown, over a set of
identical runs and planted runs (scripts/gpu/noise_gate.sh makes them; scripts/gpu/noise_gate_tally.py
prints this).

Every ordered pair (BASE, CURRENT) of identical runs is one false-alarm trial, every (identical BASE,
planted CURRENT) one detection trial. Each trial's noise floors come from `floor_runs` other identical
runs, never BASE or CURRENT, as a gpu.yml baseline carries the floors of its own identical runs.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pytest_attnlab.compare import noise
from pytest_attnlab.compare.lines import compare, judge
from pytest_attnlab.compare.loaders import load
from pytest_attnlab.compare.thresholds import Threshold

#: the cell of a test id: its parameters in the closing [...]
_CELL = re.compile(r"\S*\[(?P<cell>[^\]]+)\]")


@dataclass
class Tally:
    false_alarms: int = 0
    pairs: int = 0
    caught: int = 0
    planted: int = 0
    alarms: list[str] = field(default_factory=list)  # "BASE -> CURRENT: cell metric; ..."
    caught_by: Counter[str] = field(default_factory=Counter)  # "cell metric" -> detection trials it flagged


def _others(runs: list[Path], exclude: set[Path], k: int, n: int) -> list[Path]:
    rest = [r for r in runs if r not in exclude]
    start = n % len(rest)
    return (rest[start:] + rest[:start])[:k]


def _trial(base: Path, cur: Path, floors: list[Path], thresholds: list[Threshold]) -> tuple[int, list[str]]:
    """compare's exit status for BASE -> CURRENT, and the "cell metric" of each regressed line."""
    noise_floors = noise.floors([load(f) for f in floors]) if floors else {}
    lines = compare(load(base), load(cur), thresholds, noise=noise_floors)
    cells = {ln.key: _CELL.fullmatch(ln.key[0]) for ln in lines if ln.status == "REGRESSED"}
    return judge(lines).code, [f"{m['cell']} {key[1]}" for key, m in cells.items() if m]


def tally(identical: list[Path], planted: list[Path], thresholds: list[str], floor_runs: int) -> Tally:
    """Run every trial; `identical` and `planted` are run files (metrics.csv or benchmark.json) of one kind.
    floor_runs 0: no noise floors (the rank test and the thresholds alone)."""
    if floor_runs and len(identical) < floor_runs + 2:
        raise ValueError(f"{len(identical)} identical runs: need floor_runs + 2 = {floor_runs + 2}")
    t = Tally()
    gates = [Threshold.parse(s) for s in thresholds]
    pairs = [(a, b) for a in identical for b in identical if a != b]
    for n, (a, b) in enumerate(pairs):
        rc, flagged = _trial(a, b, _others(identical, {a, b}, floor_runs, n), gates)
        t.pairs += 1
        if rc != 0:
            t.false_alarms += 1
            t.alarms.append(f"{a.parent.name} -> {b.parent.name}: {'; '.join(flagged) or f'exit {rc}'}")
    for n, (a, p) in enumerate((a, p) for p in planted for a in identical):
        rc, flagged = _trial(a, p, _others(identical, {a}, floor_runs, n), gates)
        t.planted += 1
        t.caught += rc == 1
        t.caught_by.update(flagged)
    return t
