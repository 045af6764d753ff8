"""`python -m pytest_attnlab noise-tally OUT`: the compare gate judged per cell over .ci/gpu's noise stage.

OUT holds K identical perf runs (identical-1..K) and M runs with a planted decode slowdown
(planted-1..M), each its own pytest process, as .ci/gpu's noise stage makes them. Every pair of
identical runs is one false-alarm trial, every (identical BASE, planted CURRENT) one detection trial,
as main's baseline gate compares: one run against one, with the noise floors of `--floor-runs` other
identical runs. With `--ab N`, also as a pull request is gated: N identical runs against N others, and
against N planted runs (compare --ab). Every trial goes through compare's own command line (`--json`).

Per gated cell (test, metric) the table gives false alarms / pairs and detections / planted trials;
the issue's bar is at most 1 false alarm in 20 pairs and 19 detections in 20 of a slowdown of twice
the threshold. A cell whose floor exceeds its threshold is UNGATED and named with the smallest change
it can detect. Exit 1 when a gated cell misses the bar, 2 on bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, TextIO

from pytest_attnlab.compare import cli
from pytest_attnlab.compare import noise as noise_cli
from pytest_attnlab.compare.lines import VARIANT_CHANGED
from pytest_attnlab.compare.thresholds import DEFAULT_THRESHOLDS, Threshold

#: compare's statuses of a cell the gate failed on (a NaN in a gated metric fails, as a regression does)
FLAGGED = ("REGRESSED", "not finite", "nan")
#: metrics the planted decode slowdown moves (perf/plant.py holds every decode step; TTFT and prefill are untouched)
PLANTED_MOVES = ("tpot", "decode_tok_s", "e2e_tok_s", "tok_s", "tokens_per_s", "e2e")
#: the bar of issue 27: false alarms per identical pair, and detections per planted trial
MAX_FALSE_ALARM_RATE, MIN_DETECTION_RATE = 1 / 20, 19 / 20
#: trials the bar is stated over: fewer cannot show 1 in 20
MIN_TRIALS = 20
RUN_FILES = ("metrics.csv", "benchmark.json")
#: compare's statuses of a line it did not judge: not a trial of its cell
NOT_JUDGED = ("new", "missing", "-", VARIANT_CHANGED)
#: compare's exit statuses that refuse a trial rather than judge it
REFUSED = {2: "bad input", 7: "different machines", 8: "no baseline"}

#: a command's `main(argv) -> exit status`, as `python -m pytest_attnlab COMMAND` runs it
Command = Callable[[list[str]], int]


@dataclass
class Cell:
    """One (run file, test, metric) over all trials."""

    pairs: int = 0
    false_alarms: int = 0
    planted: int = 0
    detected: int = 0
    ungated_pairs: int = 0  # identical pairs in which the cell's floor exceeded its threshold
    ungated_planted: int = 0  # planted trials in which it did
    detects: list[float] = field(default_factory=list)  # the smallest change it detects, in those trials
    threshold: str = ""

    @property
    def gated(self) -> bool:
        """Gated in every trial: a cell UNGATED in some trials is named so, not counted as gated."""
        return not self.detects

    def verdict(self, moved: bool) -> str:
        if self.detects:
            trials = self.ungated_pairs + self.ungated_planted
            some = "" if trials == self.pairs + self.planted else f" in {trials}/{self.pairs + self.planted} trials"
            return f"UNGATED{some}: detects >= {statistics.median(self.detects) * 100:.0f} %"
        alarms_ok = self.false_alarms <= MAX_FALSE_ALARM_RATE * self.pairs
        caught_ok = not moved or self.detected >= MIN_DETECTION_RATE * self.planted
        if not (alarms_ok and caught_ok):
            return "MISSES the bar"
        if self.pairs < MIN_TRIALS or (moved and self.planted < MIN_TRIALS):
            return f"too few trials for the bar ({MIN_TRIALS} pairs and {MIN_TRIALS} planted)"
        return "meets the bar"


@dataclass
class Tally:
    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # incomplete runs left out

    def cell(self, kind: str, test: str, metric: str) -> Cell:
        return self.cells.setdefault((kind, test, metric), Cell())

    def misses(self) -> list[tuple[str, str, str]]:
        return [k for k, c in self.cells.items() if c.gated and c.verdict(_moved(k[2])).startswith("MISSES")]


def _moved(metric: str) -> bool:
    """The planted slowdown moves this metric (benchmark JSON's unit suffix aside: tpot_ms is tpot)."""
    return metric in PLANTED_MOVES or metric.removesuffix("_ms") in PLANTED_MOVES


def complete_runs(out: Path, prefix: str, kind: str) -> tuple[list[Path], list[str]]:
    """The `kind` files of OUT/prefix-N in N order, and the runs cut off (an empty benchmark.json: pytest-benchmark
    opens it at startup and writes it at the end)."""
    found = sorted(out.glob(f"{prefix}-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    cut = [p for p in found if (p / "benchmark.json").is_file() and not (p / "benchmark.json").stat().st_size]
    done = [p / kind for p in found if p not in cut and (p / kind).is_file() and (p / kind).stat().st_size]
    return done, [p.name for p in cut]


def _ungated(line: dict[str, Any]) -> float | None:
    """The smallest relative change an UNGATED line detects, None for a gated one. compare's own verdict
    (status UNGATED, `detects`) where it gives one, else its floor above a relative threshold."""
    if str(line.get("status", "")).upper().startswith("UNGATED"):
        detects = line.get("detects", line.get("floor"))
        return float(detects) if isinstance(detects, (int, float)) else math.nan
    floor, spec = line.get("floor"), str(line.get("threshold") or "")
    if "detects" in line or not isinstance(floor, (int, float)) or not spec:
        return None  # compare that says UNGATED itself: a blind cell's REGRESSED (beyond its floor) is a catch
    t = Threshold.parse(spec)
    return float(floor) if t.relative and floor > t.amount / 100 else None


def _others(runs: list[Path], exclude: set[Path], k: int, n: int) -> list[Path]:
    """k identical runs other than `exclude`, rotating with the trial number n."""
    rest = [r for r in runs if r not in exclude]
    start = n % len(rest) if rest else 0
    return (rest[start:] + rest[:start])[:k]


def _compare(compare: Command, args: list[str], thresholds: list[str], tmp: Path) -> list[dict[str, Any]]:
    """compare's JSON lines for one trial, through its command line."""
    args = [*args, *(f"--threshold={t}" for t in thresholds), "--json", str(tmp / "compare.json")]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        rc = compare(args)
    if rc in REFUSED:
        raise RuntimeError(f"compare {' '.join(args)}: exit {rc} ({REFUSED[rc]})\n{printed.getvalue()[-500:]}")
    return json.loads((tmp / "compare.json").read_text())


def _trial(
    compare: Command, noise: Command, base: Path, cur: Path, floors: list[Path], thresholds: list[str], tmp: Path
) -> list[dict[str, Any]]:
    """BASE -> CURRENT, one run against one, with the floors of the `floors` runs."""
    args = [str(base), str(cur), "--no-noise"]
    if floors:
        with contextlib.redirect_stdout(io.StringIO()):
            rc = noise([*map(str, floors), "-o", str(tmp / "noise.json")])
        if rc != 0:
            raise RuntimeError(f"noise {' '.join(map(str, floors))}: exit {rc}")
        args[2:] = ["--noise", str(tmp / "noise.json")]
    return _compare(compare, args, thresholds, tmp)


def _spread(trials: list[Any], cap: int) -> list[Any]:
    """At most `cap` trials, evenly spread over the list (not the first few, which share their first run)."""
    if len(trials) <= cap:
        return trials
    return [trials[i * len(trials) // cap] for i in range(cap)]


def _ab_trials(identical: list[Path], planted: list[Path], n: int, cap: int) -> tuple[list[Any], list[Any]]:
    """A/B trials of n runs a side: (identical A, other identical B) and (identical A, planted B)."""
    pairs = [(a, b) for a in combinations(identical, n) for b in combinations([r for r in identical if r not in a], n)]
    caught = [(a, b) for a in combinations(identical, n) for b in combinations(planted, n)]
    return _spread(pairs, cap), _spread(caught, cap)


def _record(t: Tally, kind: str, lines: list[dict[str, Any]], *, planted: bool) -> None:
    for line in lines:
        if not line.get("threshold") or line.get("status") in NOT_JUDGED:
            continue
        cell = t.cell(kind, str(line["test"]), str(line["metric"]))
        cell.threshold = str(line["threshold"])
        if planted:
            cell.planted += 1
        else:
            cell.pairs += 1
        detects = _ungated(line)
        if detects is not None:
            cell.ungated_planted += planted
            cell.ungated_pairs += not planted
            cell.detects.append(detects)
            continue
        flagged = str(line.get("status")) in FLAGGED
        if planted:
            cell.detected += flagged
        else:
            cell.false_alarms += flagged


def tally(
    out: Path,
    thresholds: list[str],
    floor_runs: int,
    *,
    ab: int = 0,
    ab_cap: int = 40,
    compare: Command | None = None,
    noise: Command | None = None,
) -> Tally:
    """Run every trial of OUT for both run files: one run against one (BASE's floors from `floor_runs` other
    identical runs, as a main baseline), and with `ab` > 0 also A/B trials of `ab` runs a side (compare --ab, as
    a pull request), at most `ab_cap` of each kind."""
    compare, noise = compare or cli.main, noise or noise_cli.main
    t = Tally()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for kind in RUN_FILES:
            identical, cut = complete_runs(out, "identical", kind)
            planted, cut_planted = complete_runs(out, "planted", kind)
            t.skipped = sorted({*t.skipped, *cut, *cut_planted})
            if not identical:
                continue  # runs without this file (a metrics.csv-only record)
            if len(identical) < 2 + floor_runs:
                raise ValueError(f"{out}: {len(identical)} complete identical runs with {kind}; need {2 + floor_runs}")
            mode = f"{kind}, 1 vs 1"
            for n, (a, b) in enumerate(combinations(identical, 2)):
                floors = _others(identical, {a, b}, floor_runs, n)
                _record(t, mode, _trial(compare, noise, a, b, floors, thresholds, tmp), planted=False)
            for n, (a, p) in enumerate((a, p) for p in planted for a in identical):
                floors = _others(identical, {a}, floor_runs, n)
                _record(t, mode, _trial(compare, noise, a, p, floors, thresholds, tmp), planted=True)
            if not ab:
                continue
            if len(identical) < 2 * ab or len(planted) < ab:
                raise ValueError(f"{out}: A/B of {ab} runs a side needs {2 * ab} identical and {ab} planted runs")
            mode = f"{kind}, A/B {ab} vs {ab}"
            pairs, caught = _ab_trials(identical, planted, ab, ab_cap)
            for trials, is_planted in ((pairs, False), (caught, True)):
                for a, b in trials:
                    args = ["--ab", *map(str, a), "--vs", *map(str, b)]
                    _record(t, mode, _compare(compare, args, thresholds, tmp), planted=is_planted)
    if not t.cells:
        raise ValueError(f"{out}: no identical-N run with {' or '.join(RUN_FILES)}")
    return t


def _cell_name(test: str) -> str:
    """The test's name and parameters, without its file."""
    return test.rsplit("::", 1)[-1]


def print_table(t: Tally, out: TextIO) -> None:
    rows = [("runs", "cell", "metric", "threshold", "false alarms", "detections", "verdict")]
    for (kind, test, metric), c in sorted(t.cells.items()):
        moved = _moved(metric)
        caught = f"{c.detected}/{c.planted - c.ungated_planted}" if moved else "not planted"
        alarms = f"{c.false_alarms}/{c.pairs - c.ungated_pairs}"
        rows.append((kind, _cell_name(test), metric, c.threshold, alarms, caught, c.verdict(moved)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
        if i == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")
    gated = [c for c in t.cells.values() if c.gated]
    misses = t.misses()
    out.write(
        f"\n{len(gated)} gated cells, {len(t.cells) - len(gated)} UNGATED, {len(misses)} missing the bar "
        f"(<= 1 false alarm in 20 identical pairs, >= 19 of 20 planted slowdowns caught)\n"
    )
    if t.skipped:
        out.write(f"left out, cut off before their benchmark.json: {' '.join(t.skipped)}\n")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m pytest_attnlab noise-tally",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
    )
    ap.add_argument("out", type=Path, help="the noise stage's folder: identical-N/ and planted-N/ runs")
    ap.add_argument(
        "--threshold", "-t", action="append", default=None, metavar="NAME:[+-]N[%]",
        help="compare's thresholds; repeatable. Default: compare's defaults",
    )  # fmt: skip
    ap.add_argument(
        "--floor-runs", type=int, default=3, metavar="N",
        help="identical runs behind each trial's noise floors (0: none). Default: %(default)s",
    )  # fmt: skip
    ap.add_argument(
        "--ab", type=int, default=0, metavar="N",
        help="also A/B trials of N runs a side (compare --ab, as gpu.yml gates a pull request; 0: none). "
        "Default: %(default)s",
    )  # fmt: skip
    ap.add_argument("--output", "-o", type=Path, metavar="FILE", help="also write the table to FILE")
    return ap


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    thresholds = args.threshold or list(DEFAULT_THRESHOLDS)
    try:
        t = tally(args.out, thresholds, args.floor_runs, ab=args.ab)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"noise-tally: error: {exc}", file=sys.stderr)
        return 2
    table = io.StringIO()
    print_table(t, table)
    out.write(table.getvalue())
    if args.output:
        args.output.write_text(table.getvalue(), encoding="utf-8")
    return 1 if t.misses() else 0
