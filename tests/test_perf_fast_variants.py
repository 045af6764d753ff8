"""The fast path's variants on tiny random Qwen2 (q/k/v bias, tied embeddings) and Llama (untied)
models on CPU: fused == separate weights, int4 against the rtn-int4 quantizers' dequantized weights,
the bytes a step reads, the compile scope, the inductor cache and compile time, the options."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from pytest_attnlab.generation import decode_loop
from pytest_attnlab.models import random_models
from pytest_attnlab.paths import FastPath, PathOptions
from pytest_attnlab.paths import static_decode as sd
from pytest_attnlab.paths.base import FAST_QUANT
from pytest_attnlab.paths.fast import inductor_cache_dir
from pytest_attnlab.paths.fast_weights import Concat, Int4
from pytest_attnlab.perf import roofline

ARCH = {"qwen2": {}, "llama": {"model_type": "llama", "tie_word_embeddings": False}}
#: widths that groups of 32 and 128 divide (tiny-qwen2's own 176-wide MLP fits neither)
SHAPE = {"hidden_size": 128, "intermediate_size": 256}
#: the issue's gate: int4 logits against the same quantized weights dequantized, per step
INT4_COSINE = 0.999
STEPS = 5


def tiny(arch: str, dtype: torch.dtype = torch.float32, **overrides: object) -> torch.nn.Module:
    return random_models.build(
        "tiny-qwen2", dtype=dtype, attn_implementation="sdpa", **{**SHAPE, **ARCH[arch], **overrides}
    )


def prompt(batch: int = 2, length: int = 10) -> torch.Tensor:
    return torch.randint(16, 4000, (batch, length), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def step_logits(sm: sd.StaticModel, ids: torch.Tensor, tokens: torch.Tensor, attention: str = "math") -> torch.Tensor:
    """Prefill, then feed `tokens` one by one: the logits of every step [batch, steps, vocab], float32, on
    ids' device (the suite's _teacher_forced_logits)."""
    sm.decode_attention = attention
    cache = sd.new_cache(sm, ids.shape[0], 64)
    out = [sd.prefill(sm, cache, ids)]
    for i in range(tokens.shape[1] - 1):
        pos = torch.tensor([ids.shape[1] + i], device=ids.device)
        out.append(sd.decode_one_token(sm, cache, tokens[:, i : i + 1].to(ids.device), pos))
    return torch.stack(out, dim=1).float()


def rtn(model: torch.nn.Module, quant: str) -> torch.nn.Module:
    """A copy of `model` whose decoder linears hold the rtn-<quant> quantizer's dequantized weights."""
    from pytest_attnlab.quant.methods import QUANTIZERS
    from pytest_attnlab.quant.packed import apply

    state = QUANTIZERS.get(f"rtn-{quant}").make_state(model, None)  # RTN reads no calibration context
    return apply(copy.deepcopy(model), state, "fake")


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the logits, per row and step."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


# -- fused vs separate ---------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["sdpa", "math"])
@pytest.mark.parametrize("arch", ARCH)
def test_fused_and_separate_weights_give_the_same_logits(arch, attention):
    model = tiny(arch)
    ids = prompt()
    ref = decode_loop(model, ids, STEPS)
    separate = sd.from_hf(model, "separate")
    fused = sd.from_hf(model, "fused")
    assert isinstance(separate.layers[0].qkv, Concat) and len(separate.layers[0].qkv.parts) == 3
    assert not isinstance(fused.layers[0].qkv, Concat)
    got_separate = step_logits(separate, ids, ref.tokens, attention)
    got_fused = step_logits(fused, ids, ref.tokens, attention)
    torch.testing.assert_close(got_separate, got_fused, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_fused, ref.logits, atol=2e-5, rtol=2e-5)


# -- int4 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("quant", [q for q in FAST_QUANT if q != "none"])
@pytest.mark.parametrize("arch", ARCH)
def test_int4_logits_match_the_rtn_dequantized_weights(arch, quant, dtype):
    model = tiny(arch, dtype)
    ids = prompt()
    ref = decode_loop(rtn(model, quant), ids, STEPS)  # HF on the rtn quantizer's weights, same dtype
    got = step_logits(sd.from_hf(model, "fused", quant), ids, ref.tokens)
    worst = cosines(got, ref.logits).min().item()
    assert worst >= INT4_COSINE, f"{quant} {dtype}: cosine {worst:.5f} < {INT4_COSINE}"
    if dtype == torch.float32:  # the same weights in float32: equal up to summation order
        torch.testing.assert_close(got, ref.logits, atol=1e-4, rtol=1e-4)


def test_int4_cosine_gate_catches_a_wrong_zero_point():
    """The planted bug: zeros stored as the group minimum, forgetting tinygemm's `- 8` offset."""
    model = tiny("qwen2")
    ids = prompt()
    ref = decode_loop(rtn(model, "int4-g32"), ids, STEPS)
    sm = sd.from_hf(model, "separate", "int4-g32")
    for layer in sm.layers:
        for lin in [*layer.qkv.parts, layer.o, *layer.gate_up.parts, layer.down]:
            lin.scales_and_zeros[..., 1] -= 8 * lin.scales_and_zeros[..., 0]
    worst = cosines(step_logits(sm, ids, ref.tokens), ref.logits).min().item()
    assert worst < INT4_COSINE


@pytest.mark.parametrize("group", [32, 128])
def test_int4_weights_are_the_rtn_quantizers(group):
    model = tiny("qwen2")
    want = rtn(model, f"int4-g{group}").model.layers[1]
    got = sd.from_hf(model, "separate", f"int4-g{group}").layers[1]
    for lin, ref in (
        (got.qkv.parts[0], want.self_attn.q_proj),
        (got.qkv.parts[2], want.self_attn.v_proj),
        (got.down, want.mlp.down_proj),
    ):
        assert isinstance(lin, Int4)
        torch.testing.assert_close(lin.dequantized(), ref.weight, atol=1e-7, rtol=0)


def test_int4_needs_a_group_that_divides_the_width():
    model = tiny("qwen2", intermediate_size=176)  # down_proj's 176 inputs: 5.5 groups of 32
    with pytest.raises(sd.UnsupportedModel, match="--attnlab-perf-fast-quant int4-g32: int4 group 32 does not divide"):
        sd.from_hf(model, "fused", "int4-g32")


def test_int4_greedy_tokens_equal_hf_on_rtn_int4_g32_embedded(model_factory):
    """The issue's check: on the trained model, HF generate over the rtn-int4-g32 weights and the
    fast path's own int4-g32 packing agree token for token (CPU, float32)."""
    from pytest_attnlab.generation import hf_generate
    from pytest_attnlab.prompts import load_prompts
    from pytest_attnlab.quant import quantize

    loaded = model_factory("embedded", device="cpu", dtype=torch.float32)
    quantized = quantize(loaded, "rtn-int4-g32", cache=False)
    ids = load_prompts()[0].encode(loaded.tokenizer)
    n = 12
    kwargs = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None, "min_new_tokens": n}
    ref = hf_generate(quantized.model, ids, n, **kwargs).tokens
    path = FastPath(PathOptions(quant="int4-g32"))
    path.prepare(loaded.model, 1, ids.shape[1], n)
    assert torch.equal(path.generate(ids, n, lambda: None), ref)


# -- bytes a step reads --------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("arch", ARCH)
def test_dense_step_bytes_equal_the_roofline_count(arch, batch):
    model = tiny(arch)
    shape = roofline.Shape.from_config(model.config)
    for weights in ("fused", "separate"):
        sm = sd.from_hf(model, weights)
        assert sm.step_weight_bytes(batch) == roofline.weight_bytes_per_step(model, shape, batch, 4)


@pytest.mark.parametrize("group", [32, 128])
@pytest.mark.parametrize("arch", ARCH)
def test_int4_weights_read_counts_packed_codes_and_scales(arch, group):
    """Codes at half a byte a weight, plus a scale and a zero (float32 on CPU, bf16 on CUDA) per
    group; biases, norms, the lm_head and the embedding rows as the dense count has them."""
    model = tiny(arch)
    shape = roofline.Shape.from_config(model.config)
    dense = roofline.weight_bytes_per_step(model, shape, 2, 4)
    path = FastPath(PathOptions(quant=f"int4-g{group}"))
    path.prepare(model, 2, 8, 4)
    h, i, q, kv = shape.hidden, shape.intermediate, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    linears = [(q + 2 * kv, h), (h, q), (2 * i, h), (h, i)]  # (out, in) of qkv, o, gate_up, down
    per_layer_dense = sum(n * k * 4 for n, k in linears)
    per_layer_int4 = sum(n * k // 2 + (k // group) * n * 2 * 4 for n, k in linears)
    assert path.weights_read(shape, 2) == (dense + shape.layers * (per_layer_int4 - per_layer_dense), 4)
    dense_path = FastPath(PathOptions())
    dense_path.prepare(model, 2, 8, 4)
    assert dense_path.weights_read(shape, 2) is None  # the HF model's own parameter count stands


# -- compile scope, inductor cache, compile time --------------------------------------------------


def test_inductor_cache_dir_is_set_only_inside(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")
    with inductor_cache_dir(str(tmp_path / "ind")):
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "ind")
        assert (tmp_path / "ind").is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/elsewhere"
    with inductor_cache_dir(""):  # torch's own default: left alone
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/elsewhere"


def test_layer_scope_compiles_one_graph_for_every_layer_and_the_cache_serves_a_second_run(tmp_path):
    """compile_s is recorded; a second compile of the same variant and cell (a fresh dynamo, as a new
    process has) loads from the inductor cache directory; the tokens are the eager step's."""
    from torch._dynamo.utils import counters

    model = tiny("qwen2", num_hidden_layers=2)
    ids = prompt(1, 10)
    eager = FastPath(PathOptions(quant="int4-g32"))
    eager.prepare(model, 1, 10, 4)
    want = eager.generate(ids, 4, lambda: None)
    seen = []
    for _ in range(2):
        torch._dynamo.reset()
        counters.clear()
        opts = PathOptions(compile="default", compile_scope="layer", quant="int4-g32", inductor_cache=str(tmp_path))
        path = FastPath(opts)
        path.prepare(model, 1, 10, 4)
        assert torch.equal(path.generate(ids, 4, lambda: None), want)
        assert counters["stats"]["unique_graphs"] == 1  # every layer runs the one compiled graph
        seen.append((path.compile_s, path.compile_cache))
    (first_s, first), (second_s, second) = seen
    assert (first, second) == ("miss", "hit")
    assert first_s is not None and second_s is not None and second_s < first_s
    assert (tmp_path / "fxgraph").is_dir()


def test_variant_context_keeps_rows_of_different_variants_apart():
    a = PathOptions(compile="default", quant="int4-g32")
    b = PathOptions(compile="default", quant="int4-g128")
    assert a.context() != b.context()
    assert a.variant == "default-step-math-fused-int4-g32-torch"
    assert PathOptions().context()["compile_scope"] == "none"  # the scope means nothing uncompiled
    with pytest.raises(ValueError, match="choose from: fused, separate"):
        PathOptions(weights="packed")
    with pytest.raises(ValueError, match="choose from: torch, triton, triton-fused"):
        PathOptions(gemv="cutlass")
    assert PathOptions(gemv="triton").context()["fast_gemv"] == "triton"


def test_auto_picks_the_cuda_variant_on_cuda_with_triton_and_the_torch_ops_elsewhere(monkeypatch):
    import importlib.util

    from pytest_attnlab.paths import base

    # the pick measured fastest with its checks passing on a GPU (base.AUTO_FAST's comment, docs/perf.md)
    assert base.AUTO_FAST == {
        "gemv": ("triton-fused", "torch"),
        "fast_attention": ("triton", "math"),
        "compile": ("none", "none"),
    }
    found = {"triton": object()}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: found.get(name))
    assert base.resolve_auto("gemv", "auto", "cuda:0") == "triton-fused"
    assert base.resolve_auto("fast_attention", "auto", "cuda") == "triton"
    assert base.resolve_auto("gemv", "auto", "cpu") == "torch"
    assert base.resolve_auto("fast_attention", "auto", "mps") == "math"
    assert base.resolve_auto("gemv", "triton", "cpu") == "triton"  # a value given is kept (its own skip says why)
    assert base.auto_wide_from("auto", "auto", "cuda:0") == base.AUTO_WIDE_BATCH == 2
    assert base.auto_wide_from("auto", "none", "cuda:0") == 0  # a compile mode given: every batch as resolved
    assert base.auto_wide_from("triton-fused", "auto", "cuda:0") == 0
    assert base.auto_wide_from("auto", "auto", "cpu") == 0
    found.clear()  # CUDA without triton (a source build of torch)
    assert base.resolve_auto("gemv", "auto", "cuda:0") == "torch"
    assert base.resolve_auto("fast_attention", "auto", "cuda:0") == "math"
    assert base.auto_wide_from("auto", "auto", "cuda:0") == 0


def test_auto_runs_the_compiled_cublas_step_from_its_wide_batch_on():
    from pytest_attnlab.paths.fast import CompiledStep

    auto = PathOptions(gemv="triton-fused", fast_attention="triton", wide_from=8)
    assert auto.for_batch(1) is auto and auto.for_batch(7) is auto  # (auto's own wide batch is AUTO_WIDE_BATCH)
    wide = auto.for_batch(8)
    assert (wide.gemv, wide.compile, wide.compile_scope, wide.fast_attention) == ("torch", "default", "step", "triton")
    assert wide.context()["fast_gemv"] == "torch" and wide.for_batch(32) is wide
    assert PathOptions(quant="int4-g128", wide_from=8).for_batch(32).compile == "none"  # int4 keeps its kernels
    assert PathOptions(gemv="triton-fused").for_batch(32).gemv == "triton-fused"  # not auto: never switched
    # the fast path builds each cell's variant (on CPU: torch GEMVs with a wide batch of 2; nothing compiles
    # before the first step)
    fast = FastPath(PathOptions(wide_from=2))
    model = tiny("qwen2")
    fast.prepare(model, 1, 8, 4)
    assert fast.cell.compile == "none" and not isinstance(fast.step, CompiledStep)
    fast.prepare(model, 2, 8, 4)
    assert fast.cell.compile == "default" and isinstance(fast.step, CompiledStep)


def test_auto_is_the_default_and_resolves_to_the_cpu_pick_in_the_csv_context(pytester, run_attnlab):
    pytester.makepyfile(
        """
        def test_opts(path_options):
            assert path_options.gemv == "torch" and path_options.fast_attention == "math"
            assert path_options.compile == "none" and path_options.wide_from == 0
            ctx = path_options.context()
            assert (ctx["fast_gemv"], ctx["fast_attention"]) == ("torch", "math")
        """
    )
    run_attnlab("--attnlab-device", "cpu").assert_outcomes(passed=1)


# -- the Triton kernels' options on a machine without CUDA (the kernels themselves: test_triton_kernels.py) --


def test_gemv_formats_are_a_registry_and_triton_needs_cuda():
    from pytest_attnlab.paths.fast_weights import GEMV_FORMATS, Dense, UnsupportedGemv

    assert GEMV_FORMATS.names() == ["torch", "triton", "triton-fused", "marlin"]
    assert GEMV_FORMATS.get("torch")(torch.device("cpu")) == (Dense, Int4)
    for name in ("triton", "triton-fused"):
        with pytest.raises(UnsupportedGemv, match=f"gemv {name} runs Triton kernels on CUDA; the model is on cpu"):
            GEMV_FORMATS.get(name)(torch.device("cpu"))
    with pytest.raises(UnsupportedGemv, match="gemv marlin runs Marlin on CUDA; the model is on cpu"):
        GEMV_FORMATS.get("marlin")(torch.device("cpu"))


def test_marlin_variant_skips_on_cpu_with_its_reason():
    with pytest.raises(sd.UnsupportedModel, match="fast-gemv marlin runs Marlin on CUDA"):
        sd.from_hf(tiny("qwen2"), "fused", "int4-g128-zp", gemv="marlin")


def test_triton_variants_skip_on_cpu_with_their_reason():
    model = tiny("qwen2")
    with pytest.raises(sd.UnsupportedModel, match="fast-gemv triton runs Triton kernels on CUDA"):
        sd.from_hf(model, gemv="triton")
    with pytest.raises(sd.UnsupportedModel, match="fast-gemv triton-fused runs Triton kernels on CUDA"):
        sd.from_hf(model, gemv="triton-fused")
    with pytest.raises(ValueError, match="choose from .* / .* / \\('torch', 'triton', 'triton-fused', 'marlin'\\)"):
        sd.from_hf(model, gemv="cutlass")
    sm = sd.from_hf(model)
    sd.check_decode_attention(sm, "math")  # runs anywhere
    with pytest.raises(sd.UnsupportedModel, match="fast-attention triton runs Triton kernels on CUDA"):
        sd.check_decode_attention(sm, "triton")
    fast = FastPath(PathOptions(fast_attention="triton"))
    with pytest.raises(sd.UnsupportedModel, match="fast-attention triton"):
        fast.prepare(model, 1, 8, 4)


def test_silu_mul_of_a_format_without_a_fused_kernel_is_hfs_mlp():
    from pytest_attnlab.paths.fast_weights import Dense, silu_mul

    w, x = torch.randn(12, 8), torch.randn(2, 8)
    gate, up = w[:6], w[6:]
    expected = torch.nn.functional.silu(x @ gate.T) * (x @ up.T)
    torch.testing.assert_close(silu_mul(Dense(w), x), expected)


# -- options --------------------------------------------------------------------------------------

FLAGS = (
    "--attnlab-perf-fast-weights",
    "--attnlab-perf-fast-quant",
    "--attnlab-perf-compile-scope",
    "--attnlab-perf-fast-gemv",
    "--attnlab-perf-gemv-configs",
)


def test_help_lists_the_fast_path_options(pytester):
    result = pytester.runpytest("--help")
    for flag in (*FLAGS, "--attnlab-perf-inductor-cache"):
        result.stdout.fnmatch_lines([f"*{flag}*"])


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--attnlab-perf-fast-weights", "packed"],
            "*fast-weights: invalid value 'packed'; choose from: fused, separate*",
        ),
        (
            ["--attnlab-perf-fast-quant", "int3"],
            "*fast-quant: invalid value 'int3'; choose from: none, int4-g128, int4-g32, int4-g128-zp*",
        ),
        (["--attnlab-perf-compile-scope", "model"], "*compile-scope: invalid value 'model'; choose from: step, layer*"),
        (
            ["--attnlab-perf-inductor-cache", ""],
            "*inductor-cache: invalid value ''; choose from: auto, torch, a directory*",
        ),
        (
            ["--attnlab-perf-fast-gemv", "cutlass"],
            "*fast-gemv: invalid value 'cutlass'; choose from: auto, torch, triton*",
        ),
        (
            ["--attnlab-perf-fast-attention", "flash"],
            "*fast-attention: invalid value 'flash'; choose from: auto, sdpa, math, triton*",
        ),
        (
            ["--attnlab-perf-gemv-configs", "1x1024w4,1x1024"],
            "*gemv-configs: 1x1024 is not a config; write BLOCK_NxBLOCK_KwWARPS*e.g. 1x1024w4, 2x2048w4s3pdl or*",
        ),
    ],
)
def test_bad_values_are_usage_errors_naming_the_choices(pytester, args, message):
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_inductor_cache_that_is_a_file_is_a_usage_error(pytester):
    taken = pytester.makefile(".txt", taken="")
    result = pytester.runpytest("--attnlab-perf-inductor-cache", str(taken))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*inductor-cache: invalid value*choose from: auto, torch, a directory*"])


def test_options_reach_the_fast_path(pytester, monkeypatch):
    monkeypatch.setenv("ATTNLAB_CACHE_DIR", str(pytester.path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    pytester.makepyfile(
        test_opts="""
        import os
        from pytest_attnlab.perf.plugin import PERF_STATE_KEY

        def test_opts(request):
            opts = request.config.stash[PERF_STATE_KEY].path("fast").options
            assert (opts.weights, opts.quant, opts.compile_scope) == ("separate", "int4-g32", "layer")
            assert (opts.gemv, opts.fast_attention) == ("triton", "triton")
            assert request.config.stash[PERF_STATE_KEY].settings.gemv_configs == ("1x1024w4", "2x2048w4s3pdl")
            assert opts.inductor_cache == os.path.join(os.environ["ATTNLAB_CACHE_DIR"], "inductor")
        """
    )
    args = ("--attnlab-perf-fast-weights", "separate", "--attnlab-perf-fast-quant", "int4-g32")
    args += ("--attnlab-perf-fast-gemv", "triton", "--attnlab-perf-fast-attention", "triton")
    args += ("--attnlab-perf-gemv-configs", "1x1024w4, 2x2048w4s3pdl")
    result = pytester.runpytest(*args, "--attnlab-perf-compile-scope", "layer")
    result.assert_outcomes(passed=1)


def test_inductor_cache_values(monkeypatch, tmp_path):
    from pytest_attnlab.paths.options import resolve_inductor_cache as resolve

    monkeypatch.setenv("ATTNLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert resolve("auto") == str(tmp_path / "inductor")
    assert resolve("torch") == ""  # torch's own default directory
    monkeypatch.chdir(tmp_path)
    assert resolve("ind") == str(tmp_path / "ind")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/set/by/user")
    assert resolve("auto") == "/set/by/user"


# -- the suite's int4 references and the greedy tie rule (suites/perf/test_fast_path.py) ----------------


def _suite():
    """suites/perf/test_fast_path.py as a module (its helpers hold the gates under test)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "suites" / "perf" / "test_fast_path.py"
    spec = importlib.util.spec_from_file_location("attnlab_suite_fast_path", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_int4_weight_error_catches_a_wrong_zero_point():
    suite = _suite()
    model = tiny("qwen2")
    sm = sd.from_hf(model, "separate", "int4-g32")
    reference = rtn(model, "int4-g32")
    assert suite._int4_weight_error(sm, reference) <= 1e-6  # float32 scales and zeros: the same weights
    for layer in sm.layers:  # the planted bug: tinygemm's "- 8" offset forgotten in the zeros
        for lin in [*layer.qkv.parts, layer.o, *layer.gate_up.parts, layer.down]:
            lin.scales_and_zeros[..., 1] -= 8 * lin.scales_and_zeros[..., 0]
    assert suite._int4_weight_error(sm, reference) > suite.INT4_WEIGHT_REL_ERR


def test_greedy_split_is_accepted_only_at_a_tie():
    suite = _suite()
    model = tiny("llama", torch.bfloat16)
    ids = prompt(batch=1)
    ref = decode_loop(model, ids, STEPS).tokens
    with torch.no_grad():
        logits = model(torch.cat([ids, ref[:, :2]], dim=1)).logits[:, -1].float()
    worst = logits.argmin(dim=-1)  # a planted wrong token at step 2: far from any tie
    got = ref.clone()
    got[:, 2] = worst
    margin, tol = suite._tie_margin(model, ids, ref, got, 2)
    assert margin == pytest.approx((logits.max() - logits.min()).item()) and margin > tol
    assert tol == pytest.approx(2 * torch.finfo(torch.bfloat16).eps * logits.max().abs().item())
