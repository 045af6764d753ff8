"""The run's metric rows as the report writers see them, and the summary table built from them.

Rows come from metrics.csv plus any per-worker parts not merged yet (pytest-html writes its report
in a `trylast` sessionfinish that can run before the core merges the parts), so every writer sees
every row exactly once.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_attnlab.reports.csv_writer import read_rows


@dataclass(frozen=True)
class Row:
    nodeid: str
    metric: str
    value: float | None
    unit: str
    threshold: float | None
    model: str
    quant: str
    attention: str
    backend: str
    device: str
    dtype: str
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_csv(cls, d: dict[str, str]) -> Row:
        try:
            extra = json.loads(d.get("extra") or "{}")
        except json.JSONDecodeError:
            extra = {}
        return cls(
            nodeid=d.get("nodeid", ""),
            metric=d.get("metric", ""),
            value=to_float(d.get("value")),
            unit=d.get("unit", ""),
            threshold=to_float(d.get("threshold")),
            model=d.get("model", ""),
            quant=d.get("quant", "") or "none",
            attention=d.get("attention", "") or "sdpa",
            backend=d.get("backend", ""),
            device=d.get("device", ""),
            dtype=d.get("dtype", ""),
            extra=extra if isinstance(extra, dict) else {},
        )

    def get_extra(self, aliases: Sequence[str]) -> Any:
        for key in aliases:
            if key in self.extra:
                return self.extra[key]
        return None


def to_float(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def run_csv_files(report_dir: Path, run_id: str) -> list[Path]:
    """metrics.csv and this run's worker parts that are still on disk."""
    files = [report_dir / "metrics.csv"]
    files += sorted((report_dir / "workers").glob(f"metrics.{run_id}.*.csv"))
    return [f for f in files if f.is_file()]


def load_rows(paths: Iterable[Path]) -> list[Row]:
    return [Row.from_csv(d) for p in paths for d in read_rows(p)]


# -- the summary table -------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A summary column: the first metric name found among `metrics`, reduced with `reduce`."""

    label: str
    metrics: tuple[str, ...]
    reduce: Callable[[list[float]], float]
    higher_is_better: bool


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


#: The metric names each area records, per summary column; a missing metric leaves a blank cell.
SUMMARY_COLUMNS: tuple[Column, ...] = (
    Column("cosine", ("logits_cosine", "cosine"), min, True),
    Column("perplexity", ("perplexity", "ppl"), statistics.fmean, False),
    Column("TTFT", ("ttft",), statistics.fmean, False),
    Column("TPOT", ("tpot",), statistics.fmean, False),
    Column("tok/s", ("decode_tokens_per_s", "decode_tok_s", "tokens_per_s", "e2e_tok_s"), statistics.fmean, True),
    Column("MBU", ("mbu",), statistics.fmean, True),
    Column("peak memory", ("peak_memory", "peak_memory_bytes", "peak_mem"), max, False),
)

#: Keys in a row's `extra` that name its prompt length / batch size / layer.
PROMPT_LEN_KEYS = ("prompt_len", "prompt_length", "prompt_tokens", "input_len")
BATCH_KEYS = ("batch", "batch_size", "bs")
LAYER_KEYS = ("layer", "layer_idx")

GroupKey = tuple[str, str, str]  # model, quant, attention


@dataclass
class SummaryLine:
    model: str
    quant: str
    attention: str
    cells: dict[str, tuple[float, str] | tuple[float, str, float | None] | None]  # label -> (value, unit[, gate])
    passed: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def verdict(self) -> str:
        if self.failed:
            return "fail"
        return "pass" if self.passed else ("skip" if self.skipped else "-")


def summarize(rows: list[Row], outcomes: dict[str, str] | None = None) -> list[SummaryLine]:
    """One line per model x quant x attention, in first-seen order; pass/fail from test outcomes."""
    outcomes = outcomes or {}
    groups: dict[GroupKey, list[Row]] = {}
    for row in rows:
        groups.setdefault((row.model, row.quant, row.attention), []).append(row)
    lines = []
    for (model, quant, attention), group in groups.items():
        cells: dict[str, tuple[float, str] | None] = {}
        for col in SUMMARY_COLUMNS:
            cells[col.label] = None
            for name in col.metrics:
                hits = [r for r in group if r.metric == name]
                values = _finite([r.value for r in hits])  # type: ignore[misc]
                if values:
                    gates = {r.threshold for r in hits}
                    gate = gates.pop() if len(gates) == 1 else None  # one gate for every row, or none shown
                    cells[col.label] = (col.reduce(values), hits[0].unit, gate)
                    break
        line = SummaryLine(model, quant, attention, cells)
        for nodeid in dict.fromkeys(r.nodeid for r in group):
            outcome = outcomes.get(nodeid, "")
            if outcome == "passed":
                line.passed += 1
            elif outcome == "failed":
                line.failed += 1
            elif outcome == "skipped":
                line.skipped += 1
        lines.append(line)
    return lines


def fmt_value(cell: tuple[Any, ...] | None) -> str:
    """The value with its unit; a cell that carries its gate (value, unit, gate) shows it, or "recorded"
    when no gate applied, so a record-only figure never reads as passing a gate beside it."""
    if cell is None:
        return ""
    value, unit = cell[:2]
    if unit == "s" and abs(value) < 1:
        text = f"{value * 1e3:.3g} ms"
    elif unit in ("bytes", "B") and value >= 2**20:
        text = f"{value / 2**20:.1f} MiB"
    else:
        text = f"{value:.4g} {unit}".strip()
    if len(cell) < 3:
        return text
    return f"{text} (gate {cell[2]:.4g})" if cell[2] is not None else f"{text} (recorded)"


def summary_grid(lines: list[SummaryLine]) -> tuple[list[str], list[list[str]]]:
    """Header and body of the model x quant x attention table (shared by report.html and summary.md)."""
    header = ["model", "quant", "attention", *(c.label for c in SUMMARY_COLUMNS), "result"]
    body = [
        [
            ln.model,
            ln.quant,
            ln.attention,
            *(fmt_value(ln.cells[c.label]) for c in SUMMARY_COLUMNS),
            f"{ln.verdict} ({ln.passed}/{ln.passed + ln.failed})",
        ]
        for ln in lines
    ]
    return header, body
