"""Backends without vLLM: request-timestamp conversion (on RequestStateStats-shaped objects: a unit
test of the arithmetic, not a vLLM run), engine settings, vLLM quant routes, scoring on a real model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pytest_attnlab.paths import scoring
from pytest_attnlab.paths.vllm_engine import EngineSettings, checkpoint_for, quantized_reason, weights_differ
from pytest_attnlab.paths.vllm_metrics import RequestTiming, summarize
from pytest_attnlab.paths.vllm_quant import VLLMQuantUnsupported, route


def _stats(latency: float, first: float, last: float, n: int) -> SimpleNamespace:
    # the fields vllm.v1.metrics.stats.RequestStateStats fills (engine-core ts are monotonic)
    return SimpleNamespace(
        num_generation_tokens=n,
        first_token_latency=latency,
        first_token_ts=first,
        last_token_ts=last,
        arrival_time=1.7e9,
        scheduled_ts=first - 0.01,
    )


def test_request_timing_follows_the_perf_definitions():
    t = RequestTiming.from_stats(_stats(0.25, 100.0, 100.9, 10))
    assert t.ttft == 0.25
    assert t.tpot == pytest.approx(0.1)  # (last - first) / (n - 1)
    assert t.e2e == pytest.approx(0.25 + 9 * t.tpot)  # E2E = TTFT + (n - 1) * TPOT
    assert math.isnan(RequestTiming.from_stats(_stats(0.2, 5.0, 5.0, 1)).tpot)


def test_request_timing_rejects_missing_or_backwards_stamps():
    with pytest.raises(ValueError, match="disable_log_stats=False"):
        RequestTiming.from_stats(None)
    with pytest.raises(ValueError, match="no first-token timestamp"):
        RequestTiming.from_stats(_stats(0.0, 0.0, 0.0, 0))
    with pytest.raises(ValueError, match="before first_token_ts"):
        RequestTiming.from_stats(_stats(0.1, 2.0, 1.0, 4))


def test_summary_over_a_batch():
    s = summarize([_stats(0.2, 10.0, 10.6, 4), _stats(0.4, 10.0, 11.2, 4)])
    assert s["ttft"] == pytest.approx(0.3)
    assert s["tpot"] == pytest.approx((0.2 + 0.4) / 2)
    assert s["e2e_latency"] == pytest.approx(1.6)  # the slowest request ends the batch
    assert s["e2e_tok_s"] == pytest.approx(8 / 1.6)


def test_engine_settings_validate_and_map_to_llm_arguments():
    with pytest.raises(ValueError, match="kv_cache_dtype: invalid value 'int2'; choose from: auto"):
        EngineSettings(kv_cache_dtype="int2")
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        EngineSettings(gpu_memory_utilization=0)
    s = EngineSettings(max_model_len=512, kv_cache_gb=0.5)
    cpu, gpu = s.llm_kwargs(on_cpu=True), s.with_extra(quantization="bitsandbytes").llm_kwargs(on_cpu=False)
    assert cpu["kv_cache_memory_bytes"] == 2**29 and "gpu_memory_utilization" not in cpu
    assert gpu["gpu_memory_utilization"] == 0.5 and gpu["quantization"] == "bitsandbytes"
    assert cpu["enforce_eager"] and cpu["skip_tokenizer_init"] and cpu["disable_log_stats"] is False


def test_in_flight_routes_follow_what_the_installed_vllm_lists(monkeypatch):
    from types import SimpleNamespace

    from pytest_attnlab.paths import vllm_quant

    def extra(quant: str, on_cpu: bool) -> dict:
        return route(SimpleNamespace(quant=quant, state=None), on_cpu, "float32").extra

    assert extra("none", on_cpu=True) == {}
    monkeypatch.setattr(vllm_quant, "vllm_lists", lambda method: True)  # an older vLLM with bitsandbytes
    assert extra("bnb-nf4", on_cpu=False) == {"quantization": "bitsandbytes"}
    with pytest.raises(VLLMQuantUnsupported, match="needs CUDA"):
        extra("bnb-nf4", on_cpu=True)
    monkeypatch.setattr(vllm_quant, "vllm_lists", lambda method: False)  # vLLM 0.32 dropped it
    with pytest.raises(VLLMQuantUnsupported, match="no bitsandbytes support"):
        extra("bnb-nf4", on_cpu=False)
    with pytest.raises(VLLMQuantUnsupported, match="no packed state.*in flight for bnb-nf4"):
        extra("bnb-int8", on_cpu=False)  # neither in flight nor exportable


def test_agreement_gates_only_what_it_should():
    ref_lp = torch.log_softmax(torch.tensor([[[2.0, 1.0, 0.0], [0.0, 3.0, 0.0]]]), dim=-1)
    exact = scoring.Scored([[0, 1]], [[{0: float(ref_lp[0, 0, 0])}, {1: float(ref_lp[0, 1, 1])}]])
    a = scoring.agreement([[0, 1]], exact, ref_lp)
    assert (a.token_match, a.greedy_regret, a.logprob_max_diff) == (1.0, 0.0, 0.0)
    off = scoring.Scored([[1, 1]], [[{1: float(ref_lp[0, 0, 1]) + 0.5}, {1: float(ref_lp[0, 1, 1])}]])
    b = scoring.agreement([[0, 1]], off, ref_lp)
    assert b.token_match == 0.5 and b.prefix_match == 0.0
    assert b.greedy_regret == pytest.approx(1.0) and b.logprob_max_diff == pytest.approx(0.5)
    assert scoring.agreement([[0, 1]], off, ref_lp, banned=(0,)).greedy_regret == 0.0  # token 0 forbidden


@pytest.fixture(scope="module")
def tiny(model_factory):
    return model_factory("random:tiny-qwen2", device="cpu", dtype="float32")


def test_hf_and_fast_scores_agree_with_teacher_forcing(tiny):
    from pytest_attnlab.paths import FastPath, HFGeneratePath

    ids = torch.randint(16, 200, (2, 7), generator=torch.Generator().manual_seed(1))
    for path in (HFGeneratePath(), FastPath()):
        path.prepare(tiny.model, 2, 7, 5)
        s = path.greedy_logprobs(ids, 5, 3)
        assert [len(t) for t in s.tokens] == [5, 5] and all(len(step) >= 3 for row in s.top for step in row)
        ref = scoring.teacher_forced_logprobs(tiny.model, ids, s.tokens)
        a = scoring.agreement(s.tokens, s, ref, banned=scoring.eos_ids(tiny.model))
        assert a.logprob_max_diff < 1e-4 and a.greedy_regret < 1e-4, (type(path).__name__, a)


def test_checkpoint_for_a_random_model_is_saved_once(tiny, tmp_path):
    first = checkpoint_for(tiny.model, tmp_path)
    assert (first / "config.json").is_file() and list(first.glob("*.safetensors"))
    mtime = (first / "config.json").stat().st_mtime
    assert checkpoint_for(tiny.model, tmp_path) == first and (first / "config.json").stat().st_mtime == mtime


def test_in_process_quantization_is_spotted(tiny, tmp_path):
    from pytest_attnlab.quant import quantize

    folder = checkpoint_for(tiny.model, tmp_path)
    assert quantized_reason(tiny.model) is None and weights_differ(tiny.model, folder) is None
    q = quantize(tiny, "rtn-int8", cache=False)  # fake-quantized: plain nn.Linear, other weights
    assert "differs from" in (weights_differ(q.model, folder) or "")
