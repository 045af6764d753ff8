"""Regression thresholds: `NAME:+5%` (worse when it grows by more than 5 %), `NAME:-0.01` (worse when it
drops by more than 0.01, absolute). The sign names the bad direction; `%` makes it relative to BASE.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pytest_attnlab.metrics.tolerance import names_metric

_SPEC = re.compile(r"^(?P<name>[^:]+):(?P<sign>[+-])(?P<amount>\d+(\.\d*)?|\.\d+)(?P<pct>%?)$")

#: Used when no --threshold is given: latency up, throughput or quality down.
DEFAULT_THRESHOLDS = (
    "tpot:+5%",
    "ttft:+10%",
    "tok_s:-5%",
    "tokens_per_s:-5%",
    "cosine:-0.01",
    "perplexity:+2%",
)


class ThresholdError(ValueError):
    pass


@dataclass(frozen=True)
class Threshold:
    name: str  # a metric name, its suffix after '_' (cosine -> logits_cosine) or a glob
    increase_is_bad: bool
    amount: float
    relative: bool

    @classmethod
    def parse(cls, spec: str) -> Threshold:
        m = _SPEC.match(spec.strip())
        if not m:
            raise ThresholdError(
                f"bad threshold {spec!r}; expected NAME:+N% / NAME:-N% (relative) or NAME:+N / NAME:-N "
                "(absolute), e.g. tpot:+5% or cosine:-0.01"
            )
        return cls(m["name"], m["sign"] == "+", float(m["amount"]), bool(m["pct"]))

    def matches(self, metric: str) -> bool:
        return names_metric(self.name, metric)

    def change(self, base: float, current: float) -> float:
        """Signed change in the threshold's unit (fraction for relative)."""
        delta = current - base
        if self.relative:
            return delta / abs(base) if base else (0.0 if delta == 0 else float("inf") * (1 if delta > 0 else -1))
        return delta

    def regressed(self, base: float, current: float) -> bool:
        return self.beyond(base, current, self.amount / 100 if self.relative else self.amount)

    def beyond(self, base: float, current: float, limit: float) -> bool:
        """The change goes past `limit` (in the threshold's unit) in the bad direction."""
        change = self.change(base, current)
        limit += 1e-9 * max(limit, 1e-12)  # a change exactly at the limit passes despite float rounding
        return change > limit if self.increase_is_bad else change < -limit

    def __str__(self) -> str:
        return f"{self.name}:{'+' if self.increase_is_bad else '-'}{self.amount:g}{'%' if self.relative else ''}"


def pick(thresholds: list[Threshold], metric: str) -> Threshold | None:
    """The first threshold that names the metric exactly, else the first that matches it."""
    exact = [t for t in thresholds if t.name == metric]
    return exact[0] if exact else next((t for t in thresholds if t.matches(metric)), None)
