"""The gate's self-test in the report: planted bugs (mutants) kept apart from the user's own results.

A planted-bug test records figures of a model that is broken on purpose; in the results table or the
quality plot its "pass" reads as if the bug passed. So every report splits the rows first
(`partition`) and shows the mutants in their own section: "K of N planted bugs killed", each with
its figures and verdict.

Convention for any mutant class (quantizer, decode-time, ...), in the test that plants the bug:

    metrics.update_context(selftest="cache-position-off-by-one")    # the mutant's name
    ...                                                              # the gate's figures, as usual
    metrics.record("selftest_killed", float(killed), threshold=1.0)  # 1 killed, 0 survived

(`record_verdict` does both.) Rows recorded before this convention are recognised by a quant or
attention named `mutant:NAME` (suites/correctness/test_quant_gate_kill.py). Without a
`selftest_killed` row, the verdict is the test's outcome: a planted-bug test passes when the gate
caught its bug, fails when it did not, and a skipped one did not run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_attnlab.metrics.row import MetricRow
from pytest_attnlab.reports.rows import fmt_number

SELFTEST_KEY = "selftest"  # context / extra key naming the planted bug
KILLED_METRIC = "selftest_killed"  # 1.0 killed, 0.0 survived
MUTANT_PREFIX = "mutant:"  # quant or attention name of a planted bug (the older tag)
#: Metrics about the self-test as a whole (no one mutant): kept out of the user's table too.
AGGREGATE_METRICS = ("mutant_kill_rate", "selftest_kill_rate")
#: Context keys besides the column keys that a section line shows as the bug's description.
DESCRIPTION_KEYS = ("bug", "description")
#: Direction of the gate checks whose figures a line shows (others show "value (gate T)", unjudged).
CHECK_OPS: dict[str, str] = {
    "logits_cosine": ">=",
    "cosine": ">=",
    "min_layer_cosine": ">=",
    "greedy_agreement": ">=",
    "local_error_ratio": "<=",
    "next_token_kl": "<=",
    "top1_flip_rate": "<=",
    "max_abs_diff": "<=",
    "relative_error": "<=",
}
#: Figures without a gate that a line shows too: the layer a localisation test named.
UNGATED_FIGURES = ("first_divergent_layer",)
#: Keys of a per-layer row (a layer's local error): the line shows the gate's summary figures only.
PER_LAYER_KEYS = ("layer", "layer_idx")

NOTE = (
    "Bugs planted on purpose to prove the gates, kept apart from the results. A bug is killed when its gate"
    " fails on it (its selftest_killed row, else its test passed); its figures are those of the broken model."
)
VERDICTS = ("survived", "not run", "below resolution", "killed")  # section order: what needs attention first


def selftest_name(context: Mapping[str, Any] | None) -> str | None:
    """The planted bug a row (its context) or a test's context belongs to; None for the user's own."""
    context = context or {}
    tagged = context.get(SELFTEST_KEY)
    if tagged not in (None, ""):
        return str(tagged)
    for key in ("quant", "attention"):
        value = str(context.get(key) or "")
        if value.startswith(MUTANT_PREFIX):
            return value.removeprefix(MUTANT_PREFIX)
    return None


def is_selftest(row: MetricRow) -> bool:
    """The one test of whether a row belongs to the gate's self-test (never the user's results)."""
    return row.metric in AGGREGATE_METRICS or selftest_name(row.context) is not None


def record_verdict(metrics: Any, name: str, killed: bool) -> None:
    """Tag the test's rows with the planted bug `name` and record whether the gate killed it."""
    metrics.update_context(**{SELFTEST_KEY: name})
    metrics.record(KILLED_METRIC, float(killed), threshold=1.0)


@dataclass(frozen=True)
class Figure:
    """One gate figure of a mutant: value, threshold and, where known, whether it crossed the gate."""

    metric: str
    value: float
    unit: str
    threshold: float | None

    @property
    def crossed(self) -> bool | None:
        op = CHECK_OPS.get(self.metric)
        if op is None or self.threshold is None:
            return None
        return not (self.value >= self.threshold if op == ">=" else self.value <= self.threshold)

    def describe(self) -> str:
        value = fmt_number(self.value, self.unit)
        if self.threshold is None:
            return f"{self.metric} {value}"
        gate, op = f"{self.threshold:.4g}", CHECK_OPS.get(self.metric)
        if op is None:
            return f"{self.metric} {value} (gate {gate})"
        return f"{self.metric} {value} {op} {gate}: {'CROSSED' if self.crossed else 'within'}"


@dataclass
class SelftestLine:
    """One planted bug: its verdict, where the verdict comes from, and its gate figures."""

    name: str
    verdict: str  # killed / survived / below resolution / not run
    source: str  # "selftest_killed" or the test outcome the verdict was read from
    nodeids: tuple[str, ...]
    description: str = ""
    figures: tuple[Figure, ...] = ()

    def figures_text(self) -> str:
        return "; ".join(f.describe() for f in self.figures) or "-"


@dataclass
class Partition:
    """The run split in two: the user's rows and outcomes, and the self-test's lines."""

    rows: list[MetricRow]
    outcomes: dict[str, str]
    contexts: dict[str, dict[str, str]]
    lines: list[SelftestLine] = field(default_factory=list)
    aggregates: list[MetricRow] = field(default_factory=list)

    @property
    def killed(self) -> int:
        return sum(ln.verdict == "killed" for ln in self.lines)

    def no_lines(self) -> str:
        """What the results table says when it has no line: no rows at all, or only the self-test's."""
        if self.lines or self.aggregates:
            return "No metric rows of the models under test were recorded: every row is the gate's self-test (below)."
        return "No metric rows were recorded."

    def headline(self) -> str:
        """'K of N planted bugs killed', with the survivors and those that did not run named."""
        text = f"{self.killed} of {len(self.lines)} planted bugs killed"
        for verdict in VERDICTS[:-1]:
            names = [ln.name for ln in self.lines if ln.verdict == verdict]
            if names:
                text += f"; {verdict}: " + ", ".join(names)
        return text


def _figures(rows: Iterable[MetricRow]) -> tuple[Figure, ...]:
    """The mutant's gate figures (rows with a threshold, and UNGATED_FIGURES), one per metric, the last recorded."""
    out: dict[str, Figure] = {}
    for r in rows:
        shown = r.threshold is not None or r.metric in UNGATED_FIGURES
        if r.metric == KILLED_METRIC or not shown or not isinstance(r.value, (int, float)):
            continue
        if any(k in r.extra for k in PER_LAYER_KEYS):
            continue
        out[r.metric] = Figure(r.metric, float(r.value), r.unit, r.threshold)
    return tuple(out.values())


def _verdict(rows: Sequence[MetricRow], nodeids: Sequence[str], outcomes: Mapping[str, str]) -> tuple[str, str]:
    """(verdict, source): the `selftest_killed` rows when recorded, else the planted-bug tests' outcomes."""
    flags = [r.value for r in rows if r.metric == KILLED_METRIC and isinstance(r.value, (int, float))]
    if flags:
        return ("killed" if all(v >= 1 for v in flags) else "survived"), KILLED_METRIC
    seen = {outcomes.get(n, "") for n in nodeids}
    # xfailed: the test names the check that cannot resolve the bug on this model (test_decode_gate_kill)
    pairs = (("failed", "survived"), ("passed", "killed"), ("xfailed", "below resolution"), ("skipped", "not run"))
    for outcome, verdict in pairs:
        if outcome in seen:
            return verdict, f"test {outcome}"
    return "not run", "no test outcome"


def partition(
    rows: Sequence[MetricRow],
    outcomes: Mapping[str, str] | None = None,
    contexts: Mapping[str, Mapping[str, str]] | None = None,
) -> Partition:
    """Split the run into the user's rows (with the outcomes and failed contexts of their tests) and
    one line per planted bug. A test counts for the user's table only if it recorded a user row or,
    recording none, its context is not a planted bug's."""
    outcomes, contexts = dict(outcomes or {}), dict(contexts or {})
    user = [r for r in rows if not is_selftest(r)]
    mine = [r for r in rows if is_selftest(r)]
    user_ids = {r.nodeid for r in user}
    by_name: dict[str, list[MetricRow]] = {}
    for r in mine:
        name = selftest_name(r.context)
        if name is not None:
            by_name.setdefault(name, []).append(r)
    nodeids = {name: list(dict.fromkeys(r.nodeid for r in group)) for name, group in by_name.items()}
    for nodeid, ctx in contexts.items():  # a planted-bug test that raised before its first row
        name = selftest_name(ctx)
        if name is not None and nodeid not in user_ids:
            by_name.setdefault(name, [])
            nodeids.setdefault(name, [])
            if nodeid not in nodeids[name]:
                nodeids[name].append(nodeid)
    theirs = ({r.nodeid for r in mine} | {n for ids in nodeids.values() for n in ids}) - user_ids
    lines = []
    for name, group in by_name.items():
        verdict, source = _verdict(group, nodeids[name], outcomes)
        description = next((str(r.extra[k]) for r in group for k in DESCRIPTION_KEYS if r.extra.get(k)), "")
        lines.append(SelftestLine(name, verdict, source, tuple(nodeids[name]), description, _figures(group)))
    lines.sort(key=lambda ln: VERDICTS.index(ln.verdict))  # stable: first-seen order within a verdict
    return Partition(
        rows=user,
        outcomes={n: o for n, o in outcomes.items() if n not in theirs},
        contexts={n: {k: str(v) for k, v in c.items()} for n, c in contexts.items() if n not in theirs},
        lines=lines,
        aggregates=[r for r in mine if r.metric in AGGREGATE_METRICS],
    )


def selftest_grid(part: Partition) -> tuple[list[str], list[list[str]]]:
    """Header and body of the self-test table (shared by report.html and summary.md)."""
    header = ["planted bug", "what", "gate figures", "verdict"]
    body = [[ln.name, ln.description or "-", ln.figures_text(), f"{ln.verdict} ({ln.source})"] for ln in part.lines]
    return header, body


def aggregate_text(part: Partition) -> list[str]:
    """The self-test's own summary rows (the kill rate a suite recorded), one sentence each."""
    out = []
    for r in part.aggregates:
        gate = f" (gate {r.threshold:.4g})" if r.threshold is not None else ""
        value = r.value if isinstance(r.value, str) else f"{r.value:.4g}"
        out.append(f"{r.metric} = {value}{gate}, recorded by `{r.nodeid}`")
    return out
