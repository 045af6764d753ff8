"""`python -m pytest_attnlab compare BASE CURRENT [--threshold tpot:+5% ...]`: the regression gate.

Exit status: 0 pass; 1 a metric regressed past its threshold; 2 bad input; 3 nothing was checked
(no gated metric of BASE is in CURRENT: a gate that compared nothing never passes); 4 gated
metrics of BASE are missing from CURRENT (unless --allow-missing), or with --fail-on-missing any.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from typing import TextIO

from pytest_attnlab.compare.loaders import Key, RunLoadError, load
from pytest_attnlab.compare.thresholds import DEFAULT_THRESHOLDS, Threshold, ThresholdError, pick


@dataclass
class Line:
    key: Key
    base: float | None
    current: float | None
    threshold: Threshold | None

    @property
    def status(self) -> str:
        if self.base is None:
            return "new"
        if self.current is None:
            return "missing"
        if self.threshold is None:
            return "-"
        if math.isnan(self.base) or math.isnan(self.current):
            return "nan"
        return "REGRESSED" if self.threshold.regressed(self.base, self.current) else "ok"

    def change(self) -> str:
        if self.base is None or self.current is None:
            return ""
        if self.base:
            return f"{(self.current - self.base) / abs(self.base) * 100:+.2f}%"
        return f"{self.current - self.base:+.4g}"


def compare(base: dict[Key, float], current: dict[Key, float], thresholds: list[Threshold]) -> list[Line]:
    keys = list(dict.fromkeys([*base, *current]))
    return [Line(k, base.get(k), current.get(k), pick(thresholds, k[1])) for k in keys]


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

    def line(self) -> str:
        head = "PASS" if self.code == 0 else f"FAIL ({self.reason})"
        return (
            f"{head}: {self.regressed} regressed, {self.checked} checked, {self.gated_missing} gate metrics missing"
            f" (ungated, not compared: {self.ungated_missing} absent from CURRENT)"
        )


def judge(lines: list[Line], *, allow_missing: bool = False, fail_on_missing: bool = False) -> Verdict:
    regressed = sum(ln.status == "REGRESSED" for ln in lines)
    checked = sum(ln.status in ("ok", "REGRESSED") for ln in lines)
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
    return Verdict(code, reason, regressed, checked, gated, ungated)


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def print_table(lines: list[Line], out: TextIO, show_all: bool) -> None:
    shown = [ln for ln in lines if show_all or ln.threshold is not None or ln.status in ("missing", "new")]
    rows = [("test", "metric", "base", "current", "change", "threshold", "status")]
    for ln in shown:
        ctx = "" if not ln.key[2] else _context_suffix(ln.key[2])
        rows.append((ln.key[0] + ctx, ln.key[1], _fmt(ln.base), _fmt(ln.current), ln.change(),
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
    ap.add_argument("--all", action="store_true", help="also list metrics no threshold applies to")
    ap.add_argument("--json", metavar="PATH", help="also write the comparison as JSON")
    return ap


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        thresholds = [Threshold.parse(s) for s in (args.threshold or DEFAULT_THRESHOLDS)]
        base, current = load(args.base), load(args.current)
    except (ThresholdError, RunLoadError, OSError, json.JSONDecodeError) as exc:
        print(f"compare: error: {exc}", file=sys.stderr)
        return 2
    lines = compare(base, current, thresholds)
    print_table(lines, out, args.all)
    verdict = judge(lines, allow_missing=args.allow_missing, fail_on_missing=args.fail_on_missing)
    out.write(f"\n{verdict.line()}, thresholds {' '.join(map(str, thresholds))}\n")
    if args.json:
        doc = [
            {"test": ln.key[0], "metric": ln.key[1], "context": ln.key[2], "base": ln.base,
             "current": ln.current, "threshold": str(ln.threshold or ""), "status": ln.status}
            for ln in lines
        ]  # fmt: skip
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
    return verdict.code
