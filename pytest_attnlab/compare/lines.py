"""The gate's judgement: each metric of BASE and CURRENT against its threshold and noise, and the verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from pytest_attnlab.compare import stats, variant
from pytest_attnlab.compare.loaders import Key, Observed
from pytest_attnlab.compare.noise_model import Noise, level
from pytest_attnlab.compare.thresholds import Threshold, pick

#: one-sided confidence the rank test asks for before a change beyond the limit is a regression
DEFAULT_ALPHA = 0.05
#: status of a cell that ran as another variant in CURRENT (variant.py): both values shown, never gated
VARIANT_CHANGED = "variant changed"


@dataclass
class Line:
    """One metric of BASE and CURRENT, judged against its threshold and, where known, its noise.

    The values compared are each run's median of its rounds (the recorded value without rounds). A change
    beyond the limit (the larger of the threshold and the noise floor) is a regression unless a one-sided rank
    test on the rounds gives p > alpha. A gated metric whose floor exceeds its threshold is UNGATED: it cannot
    see a change of the threshold's size, so it never reads "ok", yet a change beyond its floor still fails.
    A cell whose decode-path variant changed (`variant_change` says how) reads VARIANT_CHANGED and is not
    judged: another variant measures another thing.
    """

    key: Key
    base: Observed | None
    current: Observed | None
    threshold: Threshold | None
    noise: Noise | None = None
    alpha: float = DEFAULT_ALPHA
    variant_change: variant.Change = ()

    def _relative(self, log_change: float) -> float:
        """A change of log_change in log(value), as a relative change in the threshold's bad direction:
        +e^x - 1 for a metric that grows worse, 1 - e^-x for one that drops (a drop never passes 100 %)."""
        up = self.threshold is None or self.threshold.increase_is_bad
        return math.expm1(log_change) if up else -math.expm1(-log_change)

    @property
    def floor(self) -> float | None:
        """The noise floor as a relative change in the bad direction."""
        return None if self.noise is None else self._relative(self.noise.floor)

    @property
    def detect(self) -> float | None:
        """The smallest relative change in the bad direction caught 19 times in 20."""
        return None if self.noise is None else self._relative(self.noise.detect)

    @cached_property
    def _tested(self) -> bool:
        assert self.base is not None and self.current is not None
        n, m = len(self.current.samples), len(self.base.samples)
        return n >= 2 and m >= 2 and stats.min_p(n, m) <= self.alpha

    @cached_property
    def values(self) -> tuple[float, float]:
        assert self.base is not None and self.current is not None
        return level(self.base), level(self.current)

    def _floor_in_unit(self) -> float:
        assert self.threshold is not None and self.floor is not None
        return self.floor if self.threshold.relative else self.floor * abs(self.values[0])

    @property
    def blind(self) -> bool:
        """Gated by a threshold, but its noise floor is above it."""
        if self.threshold is None or self.noise is None:
            return False
        t = self.threshold
        return self._floor_in_unit() > (t.amount / 100 if t.relative else t.amount)

    def limit(self) -> float:
        """The change (in the threshold's unit) that counts: the threshold, or the noise floor if larger."""
        assert self.threshold is not None
        t = self.threshold
        limit = t.amount / 100 if t.relative else t.amount
        return max(limit, self._floor_in_unit()) if self.noise is not None else limit

    def detects(self) -> str:
        """The smallest change this metric catches 19 times in 20, e.g. '≥ 40%'."""
        if self.detect is None or self.threshold is None:
            return ""
        if self.threshold.relative:
            return f"≥ {self.detect * 100:.0f}%"
        return f"≥ {self.detect * abs(self.values[0]):.3g}"

    @cached_property
    def p_value(self) -> float | None:
        if self.base is None or self.current is None or self.threshold is None or not self._tested:
            return None
        if self.variant_change:  # not judged: BASE and CURRENT ran different variants
            return None
        b, c = self.base.samples, self.current.samples
        return stats.rank_test_p(c, b) if self.threshold.increase_is_bad else stats.rank_test_p(b, c)

    @cached_property
    def status(self) -> str:
        if self.base is None:
            return "new"
        if self.current is None:
            return "missing"
        if self.variant_change:
            return VARIANT_CHANGED
        if self.threshold is None:
            return "-"
        base, current = self.values
        if not (math.isfinite(base) and math.isfinite(current)):
            return "not finite"
        if self.threshold.beyond(base, current, self.limit()):
            p = self.p_value
            return "not significant" if p is not None and p > self.alpha else "REGRESSED"
        return "UNGATED" if self.blind else "ok"

    def change(self) -> str:
        if self.base is None or self.current is None:
            return ""
        base, current = self.values
        if base and math.isfinite(base):
            return f"{(current - base) / abs(base) * 100:+.1f}%"
        return f"{current - base:+.4g}"

    def interval(self) -> str:
        """95 % bootstrap interval of the relative change of medians, when both sides have rounds."""
        if self.base is None or self.current is None or not self._tested:
            return ""
        if not all(v and math.isfinite(v) for v in self.values):
            return ""
        lo, hi = stats.relative_change_interval(self.base.samples, self.current.samples)
        return f"[{lo * 100:+.{0 if abs(lo) >= 0.1 else 1}f},{hi * 100:+.{0 if abs(hi) >= 0.1 else 1}f}]%"


def compare(
    base: dict[Key, Observed],
    current: dict[Key, Observed],
    thresholds: list[Threshold],
    *,
    noise: dict[Key, Noise] | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> list[Line]:
    """One line per key of either run; a cell that ran as another variant in CURRENT (variant.pairs) is one
    line, in BASE's place, under CURRENT's key."""
    noise = noise or {}
    moved = variant.pairs([k for k in base if k not in current], [k for k in current if k not in base])
    renamed = set(moved.values())
    lines = []
    for k in dict.fromkeys([*base, *current]):
        if k in moved:
            lines.append(_moved(k, moved[k], base[k], current[moved[k]], thresholds, alpha))
        elif k not in renamed:
            own = gate(k[1], (current.get(k), base.get(k)), thresholds)
            lines.append(Line(k, base.get(k), current.get(k), own, noise.get(k), alpha))
    return lines


def _moved(
    base_key: Key, current_key: Key, base: Observed, current: Observed, thresholds: list[Threshold], alpha: float
) -> Line:
    """One cell as two variants: the threshold it would have (so the verdict counts it among the gated), no noise
    (BASE's floor is the other variant's)."""
    change = variant.changed(base_key, current_key)
    return Line(current_key, base, current, gate(current_key[1], (current, base), thresholds), None, alpha, change)


def gate(metric: str, observed: tuple[Observed | None, ...], thresholds: list[Threshold]) -> Threshold | None:
    """The threshold of one metric: the test's own tolerance (the first of `observed` that recorded one, CURRENT
    before BASE: @pytest.mark.attnlab_gate, an experiment's gate:), else the first --threshold naming the metric."""
    own = next((o.tolerance for o in observed if o is not None and o.tolerance), "")
    return Threshold.parse(f"{metric}:{own}") if own else pick(thresholds, metric)


#: statuses of a metric that was compared (whatever the verdict)
CHECKED = ("ok", "REGRESSED", "not significant", "UNGATED")

#: exit status of each failing verdict (0: PASS, 2: bad input)
EXIT_REGRESSED, EXIT_NOTHING_CHECKED, EXIT_MISSING, EXIT_NOT_FINITE, EXIT_UNGATED = 1, 3, 4, 5, 6


@dataclass(frozen=True)
class Verdict:
    """What the gate decided, and why: a gate that checked nothing, lost the metrics it gates, or read a NaN fails."""

    code: int
    reason: str
    regressed: int
    checked: int
    gated_missing: int
    ungated_missing: int
    not_significant: int = 0
    ungated: int = 0
    not_finite: int = 0
    variant_changed: int = 0  # gated metrics not compared: their variant changed

    def line(self) -> str:
        head = "PASS" if self.code == 0 else f"FAIL ({self.reason})"
        parts = [f"{self.regressed} regressed", f"{self.checked} checked"]
        if self.ungated:
            parts.append(f"{self.ungated} UNGATED (noise floor above threshold)")
        if self.variant_changed:
            parts.append(f"{self.variant_changed} not compared (variant changed)")
        if self.not_significant:
            parts.append(f"{self.not_significant} beyond the limit but not significant")
        if self.not_finite:
            parts.append(f"{self.not_finite} not finite")
        parts.append(f"{self.gated_missing} gate metrics missing")
        return f"{head}: {', '.join(parts)} (ungated, not compared: {self.ungated_missing} absent from CURRENT)"


def judge(
    lines: list[Line], *, allow_missing: bool = False, fail_on_missing: bool = False, strict: bool = False
) -> Verdict:
    statuses = [ln.status for ln in lines]
    count = statuses.count
    gated = sum(ln.status == "missing" and ln.threshold is not None for ln in lines)
    ungated_missing = sum(ln.status == "missing" and ln.threshold is None for ln in lines)
    checked = sum(s in CHECKED for s in statuses)
    moved = sum(ln.status == VARIANT_CHANGED and ln.threshold is not None for ln in lines)
    if count("REGRESSED"):
        code, reason = EXIT_REGRESSED, "regression"
    elif count("not finite"):
        code, reason = EXIT_NOT_FINITE, "a gated metric is NaN or inf"
    elif not any(ln.base is not None for ln in lines) or not any(ln.current is not None for ln in lines):
        side = "BASE" if not any(ln.base is not None for ln in lines) else "CURRENT"
        code, reason = EXIT_NOTHING_CHECKED, f"{side} is empty: no metric rows (an empty run)"
    elif checked == 0:
        moved_note = f" ({moved} ran as another variant)" if moved else ""
        code, reason = EXIT_NOTHING_CHECKED, f"nothing checked: no gated metric of BASE is in CURRENT{moved_note}"
    elif gated and not allow_missing:
        code, reason = EXIT_MISSING, "gate metrics of BASE missing from CURRENT (--allow-missing to accept)"
    elif fail_on_missing and ungated_missing:
        code, reason = EXIT_MISSING, "metrics of BASE missing from CURRENT (--fail-on-missing)"
    elif strict and (count("UNGATED") or moved):
        code, reason = EXIT_UNGATED, _strict_reason(count("UNGATED"), moved)
    else:
        code, reason = 0, ""
    return Verdict(code, reason, count("REGRESSED"), checked, gated, ungated_missing, count("not significant"),
                   count("UNGATED"), count("not finite"), moved)  # fmt: skip


def _strict_reason(ungated: int, moved: int) -> str:
    """Why --strict fails: the gated metrics the gate could not see, blind ones first."""
    why = ["metrics whose noise floor exceeds their threshold"] if ungated else []
    why += ["metrics not compared as their variant changed"] if moved else []
    return "--strict: " + " and ".join(why)
