"""TTFT and TPOT of --attnlab-candidate beside --attnlab-model's, on the same cell and decode path.

    pytest suites/perf/test_candidate_perf.py --attnlab-model /models/base --attnlab-candidate /models/base-awq

One cell (batch 1, the smallest prompt length, the largest output length of the grid) through HF
`generate`; both models are measured in the same test, alternately, so drift hits both alike. A
quantized candidate whose linears run dense float weights here (dequantized on load: by
pytest-attnlab's reader without the format's library, or by transformers on CPU) would time a float
model, so the test skips and says why.
"""

from __future__ import annotations

from typing import Any

import pytest

PATH = "hf"  # the fast path runs plain Llama/Qwen2 weights only


def test_candidate_latency_side_by_side(
    attnlab_model: Any, attnlab_candidate: Any, generation_benchmark: Any, perf_settings: Any, metrics: Any
) -> None:
    if attnlab_candidate.runs_dense:
        why = attnlab_candidate.notes.get("loader", f"its {attnlab_candidate.quant} library dequantized them here")
        label = attnlab_candidate.spec.label
        pytest.skip(f"{label} runs dense float weights here ({why}): its timings would not be the format's")
    cell = {
        "path": PATH,
        "batch": 1,
        "prompt_len": min(perf_settings.prompt_lens),
        "new_tokens": max(max(perf_settings.new_tokens), 2),
    }
    metrics.update_context(**attnlab_candidate.context(), backend=PATH)
    latency: dict[str, dict[str, float]] = {"reference": {}, "candidate": {}}
    for _ in range(2):  # interleaved: the faster of two measurements each
        for role, loaded in (("reference", attnlab_model), ("candidate", attnlab_candidate)):
            lat = generation_benchmark.measure(loaded, **cell).latency()
            for key in ("ttft", "tpot"):
                latency[role][key] = min(latency[role].get(key, float("inf")), lat[key])
    for key in ("ttft", "tpot"):
        ref, cand = latency["reference"][key], latency["candidate"][key]
        metrics.record(f"{key}_reference", ref, "s", **cell)
        metrics.record(f"{key}_candidate", cand, "s", **cell)
        metrics.record(f"{key}_ratio", cand / ref, "ratio", **cell)
    metrics.table(
        f"{attnlab_candidate.spec.label} vs {attnlab_model.spec.label} ({PATH}, {cell})",
        [{"model": role, **{f"{k}_ms": f"{v * 1e3:.3f}" for k, v in lat.items()}} for role, lat in latency.items()],
    )
    assert all(0 < v for lat in latency.values() for v in lat.values()), latency
