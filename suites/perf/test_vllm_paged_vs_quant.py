"""Seed 003: PagedAttention (vLLM) vs quantization (HF + bitsandbytes, int4), throughput and memory per batch level.

Each `attnlab_case` of `--attnlab-config experiments/paged_vs_quant.yaml` is one backend x quantizer
x batch size; it runs through the perf suite's `generation_benchmark.measure` (TTFT, TPOT, ITL,
tok/s from per-token timestamps) and records every figure with the case's context, so the summary
table and experiment JSON compare them. vLLM's engine runs in its own process: its memory is the
engine processes' RSS (CPU) or its KV-cache size, recorded beside this process's.
"""

from __future__ import annotations

import math

PROMPT_LEN = 64


def _child_rss() -> float:
    import psutil

    return float(sum(c.memory_info().rss for c in psutil.Process().children(recursive=True)))


def _vllm_kv_bytes(path) -> float:
    try:
        cache = path.llm.llm_engine.vllm_config.cache_config
        return float(cache.kv_cache_memory_bytes or math.nan)
    except AttributeError:
        return math.nan


def test_paged_vs_quant(
    attnlab_case, attnlab_run_case, attnlab_model, backend_state, generation_benchmark, metrics, pytestconfig
):
    case = attnlab_case
    metrics.update_context(**{**attnlab_model.context(), **case.context()})
    path = backend_state.path(case.backend)
    loaded = attnlab_run_case.loaded(pytestconfig)  # quantized under --attnlab-quant-cache, or skips with the reason
    # The vllm path gives vLLM the same quantizer through its route (an exported checkpoint, or
    # in-flight quantization) or skips with the reason (paths/vllm_quant.py).
    gen = case.generation
    m = generation_benchmark.measure(
        loaded,
        prompt_len=PROMPT_LEN,
        batch=case.batch_size,
        new_tokens=gen.max_tokens,
        path=case.backend,
        rounds=case.experiment.test_iterations,
        warmup=case.experiment.warmup_iterations,
    )
    generation_benchmark.record(m, batch_level=case.batch_level, experiment=case.experiment.experiment_name)
    if case.backend == "vllm":
        metrics.record("vllm_engine_rss", _child_rss(), "bytes")
        metrics.record("vllm_kv_cache_bytes", _vllm_kv_bytes(path), "bytes")
    lat = m.latency()
    assert tuple(m.tokens.shape) == (case.batch_size, gen.max_tokens)
    assert 0 < lat["ttft"] <= lat["e2e_latency"]
    assert lat["e2e_tok_s"] > 0
