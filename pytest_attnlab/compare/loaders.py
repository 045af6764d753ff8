"""Load one run into {key: value}: a metrics.csv, a report dir, or a pytest-benchmark JSON file."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

Key = tuple[str, str, str]  # nodeid / benchmark fullname, metric, distinguishing extra (JSON) or ""
#: pytest-benchmark stats compared by default (seconds; `ops` is per second).
BENCH_STATS = ("min", "median", "mean", "max", "stddev", "ops")
#: extra-column keys that tell rows of one test and metric apart (layer 3 vs layer 4).
_VOLATILE_EXTRA = ("timestamp",)


class RunLoadError(ValueError):
    pass


def _median(values: dict[Key, list[float]]) -> dict[Key, float]:
    return {k: statistics.median(v) for k, v in values.items()}


def from_csv(path: Path) -> dict[Key, float]:
    values: dict[Key, list[float]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"nodeid", "metric", "value"} <= set(reader.fieldnames):
            raise RunLoadError(f"{path}: not a metrics.csv (needs nodeid, metric, value columns)")
        for row in reader:
            try:
                value = float(row["value"])
            except (TypeError, ValueError):
                continue
            try:
                extra = json.loads(row.get("extra") or "{}")
            except json.JSONDecodeError:
                extra = {}
            extra = {k: v for k, v in extra.items() if k not in _VOLATILE_EXTRA} if isinstance(extra, dict) else {}
            ctx = {k: row.get(k, "") for k in ("model", "quant", "attention", "backend")}
            ctx_key = json.dumps({**ctx, **extra}, sort_keys=True, default=str)
            values.setdefault((row["nodeid"], row["metric"], ctx_key), []).append(value)
    return _median(values)


def from_benchmark_json(path: Path) -> dict[Key, float]:
    """pytest-benchmark --benchmark-json / saved runs: stats per benchmark plus numeric extra_info."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise RunLoadError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    out: dict[Key, float] = {}
    for bench in data["benchmarks"]:
        name = bench.get("fullname") or bench.get("name", "?")
        for stat in BENCH_STATS:
            value = (bench.get("stats") or {}).get(stat)
            if isinstance(value, (int, float)):
                out[(name, stat, "")] = float(value)
        for key, value in (bench.get("extra_info") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[(name, key, "")] = float(value)
    return out


def load(path: str | Path) -> dict[Key, float]:
    """A report dir (its metrics.csv), a .csv file, or a .json pytest-benchmark file."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    if not path.is_file():
        raise RunLoadError(f"{path}: no such file")
    if path.suffix == ".json":
        return from_benchmark_json(path)
    return from_csv(path)
