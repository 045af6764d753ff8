"""Load one run into {key: value}: a metrics.csv, a report dir, or a pytest-benchmark JSON file."""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from pytest_attnlab.metrics.row import MetricRow
from pytest_attnlab.reports.layout import METRICS_CSV

Key = tuple[str, str, str]  # nodeid / benchmark fullname, metric, distinguishing extra (JSON) or ""
#: pytest-benchmark stats compared by default (seconds; `ops` is per second).
BENCH_STATS = ("min", "median", "mean", "max", "stddev", "ops")
#: extra-column keys that tell rows of one test and metric apart (layer 3 vs layer 4).
_VOLATILE_EXTRA = ("timestamp",)


class RunLoadError(ValueError):
    pass


@dataclass(frozen=True)
class Observed:
    """One metric of one run: its value and, where the run kept them, the per-round samples behind it."""

    value: float
    samples: tuple[float, ...] = ()
    tolerance: str = ""  # the test's own tolerance of this metric ("+10%", the threshold column), if any


def _gather(
    values: dict[Key, list[float]], samples: dict[Key, list[float]], tolerances: dict[Key, str] | None = None
) -> dict[Key, Observed]:
    tol = tolerances or {}
    return {k: Observed(statistics.median(v), tuple(samples.get(k, ())), tol.get(k, "")) for k, v in values.items()}


def from_csv(path: Path) -> dict[Key, Observed]:
    values: dict[Key, list[float]] = {}
    samples: dict[Key, list[float]] = {}
    tolerances: dict[Key, str] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"nodeid", "metric", "value"} <= set(reader.fieldnames):
            raise RunLoadError(f"{path}: not a metrics.csv (needs nodeid, metric, value columns)")
        for row in (MetricRow.from_csv(d, finite_samples=False) for d in reader):
            if row.value is None:
                continue
            extra = {k: v for k, v in row.extra.items() if k not in _VOLATILE_EXTRA}
            ctx = {k: row.context[k] for k in ("model", "quant", "attention", "backend")}  # as written, no defaults
            key = (row.nodeid, row.metric, json.dumps({**ctx, **extra}, sort_keys=True, default=str))
            values.setdefault(key, []).append(row.value)  # type: ignore[arg-type]
            samples.setdefault(key, []).extend(row.samples)
            if row.tolerance:
                tolerances[key] = row.tolerance
    return _gather(values, samples, tolerances)


#: pytest-benchmark stats whose samples are the round times in `stats.data` (--benchmark-save-data)
_ROUND_STATS = ("min", "median", "mean", "max")


def from_benchmark_json(path: Path) -> dict[Key, Observed]:
    """pytest-benchmark --benchmark-json / saved runs: stats per benchmark plus numeric extra_info; the
    round times (`stats.data`) and extra_info["samples"] (the plugin's per-round metrics) are samples."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise RunLoadError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    out: dict[Key, Observed] = {}
    for bench in data["benchmarks"]:
        name = bench.get("fullname") or bench.get("name", "?")
        stats = bench.get("stats") or {}
        rounds = tuple(float(x) for x in stats.get("data") or ())
        for stat in BENCH_STATS:
            value = stats.get(stat)
            if isinstance(value, (int, float)):
                out[(name, stat, "")] = Observed(float(value), rounds if stat in _ROUND_STATS else ())
        extra = bench.get("extra_info") or {}
        per_round = extra.get("samples") if isinstance(extra.get("samples"), dict) else {}
        for key, value in extra.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[(name, key, "")] = Observed(float(value), tuple(map(float, per_round.get(key, ()))))
    return out


def load(path: str | Path) -> dict[Key, Observed]:
    """A report dir (its metrics.csv), a .csv file, or a .json pytest-benchmark file."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_CSV
    if not path.is_file():
        raise RunLoadError(f"{path}: no such file")
    if path.suffix == ".json":
        return from_benchmark_json(path)
    return from_csv(path)
