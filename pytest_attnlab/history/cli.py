"""`python -m pytest_attnlab history RUNS... -o history.html`: every gated metric over many runs, across GPUs
and decode paths, in one offline page. Exit status: 0 page written; 2 bad input."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

from pytest_attnlab.compare.thresholds import ThresholdError
from pytest_attnlab.history import page
from pytest_attnlab.history.runs import HistoryInputError, load_all
from pytest_attnlab.history.series import build, thresholds
from pytest_attnlab.history.tables import ROOFLINE, newest_changes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pytest_attnlab history",
        description="Draw every gated metric over many runs, one series per GPU model x decode path, with each "
        "run's min-max band and a mark where a series changed beyond its noise (compare's statistics). Above "
        "the plots: the newest run against the one before, the GPUs ranked per cell by their share of the "
        "roofline, and the engines side by side. The page is one offline HTML file.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="a report folder, a metrics.csv, a pytest-benchmark JSON file, or a pytest-benchmark "
                        "storage folder (.benchmarks/: every run JSON below it); runs are ordered by time")  # fmt: skip
    p.add_argument("-o", "--output", type=Path, default=Path("history.html"), help="Default: %(default)s")
    p.add_argument("--threshold", action="append", metavar="NAME:+N%",
                   help="a gated metric and its tolerance, as compare takes it (repeatable; default: compare's "
                        "tpot:+5%% ttft:+10%% tok_s:-5%% cosine:-0.01 perplexity:+2%%)")  # fmt: skip
    p.add_argument("--metric", action="append", metavar="NAME",
                   help="draw only these metrics (repeatable; default: every metric a threshold gates)")
    p.add_argument("--markdown", type=Path, metavar="FILE",
                   help="also write the newest run against the one before as Markdown, regressions first (a CI "
                        "job summary); appended to $GITHUB_STEP_SUMMARY when that is set")  # fmt: skip
    p.add_argument("--engines", type=Path, metavar="FILE",
                   help="also write the engines side by side as Markdown (docs/backends.md's table)")
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        gates = thresholds(args.threshold)
        runs = load_all(args.runs)
    except (HistoryInputError, ThresholdError) as exc:
        print(f"history: {exc}", file=sys.stderr)
        return 2
    series = build(runs, gates, set(args.metric) if args.metric else None)
    roofline = build(runs, gates, set(ROOFLINE))
    changes = newest_changes(series, gates)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page.render(runs, series, changes, roofline), encoding="utf-8")
    if args.markdown:
        text = page.markdown(runs, changes)
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text, encoding="utf-8")
        if os.environ.get("GITHUB_STEP_SUMMARY"):
            with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as fh:
                fh.write(text)
    if args.engines:
        args.engines.write_text(page.engines_markdown(runs), encoding="utf-8")
    marks = [(s, p) for s in series for p in s.marks]
    regressed = [c for c in changes if c.line.status == "REGRESSED"]
    print(f"history: {len(runs)} runs, {len(series)} series, {len(marks)} changes beyond noise, "
          f"{len(regressed)} regressed in the newest run -> {args.output}", file=out)  # fmt: skip
    for s, p in marks:
        print(f"  {p.mark} at {p.run.name or p.run.label}: {s.metric} {s.cell} ({s.label}) {p.change}", file=out)
    return 0
