"""Which machine made a run: GPU model, driver, CUDA and torch, read from the run's own files, so compare
can refuse to gate a run against one from another machine or software stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: the fields that must agree for timings to be comparable, in the order a mismatch names them
FIELDS = ("gpu", "driver", "cuda", "torch")


def _from_benchmark(doc: dict[str, Any]) -> dict[str, str]:
    info = (doc.get("machine_info") or {}).get("attnlab") or {}  # pytest_benchmark_update_machine_info
    return {f: str(info[f]) for f in FIELDS if info.get(f) not in (None, "")}


def _from_experiment(doc: dict[str, Any]) -> dict[str, str]:
    env = doc.get("environment") or {}
    gpus, out = env.get("gpus") or [], {}
    if gpus:
        out["gpu"], out["driver"] = str(gpus[0].get("name", "")), str(gpus[0].get("driver", ""))
    if (env.get("torch") or {}).get("cuda"):
        out["cuda"] = str(env["torch"]["cuda"])
    if (env.get("packages") or {}).get("torch"):
        out["torch"] = str(env["packages"]["torch"])
    return {k: v for k, v in out.items() if v}


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def identity(run: str | Path) -> dict[str, str]:
    """{field: value} of what is known about the machine of a run (a report dir, metrics.csv or benchmark JSON):
    pytest-benchmark's machine_info in the JSON (or benchmark.json beside metrics.csv), else the environment
    block of the report's experiments/*.json. {} when the run recorded none."""
    path = Path(run)
    folder = path if path.is_dir() else path.parent
    found: dict[str, str] = {}
    benches = [path] if path.suffix == ".json" else [folder / "benchmark.json"]
    for bench in benches:
        found.update(_from_benchmark(_read(bench)))
    for exp in sorted((folder / "experiments").glob("*.json")):
        found = {**_from_experiment(_read(exp)), **found}
    return found


def differences(base: dict[str, str], current: dict[str, str]) -> list[str]:
    """'gpu: NVIDIA H200 (BASE) vs NVIDIA H100 80GB HBM3 (CURRENT)' for each field both know and differ in."""
    return [f"{f}: {base[f]} (BASE) vs {current[f]} (CURRENT)" for f in FIELDS
            if f in base and f in current and base[f] != current[f]]  # fmt: skip
