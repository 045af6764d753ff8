"""The perf grid: model x quantizer x attention x prompt length x batch x output length x decode path.

Choose the grid with --attnlab-perf-models/-prompt-lens/-batch/-new-tokens/-path and the quant and
attention areas' --attnlab-quant / --attnlab-attn. Every cell runs through pytest-benchmark
(--benchmark-json) and writes TTFT, TPOT, ITL percentiles, tok/s, MBU/MFU and peak memory to
metrics.csv, with the device monitor's timeline beside it.
"""

from __future__ import annotations

import math

import pytest


def test_generation(
    perf_model,
    perf_quant,
    perf_attn,
    perf_prompt_len,
    perf_batch,
    perf_new_tokens,
    perf_path,
    generation_benchmark,
    gpu_monitor,
    metrics,
):
    if perf_path == "fast" and (perf_quant != "none" or perf_attn != "sdpa"):
        pytest.skip("the fast path runs its own attention on plain weights: quant none, attention sdpa only")
    metrics.update_context(**{**perf_model.context(), "quant": perf_quant, "attention": perf_attn})
    m = generation_benchmark(
        perf_model,
        prompt_len=perf_prompt_len,
        batch=perf_batch,
        new_tokens=perf_new_tokens,
        path=perf_path,
        attention=perf_attn,
        quant=perf_quant,
        group=f"{perf_model.spec.label}-{perf_quant}-{perf_attn}-",
    )
    lat = m.latency()
    assert tuple(m.tokens.shape) == (perf_batch, perf_new_tokens)
    assert all(len(r.marks) == perf_new_tokens for r in m.runs)
    assert 0 < lat["ttft"] <= lat["e2e_latency"]
    if perf_new_tokens > 1:
        # TPOT is the mean ITL of each run (vLLM's identity E2E = TTFT + (n - 1) * TPOT)
        assert math.isclose(lat["ttft"] + (perf_new_tokens - 1) * lat["tpot"], lat["e2e_latency"], rel_tol=1e-9)
        assert lat["itl_p50"] <= lat["itl_p90"] <= lat["itl_p99"] <= lat["itl_max"]
        mbu = m.roofline()["mbu"][0]
        assert mbu > 0
        if m.peaks.bandwidth_source == "nvml":  # a data-sheet peak bounds MBU; a measured CPU copy does not
            assert mbu < 100, f"MBU {mbu:.1f} % above NVML's peak: the bytes per step are over-counted"
    assert gpu_monitor.timeline, "the monitor took no sample"
