"""The runs a history page draws: report folders, metrics.csv files, pytest-benchmark JSON files and
pytest-benchmark storage folders (`.benchmarks/`, `--benchmark-autosave`), each read into one `Run`:
when it ran, at which commit, on which GPU, and every metric of every cell with its per-round samples.

A cell is a test and its parameters without the decode path; the path (hf, fast, vllm, ...) and the
GPU model make the series a cell's value belongs to, so one page holds several GPUs and engines.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pytest_attnlab.metrics.row import MetricRow
from pytest_attnlab.reports.layout import METRICS_CSV

#: a benchmark JSON's extra_info suffix -> the factor to metrics.csv's SI unit (ms -> s; % stays %)
_SUFFIX_SCALE = {"_ms": 1e-3, "_pct": 1.0}
_PARAMS = re.compile(r"^(?P<test>[^\[]+)\[(?P<params>[^\]]*)\]$")


class HistoryInputError(ValueError):
    pass


@dataclass
class Value:
    """One metric of one cell in one run: the run's value and the per-round samples behind it."""

    value: float
    samples: tuple[float, ...] = ()
    unit: str = ""
    tolerance: str = ""  # the test's own tolerance of this metric (@pytest.mark.attnlab_gate), if it recorded one

    @property
    def band(self) -> tuple[float, float]:
        """The run's min-max over its rounds (the value itself when it kept none)."""
        return (min(self.samples), max(self.samples)) if self.samples else (self.value, self.value)


@dataclass
class Run:
    label: str
    source: Path
    time: float  # seconds since the epoch
    commit: str = ""
    gpu: str = ""  # GPU model, or "cpu"
    #: (cell, metric, path) -> Value
    values: dict[tuple[str, str, str], Value] = field(default_factory=dict)

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.time).strftime("%Y-%m-%d %H:%M") if self.time else "?"

    @property
    def name(self) -> str:
        """The x-axis label: date and short commit where known."""
        return f"{self.when} {self.commit[:7]}".strip()


def cell_of(nodeid: str, path: str) -> str:
    """The test id without its decode-path parameter, so one cell gathers every path and GPU."""
    m = _PARAMS.match(nodeid)
    if not m or not path:
        return nodeid
    params = [p for p in m["params"].split("-") if p != path]
    return f"{m['test']}[{'-'.join(params)}]" if params else m["test"]


def _machine(info: dict) -> tuple[str, str]:
    """(GPU model, driver) of pytest-benchmark's machine_info: the plugin's own block (`attnlab`, perf/machine.py)
    or top-level keys; "cpu" for a CPU run."""
    info = {**info, **(info.get("attnlab") or {})}
    gpu = info.get("gpu") or ("cpu" if str(info.get("device", "")).startswith("cpu") else "")
    return str(gpu), str(info.get("driver", ""))


def _epoch(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def from_benchmark_json(path: Path, label: str | None = None) -> Run:
    """A pytest-benchmark JSON (--benchmark-json, or one file of its storage): extra_info's numbers are the
    plugin's metrics (ms and % suffixes mapped back to metrics.csv's names), `stats` the round times."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HistoryInputError(f"{path}: not readable as JSON ({exc})") from exc
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise HistoryInputError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    machine = data.get("machine_info") or {}
    commit = (data.get("commit_info") or {}).get("id") or ""
    run = Run(label or path.stem, path, _epoch(data.get("datetime")), str(commit), _machine(machine)[0])
    for bench in data["benchmarks"]:
        extra = bench.get("extra_info") or {}
        path_name = str(extra.get("path") or extra.get("backend") or "")
        cell = cell_of(bench.get("fullname") or bench.get("name", "?"), path_name)
        per_round = extra.get("samples") if isinstance(extra.get("samples"), dict) else {}
        for key, value in extra.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            metric, scale = key, 1.0
            for suffix, factor in _SUFFIX_SCALE.items():
                if key.endswith(suffix):
                    metric, scale = key[: -len(suffix)], factor
            samples = tuple(float(x) * scale for x in per_round.get(key, ()))
            run.values[(cell, metric, path_name)] = Value(float(value) * scale, samples)
        if not run.gpu and extra.get("gpu"):
            run.gpu = str(extra["gpu"])
    return run


def from_csv(path: Path, label: str | None = None) -> Run:
    """A metrics.csv; in a report folder, its benchmark.json (machine_info) or experiment JSON (environment)
    tells the GPU and the commit."""
    rows: dict[tuple[str, str, str], list[MetricRow]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"nodeid", "metric", "value"} <= set(reader.fieldnames):
                raise HistoryInputError(f"{path}: not a metrics.csv (needs nodeid, metric, value columns)")
            for row in (MetricRow.from_csv(d, finite_samples=False) for d in reader):
                if isinstance(row.value, (int, float)):
                    rows.setdefault((cell_of(row.nodeid, row.backend), row.metric, row.backend), []).append(row)
    except OSError as exc:
        raise HistoryInputError(f"{path}: {exc}") from exc
    stamps = [r.timestamp for rs in rows.values() for r in rs if r.timestamp]
    run = Run(label or path.parent.name, path, min(stamps) if stamps else 0.0)
    devices = {r.device for rs in rows.values() for r in rs}
    for key, group in rows.items():
        values = [float(r.value) for r in group]  # type: ignore[arg-type]
        samples = tuple(s for r in group for s in r.samples)
        tol = next((r.tolerance for r in group if r.tolerance), "")
        run.values[key] = Value(statistics.median(values), samples, group[0].unit, tol)
    run.gpu, run.commit = _beside(path.parent)
    if not run.gpu:
        run.gpu = "cpu" if devices <= {"cpu", ""} else ",".join(sorted(devices))
    return run


def _beside(folder: Path) -> tuple[str, str]:
    """GPU model and commit of a report folder: benchmark.json's machine_info, else an experiment JSON's
    environment (summary.md's source)."""
    bench = folder / "benchmark.json"
    if bench.is_file():
        try:
            data = json.loads(bench.read_text(encoding="utf-8"))
            gpu = _machine(data.get("machine_info") or {})[0]
            commit = (data.get("commit_info") or {}).get("id") or ""
            if gpu:
                return gpu, str(commit)
        except (OSError, json.JSONDecodeError):
            pass
    for exp in sorted((folder / "experiments").glob("*.json")):
        try:
            env = json.loads(exp.read_text(encoding="utf-8")).get("environment") or {}
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        gpus = env.get("gpus") or []
        return (gpus[0].get("name", "") if gpus else ""), str(env.get("git_sha", ""))
    return "", ""


def _is_benchmark_json(path: Path) -> bool:
    try:
        return '"benchmarks"' in path.read_text(encoding="utf-8", errors="replace")[:1_000_000]
    except OSError:
        return False


def load(arg: str | Path) -> list[Run]:
    """One RUNS argument: a report folder (its metrics.csv), a metrics.csv, a benchmark JSON, or a folder of
    benchmark JSON files (pytest-benchmark's storage: every *.json below it is a run)."""
    path = Path(arg)
    if path.is_dir():
        if (path / METRICS_CSV).is_file():
            return [from_csv(path / METRICS_CSV)]
        files = [f for f in sorted(path.rglob("*.json")) if _is_benchmark_json(f)]
        if not files:
            raise HistoryInputError(f"{path}: neither a report folder (no {METRICS_CSV}) nor a pytest-benchmark "
                                    "storage folder (no benchmark *.json below it)")  # fmt: skip
        return [from_benchmark_json(f, f"{f.parent.name}/{f.stem}") for f in files]
    if not path.is_file():
        raise HistoryInputError(f"{path}: no such file or folder")
    if path.suffix == ".json":
        return [from_benchmark_json(path)]
    return [from_csv(path)]


def load_all(args: list[str | Path]) -> list[Run]:
    """Every run of every argument, oldest first (a run without a time keeps its argument order)."""
    runs = [run for arg in args for run in load(arg)]
    order = {id(r): n for n, r in enumerate(runs)}
    return sorted(runs, key=lambda r: (r.time if r.time and not math.isnan(r.time) else 0.0, order[id(r)]))
