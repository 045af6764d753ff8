"""`python -m pytest_attnlab compare BASE CURRENT [--threshold tpot:+5% ...]`: the regression gate.

Exit status: 0 pass; 1 a metric regressed past its threshold; 2 bad input; 3 nothing was checked
(no gated metric of BASE is in CURRENT: a gate that compared nothing never passes); 4 gated
metrics of BASE are missing from CURRENT (unless --allow-missing), or with --fail-on-missing any.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TextIO

from pytest_attnlab.compare import noise as noise_file
from pytest_attnlab.compare import stats
from pytest_attnlab.compare.loaders import Key, Observed, RunLoadError, load
from pytest_attnlab.compare.thresholds import DEFAULT_THRESHOLDS, Threshold, ThresholdError, pick

#: one-sided confidence the rank test asks for before a change beyond the limit is a regression
DEFAULT_ALPHA = 0.05


@dataclass
class Line:
    """One metric of BASE and CURRENT, judged against its threshold and, where known, its noise floor.

    With per-round samples on both sides the values compared are their medians, and a change beyond
    the limit (the larger of the threshold and the noise floor) is a regression only when a one-sided
    rank test on the rounds gives p <= alpha; with too few rounds for that test (or none kept) the
    change alone decides, as before. The medians, the rank test and the status are computed once.
    """

    key: Key
    base: Observed | None
    current: Observed | None
    threshold: Threshold | None
    floor: float | None = None  # relative noise floor of this metric (noise.json), if measured
    alpha: float = DEFAULT_ALPHA

    @cached_property
    def _tested(self) -> bool:
        assert self.base is not None and self.current is not None
        n, m = len(self.current.samples), len(self.base.samples)
        return n >= 2 and m >= 2 and stats.min_p(n, m) <= self.alpha

    @cached_property
    def values(self) -> tuple[float, float]:
        """(base, current): medians of the rounds when the rank test applies, else the recorded values."""
        assert self.base is not None and self.current is not None
        if self._tested:
            return statistics.median(self.base.samples), statistics.median(self.current.samples)
        return self.base.value, self.current.value

    def limit(self) -> float:
        """The change (in the threshold's unit) that counts: the threshold, or the noise floor if larger."""
        assert self.threshold is not None
        t = self.threshold
        limit = t.amount / 100 if t.relative else t.amount
        if self.floor is not None:
            base = self.values[0]
            limit = max(limit, self.floor if t.relative else self.floor * abs(base))
        return limit

    @cached_property
    def p_value(self) -> float | None:
        if self.base is None or self.current is None or self.threshold is None or not self._tested:
            return None
        b, c = self.base.samples, self.current.samples
        return stats.rank_test_p(c, b) if self.threshold.increase_is_bad else stats.rank_test_p(b, c)

    @cached_property
    def status(self) -> str:
        if self.base is None:
            return "new"
        if self.current is None:
            return "missing"
        if self.threshold is None:
            return "-"
        base, current = self.values
        if math.isnan(base) or math.isnan(current):
            return "nan"
        if not self.threshold.regressed(base, current):
            return "ok"
        if not self.threshold.beyond(base, current, self.limit()):
            return "within noise"
        p = self.p_value
        return "not significant" if p is not None and p > self.alpha else "REGRESSED"

    def change(self) -> str:
        if self.base is None or self.current is None:
            return ""
        base, current = self.values
        if base:
            return f"{(current - base) / abs(base) * 100:+.2f}%"
        return f"{current - base:+.4g}"

    def interval(self) -> str:
        """95 % bootstrap interval of the relative change of medians, when both sides have rounds."""
        if self.base is None or self.current is None or not self._tested:
            return ""
        lo, hi = stats.relative_change_interval(self.base.samples, self.current.samples)
        return f"[{lo * 100:+.1f}, {hi * 100:+.1f}]%"


def compare(
    base: dict[Key, Observed],
    current: dict[Key, Observed],
    thresholds: list[Threshold],
    *,
    noise: dict[Key, float] | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> list[Line]:
    keys = list(dict.fromkeys([*base, *current]))
    noise = noise or {}
    return [Line(k, base.get(k), current.get(k), pick(thresholds, k[1]), noise.get(k), alpha) for k in keys]


#: statuses of a metric that was compared (whatever the verdict)
CHECKED = ("ok", "REGRESSED", "within noise", "not significant")


#: exit status of each failing verdict (0: PASS, 2: bad input)
EXIT_REGRESSED, EXIT_NOTHING_CHECKED, EXIT_MISSING = 1, 3, 4


@dataclass(frozen=True)
class Verdict:
    """What the gate decided, and why: a gate that checked nothing, or lost the metrics it gates, fails."""

    code: int
    reason: str
    regressed: int
    checked: int
    gated_missing: int
    ungated_missing: int
    within_noise: int = 0

    def line(self) -> str:
        head = "PASS" if self.code == 0 else f"FAIL ({self.reason})"
        noise = f" ({self.within_noise} beyond the threshold but within noise)" if self.within_noise else ""
        return (
            f"{head}: {self.regressed} regressed, {self.checked} checked{noise}, {self.gated_missing} gate metrics"
            f" missing (ungated, not compared: {self.ungated_missing} absent from CURRENT)"
        )


def judge(lines: list[Line], *, allow_missing: bool = False, fail_on_missing: bool = False) -> Verdict:
    statuses = [ln.status for ln in lines]
    regressed = statuses.count("REGRESSED")
    checked = sum(s in CHECKED for s in statuses)
    noisy = statuses.count("within noise") + statuses.count("not significant")
    gated = sum(ln.status == "missing" and ln.threshold is not None for ln in lines)
    ungated = sum(ln.status == "missing" and ln.threshold is None for ln in lines)
    if regressed:
        code, reason = EXIT_REGRESSED, "regression"
    elif checked == 0:
        code, reason = EXIT_NOTHING_CHECKED, "nothing checked: no gated metric of BASE is in CURRENT"
    elif gated and not allow_missing:
        code, reason = EXIT_MISSING, "gate metrics of BASE missing from CURRENT (--allow-missing to accept)"
    elif fail_on_missing and ungated:
        code, reason = EXIT_MISSING, "metrics of BASE missing from CURRENT (--fail-on-missing)"
    else:
        code, reason = 0, ""
    return Verdict(code, reason, regressed, checked, gated, ungated, noisy)


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def _value(obs: Observed | None) -> float | None:
    return None if obs is None else obs.value


def print_table(lines: list[Line], out: TextIO, show_all: bool) -> None:
    shown = [ln for ln in lines if show_all or ln.threshold is not None or ln.status in ("missing", "new")]
    rows = [("test", "metric", "base", "current", "change", "95% interval", "p", "floor", "threshold", "status")]
    for ln in shown:
        ctx = "" if not ln.key[2] else _context_suffix(ln.key[2])
        base, cur = ln.values if ln.base and ln.current else (_value(ln.base), _value(ln.current))
        p = ln.p_value
        rows.append((ln.key[0] + ctx, ln.key[1], _fmt(base), _fmt(cur), ln.change(), ln.interval(),
                     "" if p is None else f"{p:.3f}", "" if ln.floor is None else f"{ln.floor * 100:.1f}%",
                     str(ln.threshold or ""), ln.status))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
        if i == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def _context_suffix(ctx_key: str) -> str:
    ctx = json.loads(ctx_key)
    extra = {k: v for k, v in ctx.items() if k not in ("model", "quant", "attention", "backend")}
    return "" if not extra else " [" + ",".join(f"{k}={v}" for k, v in sorted(extra.items())) + "]"


def build_parser() -> argparse.ArgumentParser:
    defaults = " ".join(DEFAULT_THRESHOLDS).replace("%", "%%")  # argparse %-formats help strings
    ap = argparse.ArgumentParser(
        prog="python -m pytest_attnlab compare",
        description="Compare two runs (metrics.csv, a report dir, or pytest-benchmark JSON); exit 1 on a regression.",
    )
    ap.add_argument("base", help="baseline run: metrics.csv, its report dir, or a --benchmark-json file")
    ap.add_argument("current", help="the run to check, same kinds as BASE")
    ap.add_argument(
        "--threshold", "-t", action="append", default=None, metavar="NAME:[+-]N[%]",
        help="regression threshold; repeatable. '+': higher is worse, '-': lower is worse, '%%': relative. "
        f"Default: {defaults}",
    )  # fmt: skip
    ap.add_argument(
        "--allow-missing", action="store_true",
        help="pass although metrics of BASE that a threshold gates are missing from CURRENT (still fails when "
        "nothing at all was checked)",
    )  # fmt: skip
    ap.add_argument(
        "--fail-on-missing", action="store_true", help="also fail when an ungated metric of BASE is missing in CURRENT"
    )
    ap.add_argument(
        "--noise", metavar="PATH",
        help="noise floors from identical runs (python -m pytest_attnlab noise); a change within a metric's floor "
        "is no regression. Default: noise.json beside BASE, if there is one",
    )  # fmt: skip
    ap.add_argument("--no-noise", action="store_true", help="ignore noise.json beside BASE")
    ap.add_argument(
        "--alpha", type=float, default=DEFAULT_ALPHA,
        help="with per-round samples on both sides, a change beyond the limit is a regression only when a "
        "one-sided rank test on the rounds gives p <= ALPHA. Default: %(default)s",
    )  # fmt: skip
    ap.add_argument("--all", action="store_true", help="also list metrics no threshold applies to")
    ap.add_argument("--json", metavar="PATH", help="also write the comparison as JSON")
    return ap


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        thresholds = [Threshold.parse(s) for s in (args.threshold or DEFAULT_THRESHOLDS)]
        base, current = load(args.base), load(args.current)
        noise_path = Path(args.noise) if args.noise else None if args.no_noise else noise_file.beside(args.base)
        floors = noise_file.read(noise_path) if noise_path else {}
    except (ThresholdError, RunLoadError, OSError, json.JSONDecodeError, KeyError) as exc:
        print(f"compare: error: {exc}", file=sys.stderr)
        return 2
    lines = compare(base, current, thresholds, noise=floors, alpha=args.alpha)
    print_table(lines, out, args.all)
    verdict = judge(lines, allow_missing=args.allow_missing, fail_on_missing=args.fail_on_missing)
    used = sum(ln.floor is not None and ln.threshold is not None for ln in lines)
    noise_note = f"; noise floors for {used} gated metrics from {noise_path}" if noise_path else "; no noise floors"
    out.write(f"\n{verdict.line()}, thresholds {' '.join(map(str, thresholds))}{noise_note}\n")
    if args.json:
        doc = [
            {"test": ln.key[0], "metric": ln.key[1], "context": ln.key[2], "base": _value(ln.base),
             "current": _value(ln.current), "threshold": str(ln.threshold or ""), "floor": ln.floor,
             "p": ln.p_value, "status": ln.status}
            for ln in lines
        ]  # fmt: skip
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
    return verdict.code
