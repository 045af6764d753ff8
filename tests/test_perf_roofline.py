"""Roofline: byte and FLOP counting against closed forms; peak bandwidth from NVML figures; cache."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from pytest_attnlab.models import random_models
from pytest_attnlab.perf import roofline
from pytest_attnlab.perf.roofline import Shape


@pytest.fixture(scope="module")
def tiny():
    return random_models.build("tiny-qwen2", dtype=torch.bfloat16)


def test_param_count_closed_form(tiny):
    shape = Shape.from_config(tiny.config)
    assert shape.qkv_bias and shape.tied
    assert shape.param_count() == sum(p.numel() for p in tiny.parameters())
    assert roofline.unique_param_bytes(tiny) == 2 * shape.param_count()  # bf16, tied embedding once


def test_param_count_llama_untied():
    cfg = dict(random_models.TINY_QWEN2, tie_word_embeddings=False, architectures=["LlamaForCausalLM"])
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg.pop("model_type")
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **cfg))
    shape = Shape.from_config(model.config)
    assert not shape.qkv_bias and not shape.tied
    assert shape.param_count() == sum(p.numel() for p in model.parameters())
    # an untied input table is only gathered: batch rows instead of the whole table
    full = roofline.unique_param_bytes(model)
    assert (
        roofline.weight_bytes_per_step(model, shape, 3, 4)
        == full - shape.vocab * shape.hidden * 4 + 3 * shape.hidden * 4
    )


def test_decode_step_bytes_closed_form(tiny):
    s = Shape.from_config(tiny.config)
    # K and V, 4 layers x 2 kv heads x head_dim 16, bf16
    assert s.kv_bytes_per_token(2) == 2 * 4 * 2 * 16 * 2
    w = roofline.weight_bytes_per_step(tiny, s, batch=2, elem_bytes=2)
    assert w == 2 * s.param_count()
    assert roofline.decode_step_bytes(w, s, 2, 100.0, 2) == w + 2 * 100 * s.kv_bytes_per_token(2)


def test_mean_decode_context_is_the_mean_over_steps():
    prompt, n = 37, 9
    steps = [prompt + j for j in range(1, n)]  # step j feeds generated token j
    assert roofline.mean_decode_context(prompt, n) == pytest.approx(sum(steps) / len(steps))


def test_prefill_flops_closed_form():
    s = Shape(
        layers=2,
        hidden=8,
        heads=2,
        kv_heads=1,
        head_dim=4,
        intermediate=16,
        vocab=50,
        tied=True,
        qkv_bias=False,
    )
    per_layer = 8 * (8 + 2 * 4) + 8 * 8 + 3 * 8 * 16
    assert s.layer_linear_params() == per_layer
    b, L = 3, 5
    expected = 2 * 2 * per_layer * b * L + 2 * 50 * 8 * b + 2 * b * 2 * 2 * 4 * L * L
    assert s.prefill_flops(b, L) == expected


def test_nvml_bandwidth_formula(monkeypatch):
    fake = types.SimpleNamespace(
        NVML_CLOCK_MEM=1,
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: "h",
        nvmlDeviceGetMaxClockInfo=lambda h, kind: 2619,
        nvmlDeviceGetMemoryBusWidth=lambda h: 5120,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert roofline.nvml_bandwidth(0) == pytest.approx(3.352e12, rel=1e-3)  # H100 SXM: 3.35 TB/s


def test_known_peaks():
    assert roofline.known_peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert roofline.known_peak_flops("NVIDIA H100 PCIe") == pytest.approx(756.5e12)
    assert roofline.known_peak_flops("Some CPU") is None


def test_utilisation():
    assert roofline.utilisation(50.0, 1.0, 100.0) == pytest.approx(50.0)
    assert roofline.utilisation(1.0, float("nan"), 1.0) != roofline.utilisation(1.0, float("nan"), 1.0)


def test_device_peaks_cached_per_device(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNLAB_CACHE_DIR", str(tmp_path))
    calls = []

    def fake_measure(device):
        calls.append(device)
        return roofline.DevicePeaks("cpu-x", 1e10, "measured-copy", None, 1e10, 1e11, "measured-matmul", 1.0)

    monkeypatch.setattr(roofline, "measure_peaks", fake_measure)
    first = roofline.device_peaks("cpu")
    second = roofline.device_peaks("cpu")
    assert first == second and calls == ["cpu"]
    assert list((tmp_path / "perf").glob("peaks-*.json"))
    roofline.device_peaks("cpu", refresh=True)
    assert calls == ["cpu", "cpu"]
