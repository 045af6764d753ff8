"""Service-level objectives and goodput, as vLLM's benchmark defines them (vllm/benchmarks/serve.py,
`--goodput ttft:200 tpot:50`, calculate_metrics): a request is good when each of its TTFT, TPOT and E2E
latency (e2el) is at most its SLO; request goodput = good requests / benchmark duration.

Here every sequence of a round decodes in lockstep, so a round's `batch` requests share its TTFT, TPOT
and E2E; the duration is the rounds' summed E2E. Token goodput is the good requests' output tokens over
the same duration, the figure that sits beside e2e tok/s (equal to it when every request is good).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import pytest

from pytest_attnlab.perf.llm_metrics import Run

#: SLO name -> the Run attribute it bounds (vLLM's names: ttft, tpot, e2el)
SLO_METRICS = {"ttft": "ttft", "tpot": "tpot", "e2el": "e2e"}
_ITEM = re.compile(r"^(?P<name>[a-z0-9]+):(?P<amount>\d+(\.\d*)?|\.\d+)(?P<unit>ms|s)?$")

Slo = tuple[tuple[str, float], ...]  # (name, seconds), in the order given


def parse_slo(value: str) -> Slo:
    """`ttft:200ms,tpot:50ms` (a bare number is milliseconds, as vLLM's --goodput takes it) -> seconds."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in value.split(",") if p.strip()):
        m = _ITEM.match(part)
        if not m or m["name"] not in SLO_METRICS:
            choices = ", ".join(f"{n}:N[ms|s]" for n in SLO_METRICS)
            raise pytest.UsageError(f"--attnlab-perf-slo: invalid item {part!r}; choose from: {choices} (comma list)")
        seconds = float(m["amount"]) / (1 if m["unit"] == "s" else 1e3)
        if seconds <= 0:
            raise pytest.UsageError(f"--attnlab-perf-slo: {part!r} must be > 0")
        out[m["name"]] = seconds
    return tuple(out.items())


def describe(slo: Slo) -> str:
    return ",".join(f"{name}:{s:g}s" if s >= 1 else f"{name}:{s * 1e3:g}ms" for name, s in slo)


def good(run: Run, slo: Slo) -> bool:
    return all(getattr(run, SLO_METRICS[name]) <= bound for name, bound in slo)


def goodput(runs: Sequence[Run], slo: Slo) -> dict[str, tuple[float, str]]:
    """Request and token goodput of the timed rounds under `slo` (metrics.csv names and units)."""
    duration = sum(r.e2e for r in runs)
    if not runs or duration <= 0:
        return {"goodput_req_s": (math.nan, "requests/s"), "goodput_tok_s": (math.nan, "tokens/s")}
    kept = [r for r in runs if good(r, slo)]
    return {
        "goodput_req_s": (sum(r.batch for r in kept) / duration, "requests/s"),
        "goodput_tok_s": (sum(r.batch * r.out_tokens for r in kept) / duration, "tokens/s"),
    }
