"""Read the perf monitor's timelines (JSON under REPORT_DIR/monitor/) for the report plots.

Accepted shapes (the monitor owns the format; this reader only needs a time axis):
``{"nodeid": ..., "timeline": [{"t": 0.0, "gpu_util": 37, ...}, ...]}`` (perf's `gpu_monitor`;
``"samples"`` works too),
a bare list of such samples, or columns ``{"t": [...], "gpu_util": [...]}``.
"""

from __future__ import annotations

import json
from typing import Any

from pytest_attnlab.reports.layout import ReportLayout, monitor_stem

TIME_KEYS = ("t", "time", "timestamp", "elapsed_s", "ts")


def _columns(data: Any) -> tuple[str | None, dict[str, list[float]]]:
    nodeid = None
    for key in ("timeline", "samples"):
        if isinstance(data, dict) and key in data:
            nodeid, data = data.get("nodeid"), data[key]
            break
    if isinstance(data, dict):
        nodeid = data.pop("nodeid", nodeid) if isinstance(data.get("nodeid"), str) else nodeid
        cols = {k: list(v) for k, v in data.items() if isinstance(v, list)}
    elif isinstance(data, list):
        keys = list(dict.fromkeys(k for s in data if isinstance(s, dict) for k in s))
        cols = {k: [s.get(k) for s in data] for k in keys}
    else:
        return nodeid, {}
    tkey = next((k for k in TIME_KEYS if k in cols), None)
    if tkey is None:
        return nodeid, {}
    out: dict[str, list[float]] = {}
    for k, v in cols.items():
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            out["t" if k == tkey else k] = [float(x) for x in v]
    if "t" in out and out["t"]:
        t0 = out["t"][0]
        out["t"] = [x - t0 for x in out["t"]]
    return nodeid, out


def load_timelines(layout: ReportLayout, nodeid: str) -> list[tuple[str, dict[str, list[float]]]]:
    """(file name, columns) for every monitor JSON that belongs to `nodeid`."""
    folder = layout.monitor_dir
    if not folder.is_dir():
        return []
    stem = monitor_stem(nodeid)
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            owner, cols = _columns(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
        if cols and (owner == nodeid or path.stem == stem or path.stem.startswith(stem + ".")):
            found.append((path.name, cols))
    return found
