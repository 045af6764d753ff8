"""How often the compare gate cries wolf, and how often it catches a planted slowdown, per gated cell, over a
set of identical runs and planted runs (scripts/gpu/noise_gate.sh makes them).

    python -m pytest_attnlab.compare.trials OUT [--floor-runs 4]     (OUT: noise_gate.sh's folder)

Every ordered pair (BASE, CURRENT) of identical runs is one false-alarm trial, every (identical BASE, planted
CURRENT) one detection trial. Each trial's noise floors come from `floor_runs` other identical runs, never
BASE or CURRENT, as a gpu.yml baseline carries the floors of its own identical runs. A cell is counted on its
own (a planted run caught on one cell says nothing of another cell's blindness).
"""

from __future__ import annotations

import argparse
import itertools
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pytest_attnlab.compare import noise
from pytest_attnlab.compare.ab import ab_compare
from pytest_attnlab.compare.lines import Line, compare, judge
from pytest_attnlab.compare.loaders import load
from pytest_attnlab.compare.thresholds import Threshold

#: the cell of a test id: its parameters in the closing [...]
_CELL = re.compile(r"\S*\[(?P<cell>[^\]]+)\]")
#: gpu.yml's thresholds
THRESHOLDS = ["tpot:+5%", "ttft:+10%", "tok_s:-5%", "cosine:-0.01"]


@dataclass
class Cell:
    """One gated cell and metric over all trials."""

    pairs: int = 0
    false_alarms: int = 0
    planted: int = 0
    caught: int = 0
    gated: int = 0  # trials (of both kinds) in which its floor was at or under its threshold
    floors: list[float] = field(default_factory=list)
    detects: list[float] = field(default_factory=list)

    @property
    def trials(self) -> int:
        return self.pairs + self.planted

    @property
    def always_gated(self) -> bool:
        return self.gated == self.trials


@dataclass
class Tally:
    false_alarms: int = 0
    pairs: int = 0
    caught: int = 0
    planted: int = 0
    alarms: list[str] = field(default_factory=list)  # "BASE -> CURRENT: cell metric; ..."
    caught_by: Counter[str] = field(default_factory=Counter)  # "cell metric" -> detection trials it flagged
    cells: dict[str, Cell] = field(default_factory=dict)  # "cell metric" -> its own counts

    def table(self) -> str:
        """Per cell: gated trials, false alarms in identical pairs, planted runs caught, median floor and detects."""
        rows = [("cell", "metric", "gated", "false alarms", "caught", "floor", "detects")]
        for name, c in sorted(self.cells.items()):
            cell, metric = name.rsplit(" ", 1)
            counts = (f"{c.gated}/{c.trials}", f"{c.false_alarms}/{c.pairs}", f"{c.caught}/{c.planted}")
            rows.append((cell, metric, *counts, _median_pct(c.floors), _median_pct(c.detects)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _median_pct(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 100:.1f}%" if xs else ""


def _others(runs: list[Path], exclude: set[Path], k: int, n: int) -> list[Path]:
    rest = [r for r in runs if r not in exclude]
    start = n % len(rest)
    return (rest[start:] + rest[:start])[:k]


def _cell(line: Line) -> str | None:
    m = _CELL.fullmatch(line.key[0])
    return f"{m['cell']} {line.key[1]}" if m and line.threshold is not None else None


def _trial(base: Path, cur: Path, floors: list[Path], thresholds: list[Threshold]) -> tuple[int, list[Line]]:
    """compare's exit status for BASE -> CURRENT, and its lines."""
    noise_floors = noise.floors([load(f) for f in floors]) if floors else {}
    lines = compare(load(base), load(cur), thresholds, noise=noise_floors)
    return judge(lines).code, lines


def _count(t: Tally, lines: list[Line], planted: bool) -> list[str]:
    flagged = []
    for ln in lines:
        name = _cell(ln)
        if name is None or ln.current is None or ln.base is None:
            continue
        c = t.cells.setdefault(name, Cell())
        hit = ln.status == "REGRESSED"
        if planted:
            c.planted, c.caught = c.planted + 1, c.caught + hit
        else:
            c.pairs, c.false_alarms = c.pairs + 1, c.false_alarms + hit
        c.gated += not ln.blind
        if ln.floor is not None and ln.detect is not None:
            c.floors.append(ln.floor)
            c.detects.append(ln.detect)
        if hit:
            flagged.append(name)
    return flagged


def tally(identical: list[Path], planted: list[Path], thresholds: list[str], floor_runs: int) -> Tally:
    """Run every trial; `identical` and `planted` are run files (metrics.csv or benchmark.json) of one kind.
    floor_runs 0: no noise floors (the rank test and the thresholds alone)."""
    if floor_runs and len(identical) < floor_runs + 2:
        raise ValueError(f"{len(identical)} identical runs: need floor_runs + 2 = {floor_runs + 2}")
    t = Tally()
    gates = [Threshold.parse(s) for s in thresholds]
    pairs = [(a, b) for a in identical for b in identical if a != b]
    for n, (a, b) in enumerate(pairs):
        rc, lines = _trial(a, b, _others(identical, {a, b}, floor_runs, n), gates)
        flagged = _count(t, lines, planted=False)
        t.pairs += 1
        if rc != 0:
            t.false_alarms += 1
            t.alarms.append(f"{a.parent.name} -> {b.parent.name}: {'; '.join(flagged) or f'exit {rc}'}")
    for n, (a, p) in enumerate((a, p) for p in planted for a in identical):
        rc, lines = _trial(a, p, _others(identical, {a}, floor_runs, n), gates)
        t.caught_by.update(_count(t, lines, planted=True))
        t.planted += 1
        t.caught += rc == 1
    return t


def ab_tally(identical: list[Path], planted: list[Path], thresholds: list[str], per_side: int = 3) -> Tally:
    """The same trials in A/B mode: every choice of `per_side` identical runs against `per_side` other identical
    runs (false alarms), and against `per_side` planted runs (detections)."""
    if len(identical) < 2 * per_side or len(planted) < per_side:
        raise ValueError(f"A/B trials of {per_side} runs a side need {2 * per_side} identical, {per_side} planted")
    t = Tally()
    gates = [Threshold.parse(s) for s in thresholds]
    runs = {p: load(p) for p in [*identical, *planted]}
    for a in itertools.combinations(identical, per_side):
        rest = [r for r in identical if r not in a]
        for b in itertools.combinations(rest, per_side):
            lines = ab_compare([runs[r] for r in a], [runs[r] for r in b], gates)
            flagged, rc = _count(t, lines, planted=False), judge(lines).code
            t.pairs, t.false_alarms = t.pairs + 1, t.false_alarms + (rc != 0)
            if rc:
                t.alarms.append(f"{'+'.join(r.parent.name for r in a)} -> {'+'.join(r.parent.name for r in b)}: "
                                f"{'; '.join(flagged) or f'exit {rc}'}")  # fmt: skip
        for b in itertools.combinations(planted, per_side):
            lines = ab_compare([runs[r] for r in a], [runs[r] for r in b], gates)
            t.caught_by.update(_count(t, lines, planted=True))
            t.planted, t.caught = t.planted + 1, t.caught + (judge(lines).code == 1)
    return t


def _complete(out: Path, prefix: str, file: str) -> list[Path]:
    """The runs noise_gate.sh finished: a run cut off by a timeout has an empty benchmark.json."""
    runs = sorted(out.glob(f"{prefix}-*/{file}"), key=lambda p: int(p.parent.name.rsplit("-", 1)[1]))
    bench = [p.parent / "benchmark.json" for p in runs]
    return [p for p, b in zip(runs, bench, strict=True) if not b.exists() or b.stat().st_size]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pytest_attnlab.compare.trials", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("out", type=Path, help="noise_gate.sh's folder: identical-N/ and planted-N/ report dirs")
    ap.add_argument("--floor-runs", type=int, default=4, help="identical runs behind each trial's floors. Default: 4")
    ap.add_argument("--file", default="metrics.csv", choices=noise.RUN_FILES, help="run file. Default: metrics.csv")
    ap.add_argument(
        "--ab", type=int, default=3, metavar="N", help="also A/B trials of N runs a side (0: none). Default: 3"
    )
    args = ap.parse_args(argv)
    identical, planted = _complete(args.out, "identical", args.file), _complete(args.out, "planted", args.file)
    floor_runs = min(args.floor_runs, len(identical) - 2)
    if floor_runs < 2 or not planted:
        ap.error(f"{args.out}: {len(identical)} identical and {len(planted)} planted complete runs; need 4 and 1")
    t = tally(identical, planted, THRESHOLDS, floor_runs)
    print(f"{args.file}, one run vs one, floors from {floor_runs} other runs: {t.false_alarms}/{t.pairs} "
          f"identical pairs failed; {t.caught}/{t.planted} planted runs failed\n{t.table()}")  # fmt: skip
    if args.ab and len(identical) >= 2 * args.ab and len(planted) >= args.ab:
        t = ab_tally(identical, planted, THRESHOLDS, args.ab)
        print(f"\n{args.file}, A/B {args.ab} runs vs {args.ab}: {t.false_alarms}/{t.pairs} identical splits failed; "
              f"{t.caught}/{t.planted} planted failed\n{t.table()}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
