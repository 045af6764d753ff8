"""`python -m pytest_attnlab noise RUN RUN [RUN ...] -o noise.json`: each metric's noise floor, measured
from identical runs, for the compare gate.

A run's value of a metric wanders from run to run by more than its rounds spread within one run
(host-bound HF decoding on a GPU: TPOT 20.2 / 23.5 / 28.0 ms in three identical runs, while the
rounds of one run agree within a few %). With the values x_1..x_k of k runs (relative to their
mean, sample standard deviation s), the difference of two future runs has standard deviation
s*sqrt(2); the floor is the one-sided bound of it at confidence C, t(C, k-1) * s * sqrt(2). The gate never
calls a change smaller than the floor a regression, so a gate on a metric noisier than its
threshold says "within noise" instead of crying wolf. More runs give a tighter floor.
compare reads noise.json from BASE's folder, or from --noise.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import TextIO

from pytest_attnlab.compare.loaders import Key, Observed, RunLoadError, load
from pytest_attnlab.compare.stats import t_quantile
from pytest_attnlab.reports.layout import METRICS_CSV

FILE_NAME = "noise.json"
#: run files looked for in a report folder, each with its own keys
RUN_FILES = (METRICS_CSV, "benchmark.json")


#: one-sided confidence of each floor: 0.999 keeps a comparison of ~25 gated metrics under 1 false alarm in 20
#: (Bonferroni); on the H200, 0.99 gave 2 false alarms in 30 identical-run pairs, 0.995 and 0.999 none (docs/perf.md)
DEFAULT_CONFIDENCE = 0.999


def floors(
    runs: list[dict[Key, Observed]], confidence: float = DEFAULT_CONFIDENCE
) -> dict[Key, dict[str, float | list[float]]]:
    """Per key present in every run: its relative floor, the relative sd and the run values."""
    if len(runs) < 2:
        raise ValueError("a noise floor needs at least 2 identical runs")
    common = set(runs[0]).intersection(*runs[1:])
    out: dict[Key, dict[str, float | list[float]]] = {}
    for key in sorted(common):
        values = [r[key].value for r in runs]
        mean = statistics.fmean(values)
        if not mean or any(math.isnan(v) for v in values):
            continue
        sd = statistics.stdev(v / mean for v in values)
        floor = t_quantile(confidence, len(runs) - 1) * sd * math.sqrt(2)
        out[key] = {"floor": floor, "sd": sd, "values": values}
    return out


def write(path: Path, runs: dict[str, list[dict[Key, Observed]]], confidence: float = DEFAULT_CONFIDENCE) -> int:
    """noise.json with the floors of each run file kind; returns the number of keys."""
    doc: dict[str, object] = {"version": 1, "confidence": confidence, "floors": []}
    entries = doc["floors"]
    assert isinstance(entries, list)
    for kind, kind_runs in runs.items():
        doc[f"runs_{kind}"] = len(kind_runs)
        for (test, metric, ctx), f in floors(kind_runs, confidence).items():
            entries.append({"file": kind, "test": test, "metric": metric, "context": ctx, **f})
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return len(entries)


def read(path: Path) -> dict[Key, float]:
    """{key: relative floor} from a noise.json."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or "floors" not in doc:
        raise RunLoadError(f"{path}: not a noise file (no 'floors'); make one with python -m pytest_attnlab noise")
    return {(e["test"], e["metric"], e["context"]): float(e["floor"]) for e in doc["floors"]}


def beside(base: str | Path) -> Path | None:
    """noise.json in the folder of BASE (a report dir or a file in it), if there is one."""
    base = Path(base)
    folder = base if base.is_dir() else base.parent
    path = folder / FILE_NAME
    return path if path.is_file() else None


def _run_files(arg: str) -> dict[str, Path]:
    path = Path(arg)
    if path.is_dir():
        found = {name: path / name for name in RUN_FILES if (path / name).is_file()}
        if not found:
            raise RunLoadError(f"{path}: no {' or '.join(RUN_FILES)} in this folder")
        return found
    return {"benchmark.json" if path.suffix == ".json" else METRICS_CSV: path}


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    ap = argparse.ArgumentParser(
        prog="python -m pytest_attnlab noise",
        description="Measure each metric's noise floor from identical runs (report folders, metrics.csv or "
        "benchmark JSON); compare uses it from BASE's folder or --noise.",
    )
    ap.add_argument("runs", nargs="+", metavar="RUN", help="two or more identical runs (more runs: tighter floors)")
    ap.add_argument("-o", "--output", default=FILE_NAME, help="where to write the floors. Default: %(default)s")
    ap.add_argument(
        "--confidence", type=float, default=DEFAULT_CONFIDENCE,
        help="one-sided confidence of each floor: t(confidence, runs-1) * sd * sqrt(2). Default: %(default)s",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if not 0.5 <= args.confidence < 1:
        ap.error(f"--confidence: {args.confidence} must be in [0.5, 1)")
    try:
        per_kind: dict[str, list[dict[Key, Observed]]] = {}
        for arg in args.runs:
            for kind, path in _run_files(arg).items():
                per_kind.setdefault(kind, []).append(load(path))
        per_kind = {k: v for k, v in per_kind.items() if len(v) == len(args.runs)}
        if len(args.runs) < 2 or not per_kind:
            raise RunLoadError("give at least 2 runs of the same kind (report folders, metrics.csv or benchmark JSON)")
        n = write(Path(args.output), per_kind, args.confidence)
    except (RunLoadError, OSError, json.JSONDecodeError) as exc:
        print(f"noise: error: {exc}", file=sys.stderr)
        return 2
    out.write(f"noise: {n} floors from {len(args.runs)} runs ({', '.join(per_kind)}) -> {args.output}\n")
    return 0
