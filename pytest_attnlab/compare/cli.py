"""`python -m pytest_attnlab compare`: the regression gate (see build_parser's epilog for the exit statuses)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TextIO

from pytest_attnlab.compare import machine
from pytest_attnlab.compare import noise as noise_file
from pytest_attnlab.compare.ab import ab_compare
from pytest_attnlab.compare.lines import DEFAULT_ALPHA, Line, Verdict, compare, judge
from pytest_attnlab.compare.loaders import RunLoadError, load
from pytest_attnlab.compare.noise_model import DEFAULT_CONFIDENCE
from pytest_attnlab.compare.output import markdown, notes, print_table
from pytest_attnlab.compare.thresholds import DEFAULT_THRESHOLDS, Threshold, ThresholdError
from pytest_attnlab.compare.variant import VARIANT_KEYS
from pytest_attnlab.reports.layout import METRICS_CSV

#: exit statuses decided before any metric is compared (lines.py has the others)
EXIT_MISMATCH, EXIT_NO_BASELINE = 7, 8

__all__ = ["Line", "Verdict", "compare", "judge", "main"]

EPILOG = f"""\
usage, one run against one run (BASE's noise floors from noise.json beside it, or --noise):
  python -m pytest_attnlab compare reports/main reports/pr
usage, A/B: several runs of the base commit and of the head commit, made interleaved on one machine
(ABAB...); each run is one value per cell (the median of its rounds), the floors come from these runs:
  python -m pytest_attnlab compare --ab base-1 base-2 base-3 --vs head-1 head-2 head-3
a cell whose fast-path variant changed (one row a side, differing only in the variant keys:
{", ".join(VARIANT_KEYS)})
reads "variant changed" with what changed and both values: not gated (another variant measures another thing),
not missing, counted in the status line.
exit status: 0 pass; 1 a metric regressed; 2 bad input; 3 nothing checked, or an empty run; 4 gated metrics
of BASE missing from CURRENT; 5 a gated metric is NaN or inf; 6 --strict and a metric is UNGATED or its variant
changed; 7 BASE and CURRENT come from different GPUs, drivers, CUDA or torch (--allow-mismatch); 8 no baseline
(--bootstrap)."""


def build_parser() -> argparse.ArgumentParser:
    defaults = " ".join(DEFAULT_THRESHOLDS).replace("%", "%%")  # argparse %-formats help strings
    ap = argparse.ArgumentParser(
        prog="python -m pytest_attnlab compare",
        usage="%(prog)s [options] BASE CURRENT\n       %(prog)s [options] --ab BASE_RUN... --vs HEAD_RUN...",
        description="Compare runs (metrics.csv, a report dir, or pytest-benchmark JSON) metric by metric; a change "
        "past its threshold and past its noise floor fails. A metric whose floor exceeds its threshold is UNGATED: "
        "named with the smallest change it detects, counted in the status line.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    ap.add_argument("runs", nargs="*", metavar="BASE CURRENT", help="baseline run and the run to check")
    ap.add_argument("--ab", nargs="+", metavar="BASE_RUN", help="A/B mode: runs of the base commit (2 or more)")
    ap.add_argument("--vs", nargs="+", metavar="HEAD_RUN", help="A/B mode: runs of the head commit (2 or more)")
    ap.add_argument(
        "--threshold", "-t", action="append", default=None, metavar="NAME:[+-]N[%]",
        help="regression threshold; repeatable. '+': higher is worse, '-': lower is worse, '%%': relative. "
        f"Default: {defaults}",
    )  # fmt: skip
    ap.add_argument(
        "--strict", action="store_true",
        help="fail (exit 6) when a gated metric is UNGATED, or was not compared because its variant changed",
    )  # fmt: skip
    ap.add_argument("--bootstrap", action="store_true",
                    help="a missing BASE passes, saying so (the first run on main makes the baseline)")  # fmt: skip
    ap.add_argument("--allow-mismatch", action="store_true",
                    help="compare runs from different GPU models, drivers, CUDA or torch versions")  # fmt: skip
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
        help="noise floors from identical runs (python -m pytest_attnlab noise). Default: noise.json beside BASE, "
        "if there is one; with --ab the floors come from the runs themselves",
    )  # fmt: skip
    ap.add_argument("--no-noise", action="store_true", help="ignore noise.json beside BASE")
    ap.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                    help="--ab: one-sided confidence of each cell's floor. Default: %(default)s")  # fmt: skip
    ap.add_argument(
        "--alpha", type=float, default=DEFAULT_ALPHA,
        help="with rounds (or --ab runs) on both sides, a change beyond the limit is a regression only when a "
        "one-sided Mann-Whitney test gives p <= ALPHA. Default: %(default)s",
    )  # fmt: skip
    ap.add_argument("--all", action="store_true", help="also list metrics no threshold applies to")
    ap.add_argument("--json", metavar="PATH", help="also write the comparison as JSON")
    ap.add_argument(
        "--markdown", metavar="FILE", help="also write the comparison as Markdown ($GITHUB_STEP_SUMMARY too, if set)"
    )
    return ap


def _missing(path: str) -> bool:
    p = Path(path)
    return not (p.is_file() or (p / METRICS_CSV).is_file())


def _lines(args: argparse.Namespace, thresholds: list[Threshold]) -> tuple[list[Line], str]:
    """The gate's lines, and where their noise floors came from."""
    if args.ab:
        base_runs, head_runs = [load(p) for p in args.ab], [load(p) for p in args.vs]
        lines = ab_compare(base_runs, head_runs, thresholds, confidence=args.confidence, alpha=args.alpha)
        return lines, f"A/B: {len(args.ab)} BASE runs vs {len(args.vs)} HEAD runs, floors from their own spread"
    base_arg = args.runs[0]
    noise_path = Path(args.noise) if args.noise else None if args.no_noise else noise_file.beside(base_arg)
    noise = noise_file.read(noise_path) if noise_path else {}
    note = f"noise floors from {noise_path}" if noise_path else "no noise floors (python -m pytest_attnlab noise)"
    return compare(load(base_arg), load(args.runs[1]), thresholds, noise=noise, alpha=args.alpha), note


def _machines(bases: list[str], currents: list[str], allow: bool) -> tuple[list[str], str]:
    """(differences that refuse the comparison, a note on what was checked)."""
    idents = [machine.identity(p) for p in [*bases, *currents]]
    diffs = list(dict.fromkeys(d for other in idents[1:] for d in machine.differences(idents[0], other)))
    if not all(idents):
        return [], "machine not recorded by every run: like-for-like not checked"
    if diffs and allow:
        return [], "different machines allowed (--allow-mismatch): " + "; ".join(diffs)
    return diffs, "same " + ", ".join(f for f in machine.FIELDS if f in idents[0])


def _write_markdown(lines: list[Line], verdict: Verdict, args: argparse.Namespace) -> None:
    what = f"{len(args.vs)} runs vs {len(args.ab)}" if args.ab else f"{args.runs[1]} vs {args.runs[0]}"
    text = markdown(lines, verdict, f"Performance gate: {what}")
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(text)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    ap = build_parser()
    args = ap.parse_args(argv)
    if bool(args.ab) != bool(args.vs) or (args.ab and args.runs) or (not args.ab and len(args.runs) != 2):
        ap.error("give BASE CURRENT, or --ab BASE_RUN... --vs HEAD_RUN... (not both)")
    if args.ab and (len(args.ab) < 2 or len(args.vs) < 2 or args.noise):
        ap.error("--ab and --vs take 2 or more runs each, and their floors come from those runs (no --noise)")
    if not 0.5 <= args.confidence < 1:
        ap.error(f"--confidence: {args.confidence} must be in [0.5, 1)")
    bases, currents = (args.ab, args.vs) if args.ab else (args.runs[:1], args.runs[1:])
    absent = [p for p in bases if _missing(p)]
    if absent:
        if args.bootstrap:
            out.write(f"BOOTSTRAP: no baseline at {', '.join(absent)}; nothing compared. Store CURRENT "
                      f"({', '.join(currents)}) as the baseline.\n")  # fmt: skip
            return 0
        out.write(f"FAIL (missing baseline): no run at {', '.join(absent)} (--bootstrap lets a first run pass)\n")
        return EXIT_NO_BASELINE
    diffs, machine_note = _machines(bases, currents, args.allow_mismatch)
    if diffs:
        out.write(f"FAIL (different machines, --allow-mismatch to compare anyway): {'; '.join(diffs)}\n")
        return EXIT_MISMATCH
    try:
        thresholds = [Threshold.parse(s) for s in (args.threshold or DEFAULT_THRESHOLDS)]
        lines, noise_note = _lines(args, thresholds)
    except (ThresholdError, RunLoadError, ValueError, OSError, json.JSONDecodeError, KeyError) as exc:
        print(f"compare: error: {exc}", file=sys.stderr)
        return 2
    print_table(lines, out, args.all)
    verdict = judge(lines, allow_missing=args.allow_missing, fail_on_missing=args.fail_on_missing, strict=args.strict)
    for note in notes(lines):
        out.write(note + "\n")
    out.write(f"{machine_note}; {noise_note}\n")
    out.write(f"\n{verdict.line()}, thresholds {' '.join(map(str, thresholds))}\n")
    if args.json:
        doc = [
            {"test": ln.key[0], "metric": ln.key[1], "context": ln.key[2], "base": ln.base and ln.base.value,
             "current": ln.current and ln.current.value, "threshold": str(ln.threshold or ""), "floor": ln.floor,
             "detects": ln.noise and ln.noise.detect, "p": ln.p_value, "status": ln.status,
             "variant": {k: [old, new] for k, old, new in ln.variant_change}}
            for ln in lines
        ]  # fmt: skip
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
    _write_markdown(lines, verdict, args)
    return verdict.code
