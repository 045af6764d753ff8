"""The summary table built from the run's metric rows (MetricRow, read back from metrics.csv)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_attnlab.metrics.row import MetricRow, to_float
from pytest_attnlab.registry import BASELINE_ATTENTION, BASELINE_QUANT


@dataclass(frozen=True)
class Column:
    """A summary column: the first metric name found among `metrics`, reduced with `reduce`."""

    label: str
    metrics: tuple[str, ...]
    reduce: Callable[[list[float]], float]
    higher_is_better: bool


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


#: Columns of the model x quant x attention table; a missing metric leaves a blank cell. Latency and
#: throughput are per decode path and cell, so they live in PERF_COLUMNS (the perf table) instead.
SUMMARY_COLUMNS: tuple[Column, ...] = (
    Column("cosine", ("logits_cosine", "cosine"), min, True),
    Column("perplexity", ("perplexity", "ppl"), statistics.fmean, False),
    Column("peak memory", ("peak_memory", "peak_memory_bytes", "peak_mem"), max, False),
)

#: Columns of the perf table: one line per model x quant x attention x decode path x cell.
PERF_COLUMNS: tuple[Column, ...] = (
    Column("TTFT", ("ttft",), statistics.fmean, False),
    Column("TPOT", ("tpot",), statistics.fmean, False),
    Column(
        "decode tok/s", ("decode_tok_s", "decode_tokens_per_s", "tokens_per_s", "e2e_tok_s"), statistics.fmean, True
    ),
    Column("MBU", ("mbu",), statistics.fmean, True),
)

#: Keys in a row's `extra` that name its prompt length / batch size / layer.
PROMPT_LEN_KEYS = ("prompt_len", "prompt_length", "prompt_tokens", "input_len")
BATCH_KEYS = ("batch", "batch_size", "bs")
NEW_TOKENS_KEYS = ("new_tokens", "max_new_tokens", "output_len")
LAYER_KEYS = ("layer", "layer_idx")

GroupKey = tuple[str, str, str]  # model, quant, attention


@dataclass(kw_only=True)
class Tally:
    """Outcomes of the tests behind a table line: any failed or errored test makes the line fail."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def verdict(self) -> str:
        if self.failed:
            return "fail"
        return "pass" if self.passed else ("skip" if self.skipped else "-")

    @property
    def result(self) -> str:
        return f"{self.verdict} ({self.passed}/{self.passed + self.failed})"

    def count(self, nodeids: Iterable[str], outcomes: dict[str, str]) -> None:
        for nodeid in dict.fromkeys(nodeids):
            outcome = outcomes.get(nodeid, "").replace("xfailed", "skipped")
            if outcome in ("passed", "failed", "skipped"):
                setattr(self, outcome, getattr(self, outcome) + 1)


@dataclass
class SummaryLine(Tally):
    model: str
    quant: str
    attention: str
    cells: dict[str, tuple[float, str] | tuple[float, str, float | None] | None]  # label -> (value, unit[, gate])


def context_key(context: dict[str, str] | None) -> GroupKey:
    """The table line of a test from its model / quant / attention context ("?" for an unknown model)."""
    context = context or {}
    return (
        context.get("model") or "?",
        context.get("quant") or BASELINE_QUANT,
        context.get("attention") or BASELINE_ATTENTION,
    )


def failed_without_rows(rows: Iterable[MetricRow], outcomes: dict[str, str]) -> list[str]:
    """Failed or errored tests that recorded no row (they raised first): still owed a failing line."""
    recorded = {r.nodeid for r in rows}
    return [n for n, o in outcomes.items() if o == "failed" and n not in recorded]


def value_spread(rows: Sequence[MetricRow]) -> tuple[float, float] | None:
    """min–max over the rows' per-round samples; without samples, over the rows' values (two or more)."""
    samples = [v for r in rows for v in r.samples]
    values = samples or (_finite([r.value for r in rows]) if len(rows) > 1 else [])  # type: ignore[misc]
    return (min(values), max(values)) if values else None


def extra_text(row: MetricRow, keys: Sequence[str]) -> str:
    """A cell parameter from `extra` as text ("16", not "16.0"); "" when the row does not carry it."""
    value = row.get_extra(keys)
    number = to_float(value)
    return f"{number:g}" if number is not None else ("" if value is None else str(value))


def cell(hits: list[MetricRow], reduce: Callable[[list[float]], float]) -> tuple[float, str, float | None] | None:
    """(reduced value, unit, gate) of the rows of one metric; the gate only when every row has the same one."""
    values = _finite([r.value for r in hits])  # type: ignore[misc]
    if not values:
        return None
    gates = {r.threshold for r in hits}
    return reduce(values), hits[0].unit, gates.pop() if len(gates) == 1 else None


def first_cell(group: list[MetricRow], col: Column) -> tuple[float, str, float | None] | None:
    """The column's cell from the first of its metric names that has a finite value in `group`."""
    for name in col.metrics:
        found = cell([r for r in group if r.metric == name], col.reduce)
        if found is not None:
            return found
    return None


def summarize(
    rows: list[MetricRow], outcomes: dict[str, str] | None = None, contexts: dict[str, dict[str, str]] | None = None
) -> list[SummaryLine]:
    """One line per model x quant x attention, failing lines first, else in first-seen order.

    Pass/fail comes from the test outcomes of the tests that recorded rows in the line, plus the
    failed tests that recorded none, placed by `contexts` (nodeid -> model/quant/attention), so a
    test that raised before recording still fails its line."""
    outcomes = outcomes or {}
    groups: dict[GroupKey, list[MetricRow]] = {}
    for row in rows:
        groups.setdefault((row.model, row.quant, row.attention), []).append(row)
    orphans: dict[GroupKey, list[str]] = {}
    for nodeid in failed_without_rows(rows, outcomes):
        orphans.setdefault(context_key((contexts or {}).get(nodeid)), []).append(nodeid)
    lines = []
    for key in [*groups, *(k for k in orphans if k not in groups)]:
        group = groups.get(key, [])
        line = SummaryLine(*key, cells={col.label: first_cell(group, col) for col in SUMMARY_COLUMNS})
        line.count([*(r.nodeid for r in group), *orphans.get(key, [])], outcomes)
        lines.append(line)
    return sorted(lines, key=lambda ln: ln.verdict != "fail")


def _scale(value: float, unit: str) -> tuple[float, str, str]:
    """(factor, unit shown, format spec) for a value: seconds under 1 as ms, bytes from 1 MiB as MiB."""
    if unit == "s" and abs(value) < 1:
        return 1e3, "ms", ".3g"
    if unit in ("bytes", "B") and value >= 2**20:
        return 2**-20, "MiB", ".1f"
    return 1.0, unit, ".4g"


def fmt_number(value: float, unit: str, spread: tuple[float, float] | None = None) -> str:
    """`value unit`, and `(lo–hi)` in the same scale when a spread is given."""
    factor, shown, spec = _scale(value, unit)
    text = f"{value * factor:{spec}} {shown}".strip()
    if spread is not None:
        text += f" ({spread[0] * factor:{spec}}–{spread[1] * factor:{spec}})"
    return text


def fmt_value(cell: tuple[Any, ...] | None) -> str:
    """The value with its unit; a cell that carries its gate (value, unit, gate) shows it, or "recorded"
    when no gate applied, so a record-only figure never reads as passing a gate beside it."""
    if cell is None:
        return ""
    text = fmt_number(*cell[:2])
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
            ln.result,
        ]
        for ln in lines
    ]
    return header, body
