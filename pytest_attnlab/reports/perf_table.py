"""The perf table: one line per model x quant x attention x decode path x (batch, prompt, new tokens).

Latency and throughput only compare inside one cell: a line that mixed the hf and fast paths or
several prompt lengths would average figures that measure different things.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from pytest_attnlab.metrics.row import MetricRow
from pytest_attnlab.reports.rows import (
    BATCH_KEYS,
    NEW_TOKENS_KEYS,
    PERF_COLUMNS,
    PROMPT_LEN_KEYS,
    Column,
    Tally,
    cell,
    extra_text,
    fmt_number,
    value_spread,
)

PERF_METRICS = frozenset(name for col in PERF_COLUMNS for name in col.metrics)
Variant = tuple[str, str, str]  # model, quant, attention
Cell = tuple[str, str, str, str]  # decode path, batch, prompt length, new tokens


@dataclass(frozen=True)
class PerfCell:
    value: float
    unit: str
    gate: float | None
    spread: tuple[float, float] | None  # min–max over rounds (or over the rows of the cell)

    @property
    def text(self) -> str:
        text = fmt_number(self.value, self.unit, self.spread)
        return f"{text} (gate {self.gate:.4g})" if self.gate is not None else text


@dataclass
class PerfLine(Tally):
    variant: Variant
    cell: Cell
    cells: dict[str, PerfCell | None]
    rounds: int = 0  # per-round samples behind the figures; 0 when the CSV has none

    @property
    def where(self) -> str:
        """The cell in a few characters: 'hf b1 p64 n8'."""
        path, batch, prompt, new = self.cell
        parts = [path, *(f"{p}{v}" for p, v in (("b", batch), ("p", prompt), ("n", new)) if v)]
        return " ".join(parts)


def cell_of(row: MetricRow) -> Cell:
    return (
        row.backend or "-",
        extra_text(row, BATCH_KEYS),
        extra_text(row, PROMPT_LEN_KEYS),
        extra_text(row, NEW_TOKENS_KEYS),
    )


def _perf_cell(group: list[MetricRow], col: Column) -> PerfCell | None:
    """The column's cell from the first of its metric names with a finite value, with its spread."""
    for hits in ([r for r in group if r.metric == name] for name in col.metrics):
        if (found := cell(hits, col.reduce)) is not None:
            return PerfCell(*found, value_spread(hits))
    return None


def perf_lines(rows: list[MetricRow], outcomes: dict[str, str] | None = None) -> list[PerfLine]:
    """The perf rows grouped per variant and cell, failing lines first, else in first-seen order."""
    groups: dict[tuple[Variant, Cell], list[MetricRow]] = {}
    for row in rows:
        if row.metric in PERF_METRICS:
            groups.setdefault(((row.model, row.quant, row.attention), cell_of(row)), []).append(row)
    lines = []
    for (variant, where), group in groups.items():
        cells = {col.label: _perf_cell(group, col) for col in PERF_COLUMNS}
        line = PerfLine(variant, where, cells, rounds=max(len(r.samples) for r in group))
        line.count((r.nodeid for r in group), outcomes or {})
        lines.append(line)
    return sorted(lines, key=lambda ln: ln.verdict != "fail")


def perf_grid(lines: list[PerfLine]) -> tuple[list[str], list[list[str]]]:
    """Header and body of the perf table (shared by report.html and summary.md)."""
    header = ["model", "quant", "attention", "path", "batch", "prompt", "new tokens"]
    header += [*(c.label for c in PERF_COLUMNS), "rounds", "result"]
    body = [
        [
            *ln.variant,
            *ln.cell,
            *(c.text if (c := ln.cells[col.label]) else "" for col in PERF_COLUMNS),
            str(ln.rounds or ""),
            ln.result,
        ]
        for ln in lines
    ]
    return header, body


SPREAD_NOTE = (
    "One line per decode path and cell; each figure is the mean, (min–max) over the rounds, or over the "
    "rows of the cell when no per-round samples were recorded."
)


def _value(line: PerfLine, label: str) -> float:
    return line.cells[label].value  # type: ignore[union-attr]


def _column_conclusion(col: Column, lines: list[PerfLine], baseline: tuple[str, str]) -> str | None:
    by_cell: dict[Cell, list[PerfLine]] = {}
    for ln in lines:
        if ln.cells[col.label] is not None:
            by_cell.setdefault(ln.cell, []).append(ln)
    compared = {c: lns for c, lns in by_cell.items() if len({ln.variant for ln in lns}) > 1}
    if not compared:
        return None
    pick = max if col.higher_is_better else min
    best = {c: pick(lns, key=lambda ln: _value(ln, col.label)) for c, lns in compared.items()}
    (model, quant, attention), wins = Counter(b.variant for b in best.values()).most_common(1)[0]
    text = f"{col.label}: best {quant}/{attention} on {model} in {wins} of {len(compared)} cells compared"
    gaps = []
    for c, winner in best.items():
        base = next((ln for ln in compared[c] if ln.variant[1:] == baseline), None)
        if base is not None and winner is not base and _value(base, col.label):
            delta = (_value(winner, col.label) - _value(base, col.label)) / abs(_value(base, col.label)) * 100
            gaps.append((delta, winner, base))
    if gaps:
        delta, winner, base = max(gaps, key=lambda g: abs(g[0]))
        unit = winner.cells[col.label].unit  # type: ignore[union-attr]
        text += (
            f"; largest gap at {winner.where}: {fmt_number(_value(winner, col.label), unit)} vs "
            f"{'/'.join(baseline)} {fmt_number(_value(base, col.label), unit)} ({delta:+.1f}%)"
        )
    return text + "."


def perf_conclusions(lines: list[PerfLine], baseline: tuple[str, str]) -> list[str]:
    """Per column, the variant best in most cells, comparing only lines of the same path and cell."""
    return [text for col in PERF_COLUMNS if (text := _column_conclusion(col, lines, baseline))]
