"""The metric row: what every test records, what every report reads, and the CSV columns it maps to."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_attnlab.metrics.tolerance import TOLERANCE
from pytest_attnlab.registry import BASELINE_ATTENTION, BASELINE_QUANT

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
    """One recorded metric. The recorder builds it; the writer, the reports and the compare gate read it
    (from metrics.csv through `from_csv`). The context columns read as they do in the CSV."""

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
    #: the test's own regression tolerance of this metric ("+10%": metrics/tolerance.py), written in the
    #: threshold column where a row has no numeric threshold; compare and history gate by it
    tolerance: str = ""

    def _column(self, key: str, default: str = "") -> str:
        return str(self.context.get(key, "")) or default

    model = property(lambda self: self._column("model"))
    quant = property(lambda self: self._column("quant", BASELINE_QUANT))
    attention = property(lambda self: self._column("attention", BASELINE_ATTENTION))
    backend = property(lambda self: self._column("backend"))
    device = property(lambda self: self._column("device"))
    dtype = property(lambda self: self._column("dtype"))

    @property
    def extra(self) -> dict[str, Any]:
        """The context beyond the column keys (the CSV's JSON `extra` column)."""
        return {k: v for k, v in self.context.items() if k not in CONTEXT_KEYS}

    def get_extra(self, aliases: Sequence[str]) -> Any:
        extra = self.extra
        return next((extra[k] for k in aliases if k in extra), None)

    def as_csv(self) -> dict[str, str]:
        extra = self.extra
        return {
            "timestamp": f"{self.timestamp:.3f}",
            "run_id": self.run_id,
            "nodeid": self.nodeid,
            "metric": self.metric,
            "value": _fmt(self.value),
            "unit": self.unit,
            "threshold": self.tolerance if self.tolerance and self.threshold is None else _fmt(self.threshold),
            **{k: str(self.context.get(k, "")) for k in CONTEXT_KEYS},
            "extra": json.dumps(extra, sort_keys=True, default=str) if extra else "",
            "samples": " ".join(_fmt(float(x)) for x in self.samples),
        }

    @classmethod
    def from_csv(cls, d: dict[str, str], *, finite_samples: bool = True) -> MetricRow:
        """A metrics.csv line read back: numbers parsed (None when blank or not a number); the reports drop
        non-finite samples, the compare gate (`finite_samples=False`) keeps every round as written."""
        try:
            extra = json.loads(d.get("extra") or "{}")
        except json.JSONDecodeError:
            extra = {}
        context = {**(extra if isinstance(extra, dict) else {}), **{k: d.get(k) or "" for k in CONTEXT_KEYS}}
        return cls(
            nodeid=d.get("nodeid", ""),
            metric=d.get("metric", ""),
            value=to_float(d.get("value")),
            unit=d.get("unit", ""),
            threshold=to_float(d.get("threshold")),
            tolerance=(d.get("threshold") or "").strip() if TOLERANCE.match((d.get("threshold") or "").strip()) else "",
            context=context,
            run_id=d.get("run_id", ""),
            timestamp=to_float(d.get("timestamp")) or 0.0,
            samples=tuple(v for v in parse_samples(d.get("samples")) if math.isfinite(v) or not finite_samples),
        )

    def as_dict(self) -> dict[str, Any]:
        """The row as the experiment JSON lists it: the columns, with `extra` as an object."""
        fields = ("nodeid", "metric", "value", "unit", "threshold", *CONTEXT_KEYS, "extra", "samples")
        return {k: getattr(self, k) for k in fields}


def to_float(value: Any) -> float | None:
    """A CSV cell or `extra` value as a number; None when blank or not a number."""
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def parse_samples(text: str | None) -> tuple[float, ...]:
    """The `samples` column back into floats ('' or a missing column: no samples; bad tokens dropped)."""
    values = (to_float(tok) for tok in (text or "").split())
    return tuple(v for v in values if v is not None)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)
