"""quant.export: packed states written as compressed-tensors / GPTQ / AWQ checkpoints, checked against
the readers of those formats (compressed-tensors' packer, dequantizer and AutoAWQ converter, the GPTQ
reader used on gptqmodel's output, transformers' loader) and the weights the HF fake-quantized model runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pytest_attnlab.models.cache import COMPLETE
from pytest_attnlab.models.loader import load_model
from pytest_attnlab.models.random_models import RANDOM_CONFIGS, TINY_QWEN2
from pytest_attnlab.models.spec import parse_model
from pytest_attnlab.paths import vllm_quant
from pytest_attnlab.quant import QUANTIZERS, quantize
from pytest_attnlab.quant.export import EXPORT_FORMATS, ExportUnsupported, export, format_for, unsupported_reason
from pytest_attnlab.quant.export.base import WEIGHTS_FILE, linear_codes
from pytest_attnlab.quant.export.packing import AWQ_ORDER, awq_permute, awq_unpermute, pack_int32, unpack_int32
from pytest_attnlab.quant.gptq import unpack_gptq
from pytest_attnlab.quant.layers import target_linears

#: tiny Qwen2 (q/k/v bias, tied embeddings) whose sizes 64 and 192 hold whole groups of 32 and 64
SHAPE = "tiny-qwen2-whole-groups"
RANDOM_CONFIGS.register(SHAPE, lambda: {**TINY_QWEN2, "intermediate_size": 192}, replace=True)


@pytest.fixture(scope="module")
def tiny():
    return load_model(parse_model(f"random:{SHAPE}"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("quant-cache")


def _q(tiny, cache: Path, name: str):
    return quantize(tiny, name, cache=cache)


def _export(qm, fmt: str, tmp_path: Path) -> Path:
    return export(qm, fmt, dest=tmp_path / fmt)


# -- packing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bits", "dim"), [(4, 0), (4, 1), (8, 0), (8, 1)])
def test_pack_int32_round_trips_and_matches_compressed_tensors(bits: int, dim: int) -> None:
    gen = torch.Generator().manual_seed(bits + dim)
    codes = torch.randint(0, 2**bits, (64, 96), generator=gen, dtype=torch.int32)
    words = pack_int32(codes, bits, dim)
    assert words.dtype == torch.int32 and words.shape[dim] == codes.shape[dim] * bits // 32
    assert torch.equal(unpack_int32(words, bits, dim), codes)
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    # compressed-tensors packs signed codes q - 2**(bits-1) and adds the offset back: the same words
    signed = (codes - 2 ** (bits - 1)).to(torch.int8)
    assert torch.equal(helpers.pack_to_int32(signed, bits, packed_dim=dim), words)


def test_pack_int32_rejects_codes_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 16\)"):
        pack_int32(torch.tensor([[16, 0, 0, 0, 0, 0, 0, 0]]), 4, dim=1)
    with pytest.raises(ValueError, match="not a multiple of 8"):
        pack_int32(torch.zeros(2, 12, dtype=torch.int32), 4, dim=1)


def test_awq_nibble_order_is_autoawqs() -> None:
    codes = torch.arange(16, dtype=torch.int32).remainder(16)[None].repeat(3, 1)
    # AutoAWQ WQLinear_GEMM.from_linear: qweight[:, col] |= intweight[:, col * 8 + order_map[i]] << (4 * i)
    expected = torch.zeros(3, 2, dtype=torch.int64)
    for col in range(2):
        for i in range(8):
            expected[:, col] |= codes[:, col * 8 + AWQ_ORDER[i]].to(torch.int64) << (4 * i)
    expected = torch.where(expected >= 2**31, expected - 2**32, expected).to(torch.int32)
    assert torch.equal(pack_int32(awq_permute(codes), 4, dim=1), expected)
    assert torch.equal(awq_unpermute(awq_permute(codes)), codes)


# -- formats against their readers -------------------------------------------------------------------


@pytest.mark.parametrize("quant", ["rtn-int4-g64-zp", "rtn-int4-g64-sym", "rtn-int8"])
def test_compressed_tensors_export_dequantizes_to_the_fake_quantized_weights(tiny, cache, tmp_path, quant) -> None:
    dequantizer = pytest.importorskip("compressed_tensors.entrypoints.convert.converters.ct_dequantizer")
    qm = _q(tiny, cache, quant)
    folder = _export(qm, "compressed-tensors", tmp_path)
    qcfg = json.loads((folder / "config.json").read_text())["quantization_config"]
    weights = qcfg["config_groups"]["group_0"]["weights"]
    assert qcfg["quant_method"] == "compressed-tensors" and weights["symmetric"] == (quant != "rtn-int4-g64-zp")
    tensors = load_file(str(folder / WEIGHTS_FILE))
    dense = dequantizer.CompressedTensorsDequantizer(folder, dtype=torch.float32).validate(tensors)
    fake = qm.model.state_dict()
    for name in target_linears(qm.model):
        torch.testing.assert_close(dense[f"{name}.weight"], fake[f"{name}.weight"], rtol=0, atol=0)
    _check_float_tensors(dense, tiny.model, qm)


def _check_float_tensors(saved: dict[str, torch.Tensor], base, qm) -> None:
    """Everything but the quantized linears is the base model's, once (the tied lm_head is left out)."""
    quantized = {f"{n}.weight" for n in target_linears(base)}
    base_sd = base.state_dict()
    assert "lm_head.weight" not in saved and base.config.tie_word_embeddings
    for key, value in base_sd.items():
        if key in quantized or key == "lm_head.weight":
            continue
        assert torch.equal(saved[key], value), key
    assert any(k.endswith("q_proj.bias") for k in saved)  # Qwen2's qkv bias travels in float


def test_awq_export_converts_to_the_same_compressed_tensors(tiny, cache, tmp_path) -> None:
    converters = pytest.importorskip("compressed_tensors.entrypoints.convert.converters.autoawq")
    qm = _q(tiny, cache, "rtn-int4-g64-zp")
    awq_folder, ct_folder = _export(qm, "awq", tmp_path), _export(qm, "compressed-tensors", tmp_path)
    converter = converters.AutoAWQConverter.from_pretrained(str(awq_folder))
    converted = converter.process(load_file(str(awq_folder / WEIGHTS_FILE)))
    ours = load_file(str(ct_folder / WEIGHTS_FILE))
    assert set(converted) == set(ours)
    for key, value in ours.items():
        assert torch.equal(converted[key].to(value.dtype), value), key


@pytest.mark.parametrize("quant", ["rtn-int4-g64-sym", "rtn-int8"])
def test_gptq_export_reads_back_with_the_gptq_reader(tiny, cache, tmp_path, quant) -> None:
    qm = _q(tiny, cache, quant)
    folder = _export(qm, "gptq", tmp_path)
    qcfg = json.loads((folder / "quantize_config.json").read_text())
    assert qcfg == json.loads((folder / "config.json").read_text())["quantization_config"]
    assert (qcfg["quant_method"], qcfg["sym"], qcfg["desc_act"], qcfg["checkpoint_format"]) == (
        "gptq",
        True,
        False,
        "gptq",
    )
    tensors = load_file(str(folder / WEIGHTS_FILE))
    for name in qm.state.linears:
        lc = linear_codes(qm.state, name)
        parts = {k: tensors[f"{name}.{k}"] for k in ("qweight", "qzeros", "scales", "g_idx")}
        if qm.state.grid.bits == 4:  # the reader (used on gptqmodel's output) is 4-bit
            back = unpack_gptq(parts, qcfg["group_size"])
            assert torch.equal(back.codes.to(torch.int32), lc.codes) and torch.equal(back.zeros, lc.zeros.float())
        else:
            assert torch.equal(unpack_int32(parts["qweight"], 8, dim=0).t(), lc.codes)
            assert torch.equal(unpack_int32(parts["qzeros"], 8, dim=1).t(), lc.zeros - 1)
        assert torch.equal(parts["scales"].t().float(), lc.scales)


@pytest.mark.parametrize("quant", ["rtn-int4-g64-sym", "rtn-int8"])
def test_transformers_loads_the_symmetric_compressed_tensors_export(tiny, cache, tmp_path, quant) -> None:
    pytest.importorskip("compressed_tensors")
    from transformers import AutoModelForCausalLM

    qm = _q(tiny, cache, quant)
    loaded = AutoModelForCausalLM.from_pretrained(_export(qm, "compressed-tensors", tmp_path), dtype=torch.float32)
    ids = torch.arange(3, 40)[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, qm.model(ids).logits, rtol=0, atol=1e-6)


# -- what cannot be exported says why ----------------------------------------------------------------


def test_unsupported_states_name_the_reason_and_the_alternative(tiny, cache, tmp_path) -> None:
    assert unsupported_reason(_q(tiny, cache, "rtn-int4-g32"), "compressed-tensors").endswith(
        "use an integer zero-point quantizer (rtn-int4-g64-zp, rtn-int4-g128-zp, gptq-*, awq-*)"
    )
    assert "group size 128 does not divide" in unsupported_reason(_q(tiny, cache, "rtn-int4-g128-zp"))
    zp = _q(tiny, cache, "rtn-int4-g64-zp")
    assert "export it as compressed-tensors or awq" in unsupported_reason(zp, "gptq")
    assert "export it as compressed-tensors" in unsupported_reason(_q(tiny, cache, "rtn-int8"), "awq")
    with pytest.raises(ExportUnsupported, match="GPTQ checkpoints here are symmetric"):
        export(zp, "gptq", dest=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    with pytest.raises(KeyError, match="unknown checkpoint format 'gguf'.*compressed-tensors, gptq, awq"):
        format_for(zp, "gguf")


def test_auto_format_is_the_methods_own_when_it_fits(tiny, cache) -> None:
    assert format_for(_q(tiny, cache, "rtn-int4-g64-zp")) == "compressed-tensors"
    qm = _q(tiny, cache, "rtn-int4-g64-sym")
    qm.state.info["method"] = "gptq"  # as GPTQModelQuantizer records it
    try:
        assert format_for(qm) == "gptq"
    finally:
        qm.state.info["method"] = "rtn"
    assert set(EXPORT_FORMATS.names()) == {"compressed-tensors", "gptq", "awq"}


def test_export_is_cached_beside_the_quantizer_and_rebuilt_when_damaged(tiny, cache, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNLAB_CACHE_DIR", str(tmp_path))
    qm = _q(tiny, cache, "rtn-int4-g64-zp")
    folder = export(qm)
    assert folder.name.startswith(qm.cache_entry.name) and (folder / COMPLETE).is_file()
    stamp = (folder / WEIGHTS_FILE).stat().st_mtime_ns
    assert export(qm) == folder and (folder / WEIGHTS_FILE).stat().st_mtime_ns == stamp
    with open(folder / WEIGHTS_FILE, "r+b") as fh:  # a crash mid-write leaves a short file
        fh.truncate(os.path.getsize(folder / WEIGHTS_FILE) // 2)
    export(qm)
    assert load_file(str(folder / WEIGHTS_FILE))  # rebuilt whole
    assert folder.parent == tmp_path / "quant-export"


def test_vllm_path_counts_the_bytes_its_checkpoint_reads(tiny, cache, tmp_path) -> None:
    from pytest_attnlab.paths.vllm import VLLMPath
    from pytest_attnlab.paths.vllm_engine import EngineHolder, EngineSettings
    from pytest_attnlab.perf.roofline import Shape

    qm = _q(tiny, cache, "rtn-int4-g64-zp")
    folder = _export(qm, "compressed-tensors", tmp_path)
    path = VLLMPath(engines=EngineHolder(EngineSettings(dtype="float16"), tmp_path))
    assert path.weights_read(Shape.from_config(tiny.model.config), 1) is None  # nothing prepared yet
    path.folder, path.engine_dtype = folder, "float16"
    weights, kv_elem = path.weights_read(Shape.from_config(tiny.model.config), 1)
    floats = sum(
        t.numel() for k, t in tiny.model.state_dict().items() if k.removesuffix(".weight") not in qm.state.linears
    )
    floats -= tiny.model.lm_head.weight.numel()  # tied: the embedding table once
    packed = 0
    for parts in qm.state.linears.values():
        out, cols = (int(v) for v in parts["shape"])
        groups = cols // 64
        packed += out * cols // 2 + out * groups * 2 + out * groups // 2 + 16  # codes, scales, zero points, shape
    assert (weights, kv_elem) == (floats * 2 + packed, 2)


# -- vLLM routes (no vLLM needed) --------------------------------------------------------------------


def test_vllm_route_exports_integer_grids_and_says_why_not_for_others(tiny, cache, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(vllm_quant, "vllm_lists", lambda method: False)
    assert vllm_quant.route(tiny, on_cpu=True, dtype="float32").how == "plain"
    r = vllm_quant.route(_q(tiny, cache, "rtn-int4-g64-zp"), on_cpu=True, dtype="float32")
    assert r.how == "compressed-tensors export" and r.dtype == "float16" and (r.checkpoint / "config.json").is_file()
    assert vllm_quant.route(_q(tiny, cache, "rtn-int4-g64-zp"), on_cpu=False, dtype="bfloat16").dtype is None
    with pytest.raises(vllm_quant.VLLMQuantUnsupported, match="no CPU kernel for int8 weight-only"):
        vllm_quant.route(_q(tiny, cache, "rtn-int8"), on_cpu=True, dtype="float32")
    assert vllm_quant.route(_q(tiny, cache, "rtn-int8"), on_cpu=False, dtype="float16").how.endswith("export")
    with pytest.raises(vllm_quant.VLLMQuantUnsupported, match="Q4_1 style"):
        vllm_quant.route(_q(tiny, cache, "rtn-int4-g64"), on_cpu=False, dtype="float16")
    assert "rtn-int4-g64-sym" in QUANTIZERS and "rtn-int4-g64-zp" in QUANTIZERS
