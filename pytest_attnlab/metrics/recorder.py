"""The per-test recorder behind the `metrics` fixture."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_attnlab.metrics import tolerance
from pytest_attnlab.metrics.row import MetricRow


@dataclass
class Table:
    """A small table attached to a test: shown as an extra in report.html."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    highlight_row: int | None = None


@dataclass
class MetricRecorder:
    """Records named metrics for one test; each row is handed to `sink` (the CSV) at once.

    `context` starts from the run's settings (model, device, dtype, quant, attention) and can be
    amended per test with `update_context` or per row with keyword arguments.
    """

    nodeid: str
    sink: Callable[[MetricRow], None]
    context: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    rows: list[MetricRow] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    #: the test's own regression tolerances by metric name (`attnlab_gate` marker, an experiment's `gate:`)
    tolerances: dict[str, str] = field(default_factory=dict)

    def record(
        self,
        metric: str,
        value: float | int | str | None,
        unit: str = "",
        *,
        threshold: float | None = None,
        samples: Sequence[float] = (),
        **context: Any,
    ) -> MetricRow:
        if hasattr(value, "item"):  # 0-d tensors and numpy scalars
            value = value.item()
        row = MetricRow(
            nodeid=self.nodeid,
            metric=metric,
            value=value,
            unit=unit,
            threshold=threshold,
            context={**self.context, **context},
            run_id=self.run_id,
            samples=tuple(float(x) for x in samples),
            tolerance="" if threshold is not None else tolerance.pick(self.tolerances, metric),
        )
        self.rows.append(row)
        self.sink(row)
        return row

    def update_context(self, **context: Any) -> None:
        self.context.update(context)

    def table(
        self,
        title: str,
        rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
        columns: Sequence[str] | None = None,
        highlight_row: int | None = None,
    ) -> Table:
        """Attach a table (list of dicts, or rows plus `columns`) to this test's report entry."""
        if rows and isinstance(rows[0], Mapping):
            columns = list(columns or rows[0].keys())
            body = [[r.get(c, "") for c in columns] for r in rows]  # type: ignore[union-attr]
        else:
            body = [list(r) for r in rows]
            columns = list(columns or [])
        table = Table(title, list(columns), body, highlight_row)
        self.tables.append(table)
        return table
