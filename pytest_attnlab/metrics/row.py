"""The metric row: what every test records, and the CSV columns it maps to."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

#: metrics.csv columns, in order. Documented in README.md ("metrics.csv columns").
COLUMNS = [
    "timestamp",
    "run_id",
    "nodeid",
    "metric",
    "value",
    "unit",
    "threshold",
    "model",
    "quant",
    "attention",
    "backend",
    "device",
    "dtype",
    "extra",
    "samples",
]

#: Context keys that have their own column; anything else goes to the JSON `extra` column.
CONTEXT_KEYS = ("model", "quant", "attention", "backend", "device", "dtype")


@dataclass
class MetricRow:
    nodeid: str
    metric: str
    value: float | int | str | None
    unit: str = ""
    threshold: float | None = None
    context: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    timestamp: float = field(default_factory=time.time)
    #: per-round values behind `value` (a perf metric's rounds), for the noise-aware compare gate
    samples: tuple[float, ...] = ()

    def as_csv(self) -> dict[str, str]:
        extra = {k: v for k, v in self.context.items() if k not in CONTEXT_KEYS}
        return {
            "timestamp": f"{self.timestamp:.3f}",
            "run_id": self.run_id,
            "nodeid": self.nodeid,
            "metric": self.metric,
            "value": _fmt(self.value),
            "unit": self.unit,
            "threshold": _fmt(self.threshold),
            **{k: str(self.context.get(k, "")) for k in CONTEXT_KEYS},
            "extra": json.dumps(extra, sort_keys=True, default=str) if extra else "",
            "samples": " ".join(_fmt(float(x)) for x in self.samples),
        }


def parse_samples(text: str | None) -> tuple[float, ...]:
    """The `samples` column back into floats ('' or a missing column: no samples)."""
    out = []
    for part in (text or "").split():
        try:
            out.append(float(part))
        except ValueError:
            continue
    return tuple(out)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)
