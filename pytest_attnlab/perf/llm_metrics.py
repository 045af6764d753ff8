"""LLM latency metrics from per-token timestamps, defined as vLLM's benchmark_serving defines them.

With marks m_1..m_n (seconds from "prompt in" to "token i out", n output tokens per sequence):
  TTFT = m_1;  E2E = m_n;  TPOT = (E2E - TTFT) / (n - 1);  ITL_i = m_i - m_{i-1} (i >= 2)
  prefill tok/s = batch * prompt_len / TTFT
  decode tok/s  = batch * (n - 1) / (E2E - TTFT)
  e2e tok/s     = batch * n / E2E      (vLLM's "output token throughput")
(vllm/benchmarks/serve.py::calculate_metrics: `tpot = (latency - ttft) / (output_len - 1)`;
ITL there is the gap between streamed chunks, here one chunk is one token.)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Run:
    """One generation: `marks[i]` = seconds from start until token i+1 was out (all sequences)."""

    batch: int
    prompt_len: int
    marks: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.marks:
            raise ValueError("a run needs at least one token mark")
        if any(b < a for a, b in zip(self.marks, self.marks[1:], strict=False)):
            raise ValueError(f"token marks must not decrease: {self.marks}")

    @property
    def out_tokens(self) -> int:
        return len(self.marks)

    @property
    def ttft(self) -> float:
        return self.marks[0]

    @property
    def e2e(self) -> float:
        return self.marks[-1]

    @property
    def tpot(self) -> float:
        n = self.out_tokens
        return (self.e2e - self.ttft) / (n - 1) if n > 1 else math.nan

    @property
    def itl(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]


#: metric name -> unit, in the order they are reported.
UNITS = {
    "ttft": "s",
    "tpot": "s",
    "e2e_latency": "s",
    "itl_p50": "s",
    "itl_p90": "s",
    "itl_p99": "s",
    "itl_max": "s",
    "prefill_tok_s": "tokens/s",
    "decode_tok_s": "tokens/s",
    "e2e_tok_s": "tokens/s",
}


@dataclass
class Summary:
    """Metrics over several runs: latencies are means over runs, ITL percentiles pool every step."""

    runs: list[Run] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        if not self.runs:
            raise ValueError("no runs to summarise")
        r0 = self.runs[0]
        b, p = r0.batch, r0.prompt_len
        ttft = statistics.fmean(r.ttft for r in self.runs)
        e2e = statistics.fmean(r.e2e for r in self.runs)
        n = r0.out_tokens
        tpots = [r.tpot for r in self.runs if r.out_tokens > 1]
        tpot = statistics.fmean(tpots) if tpots else math.nan
        itl = [x for r in self.runs for x in r.itl]
        decode_s = e2e - ttft
        return {
            "ttft": ttft,
            "tpot": tpot,
            "e2e_latency": e2e,
            "itl_p50": percentile(itl, 50),
            "itl_p90": percentile(itl, 90),
            "itl_p99": percentile(itl, 99),
            "itl_max": max(itl) if itl else math.nan,
            "prefill_tok_s": b * p / ttft if ttft > 0 else math.nan,
            "decode_tok_s": b * (n - 1) / decode_s if n > 1 and decode_s > 0 else math.nan,
            "e2e_tok_s": b * n / e2e if e2e > 0 else math.nan,
        }

    def per_round(self) -> dict[str, list[float]]:
        """Each run's own TTFT, TPOT, E2E and throughputs: the samples a noise-aware gate tests on
        (ITL percentiles pool all steps, so they have no per-round value)."""
        out: dict[str, list[float]] = {}
        for r in self.runs:
            one = Summary([r]).as_dict()
            for name in ("ttft", "tpot", "e2e_latency", "prefill_tok_s", "decode_tok_s", "e2e_tok_s"):
                out.setdefault(name, []).append(one[name])
        return out
