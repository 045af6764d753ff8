"""Decode speed and weight memory per quantizer against the unquantized model (was scripts/gpu/quant_decode.py).

    pytest suites/scaling/test_quant_decode.py --attnlab-model random:qwen2.5-0.5b-instruct --attnlab-device cuda \
        --attnlab-dtype bfloat16 --attnlab-quant none,rtn-int8,rtn-int4-g128,rtn-int4-g128-packed,bnb-int8,bnb-nf4 \
        --attnlab-perf-prompt-lens 128 --attnlab-perf-batch 1 --attnlab-perf-new-tokens 64

Per quantizer (--attnlab-quant; list `none` first for the speedups): greedy decode on the hf path
through the generation benchmark (TTFT, TPOT, tok/s... as in suites/perf), then the weights' storage
(weight_bytes: packed bytes for the quantized linears) and the bytes the model holds on the device
(device_bytes_held: fake-quant methods hold dequantized weights), and, after the `none` cell of
the same shape, their ratios to it and tpot_speedup_vs_none. A quantizer whose library is missing skips naming it.
"""

from __future__ import annotations

from pytest_attnlab.quant.packed import weight_bytes

#: the unquantized cells measured so far in this run, per (model, prompt, batch, new tokens): figure -> value
BASELINE: dict[tuple, dict[str, float]] = {}


def held_bytes(model) -> int:
    """Bytes of the distinct storages behind the model's parameters and buffers."""
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in [*model.parameters(), *model.buffers()]
    }
    return sum(storages.values())


def test_quant_decode(
    perf_model, perf_quant, perf_prompt_len, perf_batch, perf_new_tokens, generation_benchmark, metrics
):
    metrics.update_context(**{**perf_model.context(), "quant": perf_quant})
    m = generation_benchmark(
        perf_model,
        prompt_len=perf_prompt_len,
        batch=perf_batch,
        new_tokens=perf_new_tokens,
        path="hf",
        quant=perf_quant,
    )
    cell = {"prompt_len": perf_prompt_len, "batch": perf_batch, "new_tokens": perf_new_tokens}
    figures = {
        "tpot": m.latency()["tpot"],
        "weight_bytes": weight_bytes(perf_model.model),
        "device_bytes_held": held_bytes(perf_model.model),
    }
    metrics.record("weight_bytes", figures["weight_bytes"], "bytes", **cell)
    metrics.record("device_bytes_held", figures["device_bytes_held"], "bytes", **cell)
    key = (perf_model.spec.label, perf_prompt_len, perf_batch, perf_new_tokens)
    if perf_quant == "none":
        BASELINE[key] = figures
    elif key in BASELINE:
        base = BASELINE[key]
        metrics.record("weight_bytes_ratio", figures["weight_bytes"] / base["weight_bytes"], "ratio", **cell)
        metrics.record(
            "device_bytes_held_ratio", figures["device_bytes_held"] / base["device_bytes_held"], "ratio", **cell
        )
        metrics.record("tpot_speedup_vs_none", base["tpot"] / figures["tpot"], "x", **cell)
    assert figures["tpot"] > 0 and figures["weight_bytes"] > 0
