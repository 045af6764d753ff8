"""vLLM's own per-request timestamps (RequestOutput.metrics, a v1 RequestStateStats) -> TTFT / TPOT.

Fields used, as vllm/v1/metrics/stats.py sets them: `first_token_latency` (frontend wall clock,
arrival -> first token), `first_token_ts` / `last_token_ts` (engine-core monotonic clock) and
`num_generation_tokens`. The definitions are vLLM's (IterationStats.update_from_finished_request)
and the perf suite's (llm_metrics): TPOT = (last - first) / (n - 1), E2E = TTFT + (n - 1) * TPOT.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RequestTiming:
    ttft: float  # seconds, arrival -> first token
    tpot: float  # seconds per output token after the first (nan for a single token)
    e2e: float  # seconds, arrival -> last token
    tokens: int

    @classmethod
    def from_stats(cls, stats: Any) -> RequestTiming:
        if stats is None:
            raise ValueError("RequestOutput.metrics is None: build the engine with disable_log_stats=False")
        n = int(stats.num_generation_tokens)
        if n < 1 or stats.first_token_ts <= 0:
            raise ValueError(
                f"request has no first-token timestamp (tokens={n}, first_token_ts={stats.first_token_ts})"
            )
        decode = float(stats.last_token_ts) - float(stats.first_token_ts)
        if decode < 0:
            raise ValueError(f"last_token_ts {stats.last_token_ts} is before first_token_ts {stats.first_token_ts}")
        ttft = float(stats.first_token_latency)
        return cls(ttft, decode / (n - 1) if n > 1 else math.nan, ttft + decode, n)


def summarize(stats: Sequence[Any]) -> dict[str, float]:
    """Batch figures from every request's stats: mean TTFT/TPOT, the slowest E2E, and output tok/s."""
    timings = [RequestTiming.from_stats(s) for s in stats]
    if not timings:
        raise ValueError("no request stats")
    e2e = max(t.e2e for t in timings)
    tpots = [t.tpot for t in timings if not math.isnan(t.tpot)]
    return {
        "ttft": statistics.fmean(t.ttft for t in timings),
        "tpot": statistics.fmean(tpots) if tpots else math.nan,
        "e2e_latency": e2e,
        "e2e_tok_s": sum(t.tokens for t in timings) / e2e if e2e > 0 else math.nan,
    }
