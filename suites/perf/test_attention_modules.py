"""Module-level benchmark of MHA, MQA, GQA-2/4 and MLA at d_model 512, 8 heads, batch 2 (seed 001/002).

    pytest suites/perf/test_attention_modules.py --benchmark-columns=mean,stddev,rounds
    pytest suites/perf/test_attention_modules.py --attnlab-attn-seq 128,256,512,1024 --attnlab-device cuda

Times a prefill forward through pytest-benchmark (pedantic, device synchronised) and records KV-cache
bytes, parameter count and, on CUDA, peak memory. Consistency: the cached (prefill + decode) path
gives the same outputs as one full forward.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from pytest_attnlab.attention.modules import SEED_SHAPES, AttentionBlock, cache_bytes, param_count

BATCH = 2
SHAPES = [s for s in SEED_SHAPES if s.latent_kv == 2 or not s.latent]  # mha, mqa, gqa_2, gqa_4, mla_256


@pytest.fixture(scope="module")
def device(attnlab_settings) -> str:
    return attnlab_settings.resolved_device()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_attention_module_prefill(benchmark, attention_seq_len, shape, device, metrics):
    torch.manual_seed(0)
    block = AttentionBlock(shape).to(device).eval()
    x = torch.randn(BATCH, attention_seq_len, shape.d_model, device=device)

    def prefill() -> list[torch.Tensor]:
        cache: list[torch.Tensor] = []
        with torch.inference_mode():
            block(x, cache)
        _sync(device)
        return cache

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    cache = benchmark.pedantic(prefill, setup=lambda: _sync(device), rounds=5, warmup_rounds=1, iterations=1)
    metrics.update_context(attention=shape.name, model="module-d512-h8")
    metrics.record("prefill_mean_s", benchmark.stats.stats.mean, "s", seq=attention_seq_len, batch=BATCH)
    metrics.record("kv_cache_bytes", cache_bytes(cache), "B", seq=attention_seq_len, batch=BATCH)
    metrics.record("params", param_count(block))
    if device.startswith("cuda"):
        metrics.record("peak_memory", torch.cuda.max_memory_allocated(), "B", seq=attention_seq_len)
    benchmark.extra_info.update(attention=shape.name, seq=attention_seq_len, kv_cache_bytes=cache_bytes(cache))
    assert cache_bytes(cache) == BATCH * attention_seq_len * shape.kv_elems_per_token() * 4


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_attention_module_cached_path_matches_full(shape, device):
    """Prefill 48 tokens, decode 16 one at a time: equal to one causal forward over all 64."""
    torch.manual_seed(0)
    block = AttentionBlock(shape).to(device).eval()
    x = torch.randn(BATCH, 64, shape.d_model, device=device)
    with torch.inference_mode():
        full = block(x)
        cache: list[torch.Tensor] = []
        steps = [block(x[:, :48], cache)] + [block(x[:, t : t + 1], cache) for t in range(48, 64)]
    assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(full).all()
