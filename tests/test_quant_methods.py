"""The calibrated methods on the tiny random Qwen2: AWQ's scale folding, GPTQ unpacking, bitsandbytes."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from pytest_attnlab.models.loader import load_model
from pytest_attnlab.models.spec import parse_model
from pytest_attnlab.quant import quantize
from pytest_attnlab.quant.awq import _fold, scale_groups
from pytest_attnlab.quant.gptq import unpack_gptq
from pytest_attnlab.quant.layers import layer_inputs, run_layer


@pytest.fixture(scope="module")
def tiny():
    return load_model(parse_model("random:tiny-qwen2"))


def _ids() -> torch.Tensor:
    return torch.arange(5, 69).reshape(2, 32)


def test_awq_scale_folding_keeps_the_full_precision_layer(tiny) -> None:
    """Dividing the previous op by s and multiplying the next linears' columns by s is exact in float."""
    import copy

    model = copy.deepcopy(tiny.model)
    inputs = layer_inputs(model, _ids())
    layer = model.model.layers[0]
    before = run_layer(layer, inputs)
    groups = scale_groups(layer)
    assert [g["block"] for g in groups] == ["self_attn", "mlp", "mlp.down_proj"]  # GQA: no v->o scaling
    gen = torch.Generator().manual_seed(0)
    for g in groups:
        width = layer.get_submodule(g["linears"][0]).in_features
        _fold(layer, g, torch.rand(width, generator=gen) + 0.5)
    torch.testing.assert_close(run_layer(layer, inputs), before, rtol=1e-4, atol=1e-5)


def test_awq_beats_rtn_on_calibration_like_text(tiny) -> None:
    """Same int4 g128 integer-zero grid: AWQ's searched scales and clipping lose less than plain RTN."""
    ids = tiny.tokenizer(
        "It was the best of times, it was the worst of times, it was the age of wisdom", return_tensors="pt"
    )["input_ids"]
    with torch.no_grad():
        ref = tiny.model(ids).logits
        awq = (
            quantize(tiny, "awq-int4-g128", cache=False, calibration_samples=4, calibration_seqlen=64).model(ids).logits
        )
        rtn = quantize(tiny, "rtn-int4-g128-zp", cache=False).model(ids).logits
    assert float((awq - ref).pow(2).mean()) < float((rtn - ref).pow(2).mean())


def _gptq_pack(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int) -> dict[str, torch.Tensor]:
    """Pack like GPTQ v1: qweight [in/8, out], qzeros (minus one) [groups, out/8], scales [groups, out]."""
    out, cols = codes.shape
    c = codes.t().to(torch.int32).reshape(cols // 8, 8, out)
    qweight = sum((c[:, i] << (4 * i)) for i in range(8)).to(torch.int32)
    z = (zeros.t().to(torch.int32) - 1).reshape(zeros.shape[1], out // 8, 8)
    qzeros = sum((z[..., i] << (4 * i)) for i in range(8)).to(torch.int32)
    g_idx = (torch.arange(cols) // group).to(torch.int32)
    return {"qweight": qweight, "qzeros": qzeros, "scales": scales.t().half(), "g_idx": g_idx}


def test_gptq_checkpoint_unpacks_exactly() -> None:
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (16, 64), generator=gen)
    scales = torch.rand(16, 2, generator=gen).half().float()
    zeros = torch.randint(1, 16, (16, 2), generator=gen).float()
    qt = unpack_gptq(_gptq_pack(codes, scales, zeros, 32), 32)
    assert torch.equal(qt.codes.long(), codes)
    assert torch.equal(qt.scales, scales) and torch.equal(qt.zeros, zeros)


def test_gptq_act_order_checkpoint_is_refused() -> None:
    packed = _gptq_pack(torch.zeros(8, 64, dtype=torch.long), torch.ones(8, 2), torch.ones(8, 2), 32)
    packed["g_idx"] = packed["g_idx"].flip(0)
    with pytest.raises(ValueError, match="act-order"):
        unpack_gptq(packed, 32)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="pip install 'pytest-attnlab[bnb]'")
@pytest.mark.parametrize("name, module", [("bnb-int8", "Linear8bitLt"), ("bnb-nf4", "Linear4bit")])
def test_bitsandbytes_swaps_decoder_linears(name: str, module: str) -> None:
    from pytest_attnlab.models.loader import LoadedModel, LoadOptions
    from pytest_attnlab.models.random_models import build

    # intermediate 192, not tiny-qwen2's 176: bnb's CPU 4-bit kernel packs 32 output rows at a time
    model = build("tiny-qwen2", intermediate_size=192)
    tiny = LoadedModel(model, None, parse_model("random:tiny-qwen2"), LoadOptions(), 0.0)
    q = quantize(tiny, name, cache=False)
    kinds = {type(m).__name__ for n, m in q.model.named_modules() if ".layers." in n}
    assert module in kinds and "Linear" not in kinds
    assert type(q.model.lm_head).__name__ == "Linear"  # lm_head / embeddings stay in float
    with torch.no_grad():
        ref, out = tiny.model(_ids()).logits, q.model(_ids()).logits
    cos = torch.nn.functional.cosine_similarity(ref.flatten(), out.flatten(), dim=0)
    assert float(cos) > 0.9


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="pip install 'pytest-attnlab[bnb]'")
def test_bitsandbytes_4bit_on_cpu_refuses_odd_shapes(tiny) -> None:
    from pytest_attnlab.quant import QuantizerUnavailable

    with pytest.raises(QuantizerUnavailable, match=r"divisible by 32; this model has \[176\]"):
        quantize(tiny, "bnb-nf4", cache=False)
