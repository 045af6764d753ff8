"""`python -m pytest_attnlab noise RUN RUN ...`: each metric's noise (noise_model.py) from identical runs, written
as noise.json for `compare` (which reads it from BASE's folder or --noise)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from pytest_attnlab.compare.loaders import Key, Observed, RunLoadError, load
from pytest_attnlab.compare.noise_model import DEFAULT_CONFIDENCE, Noise, estimate, level
from pytest_attnlab.reports.layout import METRICS_CSV

FILE_NAME = "noise.json"
#: run files looked for in a report folder, each with its own keys
RUN_FILES = (METRICS_CSV, "benchmark.json")
#: fewer identical runs than this leave most floors above a 5 % threshold (docs/reports.md)
ENOUGH_RUNS = 5


def floors(runs: list[dict[Key, Observed]], confidence: float = DEFAULT_CONFIDENCE) -> dict[Key, Noise]:
    """The noise of each key present in every run (one run against one run)."""
    if len(runs) < 2:
        raise ValueError("a noise floor needs at least 2 identical runs")
    return estimate([runs], confidence=confidence)


def write(path: Path, runs: dict[str, list[dict[Key, Observed]]], confidence: float = DEFAULT_CONFIDENCE) -> int:
    """noise.json with the noise of each run file kind; returns the number of keys."""
    entries: list[dict[str, object]] = []
    doc: dict[str, object] = {"version": 2, "confidence": confidence, "floors": entries}
    for kind, kind_runs in runs.items():
        doc[f"runs_{kind}"] = len(kind_runs)
        for key, n in floors(kind_runs, confidence).items():
            values = [level(r[key]) for r in kind_runs]
            entries.append({"file": kind, "test": key[0], "metric": key[1], "context": key[2], **n.as_dict(),
                            "values": values})  # fmt: skip
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return len(entries)


def read(path: Path) -> dict[Key, Noise]:
    """{key: noise} from a noise.json (version 1 files: sd and the number of runs behind it)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or "floors" not in doc:
        raise RunLoadError(f"{path}: not a noise file (no 'floors'); make one with python -m pytest_attnlab noise")
    confidence = float(doc.get("confidence", DEFAULT_CONFIDENCE))
    out = {}
    for e in doc["floors"]:
        df = int(e.get("df") or len(e["values"]) - 1)
        out[(e["test"], e["metric"], e["context"])] = Noise(float(e["sd"]), df, int(e.get("cells", 1)), confidence)
    return out


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
        description="Measure each metric's noise from identical runs (report folders, metrics.csv or benchmark "
        "JSON): a run's value is the median of its rounds; cells of one path differing only in sizes pool their "
        "variance where their spreads agree; floor = t(confidence, df) * sd * sqrt(2). compare uses it from "
        "BASE's folder or --noise.",
    )
    ap.add_argument(
        "runs", nargs="+", metavar="RUN",
        help=f"two or more identical runs, each its own process ({ENOUGH_RUNS} or more: tighter floors)",
    )  # fmt: skip
    ap.add_argument("-o", "--output", default=FILE_NAME, help="where to write the floors. Default: %(default)s")
    ap.add_argument(
        "--confidence", type=float, default=DEFAULT_CONFIDENCE,
        help="one-sided confidence of each floor (per cell). Default: %(default)s",
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
    few = f" (fewer than {ENOUGH_RUNS}: most floors will be wide)" if len(args.runs) < ENOUGH_RUNS else ""
    out.write(f"noise: {n} floors from {len(args.runs)} runs{few} ({', '.join(per_kind)}) -> {args.output}\n")
    return 0
