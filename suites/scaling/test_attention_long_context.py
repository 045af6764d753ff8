"""Long-context prefill and decode memory of attention variants (was scripts/gpu/attention_long_context.py).

    pytest suites/scaling/test_attention_long_context.py --attnlab-model random:qwen2.5-0.5b-instruct \
        --attnlab-device cuda --attnlab-dtype bfloat16 --attnlab-perf-prompt-lens 1024,2048,4096,8192,16384,32768

Per variant and context (the perf grid's prompt lengths): one prefill over N random tokens (logits of
the last position only), timed through pytest-benchmark after a warm-up at that very length (compiled
flex specialises on shapes). On CUDA: the prefill's peak memory above the weights, and the memory
still held after it (the KV cache or, for linear attention with LinearStateCache, the recurrent
state). Then one decode step, timed with the device synchronised. A cell that runs out of memory
skips with the reason, and the next cell still runs.
"""

from __future__ import annotations

import time

import pytest
import torch

from pytest_attnlab.attention import (
    applied,
    block_sparse,
    linear_attention,
    linear_state_cache,
    sdpa,
    sliding_window,
)
from pytest_attnlab.attention.variants.linear import state_bytes
from pytest_attnlab.hf_compat import with_cache
from pytest_attnlab.perf.timing import synchronize

#: the long-context line-up: dense, a 1024-token window with 4 sinks, top-8 of 128-token blocks, linear
VARIANTS = [sdpa(), sliding_window(1024, sinks=4), block_sparse(128, 8), linear_attention("elu", chunk=256)]


def _allocated(device: str) -> int:
    return torch.cuda.memory_allocated() if device.startswith("cuda") else 0


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
@torch.inference_mode()
def test_long_context(variant, perf_model, perf_prompt_len, attnlab_settings, benchmark, metrics):
    from transformers import DynamicCache

    device = attnlab_settings.resolved_device()
    model = perf_model.model
    n = perf_prompt_len
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(n)).to(device)
    linear = variant.name.startswith("linear")
    make_cache = linear_state_cache if linear else (lambda: DynamicCache(config=model.config))
    metrics.update_context(**{**perf_model.context(), "attention": variant.name})
    cell = {"prompt_len": n, "batch": 1}
    try:
        with applied(model, variant):
            warm = make_cache()
            model(ids, **with_cache(model, warm), use_cache=True, logits_to_keep=1)
            model(ids[:, -1:], **with_cache(model, warm), use_cache=True)
            del warm
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            base = _allocated(device)
            caches = []

            def prefill():
                caches[:] = [make_cache()]
                model(ids, **with_cache(model, caches[0]), use_cache=True, logits_to_keep=1)
                synchronize(device)

            benchmark.pedantic(prefill, setup=lambda: synchronize(device), rounds=1, iterations=1)
            if device.startswith("cuda"):
                metrics.record("prefill_peak_bytes", torch.cuda.max_memory_allocated() - base, "bytes", **cell)
                metrics.record("decode_held_bytes", _allocated(device) - base, "bytes", **cell)
            synchronize(device)
            start = time.perf_counter()
            model(ids[:, -1:], **with_cache(model, caches[0]), use_cache=True)
            synchronize(device)
            step_s = time.perf_counter() - start
            state = state_bytes(model) if linear else 0
    except torch.OutOfMemoryError as exc:  # report the cell and go on to the next
        pytest.skip(f"{variant.name} at {n} tokens: out of memory ({str(exc)[:160]})")
    finally:
        caches = None
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    metrics.record("prefill_s", benchmark.stats.stats.mean, "s", **cell)
    metrics.record("decode_step_s", step_s, "s", **cell)
    metrics.record("state_bytes", state, "bytes", **cell)
    assert step_s > 0
