"""The vllm backend's timing: per-token marks from engine steps vs vLLM's own request timestamps.

`pytest suites/perf --attnlab-backend vllm` runs the whole perf grid through vLLM; this test adds
what only vLLM has: RequestOutput.metrics (arrival, first/last token), converted by the perf
suite's definitions (TTFT, TPOT = (last - first) / (n - 1)) and recorded beside the step-marked
figures. Timing on a shared CPU is reported, never asserted.
"""

from __future__ import annotations

import math

import pytest

from pytest_attnlab.paths.vllm_metrics import RequestTiming, summarize


@pytest.mark.parametrize("batch", [1, 4])
def test_vllm_request_metrics(batch, attnlab_model, backend_state, generation_benchmark, metrics):
    new_tokens, prompt_len = 16, 32
    path = backend_state.path("vllm")  # skips with the install hint without vLLM (prepare)
    m = generation_benchmark.measure(
        attnlab_model,
        prompt_len=prompt_len,
        batch=batch,
        new_tokens=new_tokens,
        path="vllm",
        rounds=2,
        warmup=1,
    )
    generation_benchmark.record(m)
    stats = path.last_metrics
    assert len(stats) == batch
    timings = [RequestTiming.from_stats(s) for s in stats]
    assert all(t.tokens == new_tokens for t in timings)
    own = summarize(stats)
    for name, value in own.items():
        metrics.record(f"vllm_reported_{name}", value, "tokens/s" if name.endswith("tok_s") else "s")
    marked = m.latency()
    metrics.record("vllm_marked_vs_reported_tpot", marked["tpot"] / own["tpot"], "ratio")
    assert all(len(r.marks) == new_tokens for r in m.runs)
    assert own["tpot"] > 0 and not math.isnan(own["tpot"])
    assert 0 < own["ttft"] <= own["e2e_latency"]
