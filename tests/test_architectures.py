"""The correctness suite on decoders other than Llama and Qwen2: tiny random Phi-3 (fused qkv and
gate/up), Gemma-2 ((1 + w) RMSNorm, head_dim != hidden / heads, sliding-window layers, soft-capping,
no SDPA), StableLM (LayerNorm with bias, q/k/v bias, partial rotary), GPT-NeoX (per-head interleaved
query_key_value, plain GELU MLP) and OLMo (LayerNorm without parameters), saved to folders and
loaded through `--attnlab-model PATH`. Every selected suite test passes or skips with its reason;
planted bugs in a family's own code (Phi-3's gate/up split reversed, Gemma-2's norm without its + 1)
fail the component checks that read the structure from the model.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from tiny_checkpoints import ARCHS, GPU_ARCHS, build, embedded_tokenizer, main, save

from pytest_attnlab import formulas
from pytest_attnlab.attention import applied, mla
from pytest_attnlab.attention.variants import mla as mla_module
from pytest_attnlab.models.anatomy import anatomy, attention_traits, looks_untrained, text_config

REPO = Path(__file__).resolve().parents[1]
#: a quick cut through suites/correctness: components, shapes, layer diffs, decoding, attention variants,
#: the fast path (a skip on every family here), and the baseline's perplexity bound
SELECTION = [
    "test_components.py",
    "test_tokenizer.py::test_state_dict_shapes",
    "test_layer_diff.py",
    "test_generation.py::test_manual_decode_equals_generate",
    "test_backends.py",
    "test_attention_exact.py::test_attention_gqa_identity",
    "test_attention_exact.py::test_attention_mla_full_rank_is_lossless",
    "test_attention_exact.py::test_attention_full_budget_equals_dense",
]
#: architecture -> skip reasons the selection must give (a fragment of each), beside the fast path's
EXPECTED_SKIPS = {
    "phi3": ["gqa_2 rebuilds separate k_proj/v_proj projections; Phi3Attention has o_proj, qkv_proj"],
    "gemma2": [
        "the reference already runs eager attention (Gemma2ForCausalLM has no sdpa attention",
        "soft-caps its attention logits",
    ],
    "stablelm": ["cannot represent this model's attention, it would build a different model: partial rotary"],
    "gpt_neox": ["has no repeat_kv", "rebuilds separate k_proj/v_proj projections; GPTNeoXAttention"],
    "olmo": [],
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tokenizer = embedded_tokenizer()
    root = tmp_path_factory.mktemp("tiny")
    return {arch: save(build(arch), root / f"tiny-{arch}", tokenizer) for arch in ARCHS}


def _suite(pytester: pytest.Pytester) -> Path:
    dest = pytester.path / "suites"
    shutil.copytree(REPO / "suites" / "correctness", dest, ignore=shutil.ignore_patterns("__pycache__", "golden"))
    shutil.copytree(REPO / "suites" / "correctness" / "golden", dest / "golden")
    return dest


def _run(pytester: pytest.Pytester, model: Path, *selection: str, extra: tuple[str, ...] = ()) -> pytest.RunResult:
    suite = _suite(pytester)
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", "-rs",
        "--attnlab-report-dir", "out", "--attnlab-model", str(model),
        *extra, *(str(suite / s) for s in selection),
    )  # fmt: skip


def _rows(pytester: pytest.Pytester) -> list[dict[str, str]]:
    with open(pytester.path / "out" / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_suite_passes_or_skips_with_the_reason(pytester: pytest.Pytester, checkpoints, arch: str) -> None:
    result = _run(pytester, checkpoints[arch], *SELECTION)
    outcomes = result.parseoutcomes()
    out = result.stdout.str()
    assert result.ret == 0, out[-6000:]
    assert outcomes.get("passed", 0) >= 15 and not outcomes.get("failed") and not outcomes.get("errors"), outcomes
    assert f"UnsupportedModel: the fast decode path supports llama, qwen2, not '{arch}'" in out
    for fragment in EXPECTED_SKIPS[arch]:
        assert fragment in out, f"{arch}: no skip saying {fragment!r}\n{out[-4000:]}"
    rows = _rows(pytester)
    metrics = {r["metric"] for r in rows}
    assert {"mlp_rel_l2", "attention_rel_l2", "norm_rel_l2", "layer_cosine"} <= metrics, metrics
    if arch == "gemma2":  # no SDPA in its transformers class: its own (eager) attention runs, and every row says so
        assert {r["attention"] for r in rows} == {"eager"}
        note = json.loads(rows[0]["extra"])["attention_note"]
        assert "Gemma2ForCausalLM has no sdpa attention (_supports_sdpa = False)" in note
    else:
        assert {r["attention"] for r in rows} >= {"sdpa"}


BUGS = {
    # Phi-3's forward splits gate_up_proj's output into (up, gate) instead of (gate, up)
    "phi3": (
        "test_components.py::test_mlp_matches_formula",
        """
import transformers.models.phi3.modeling_phi3 as m

def forward(self, hidden_states):
    up, gate = self.gate_up_proj(hidden_states).chunk(2, dim=-1)
    return self.down_proj(up * self.activation_fn(gate))

m.Phi3MLP.forward = forward
""",
    ),
    # Gemma-2's RMSNorm scales by w (Llama's convention) instead of its stored offset 1 + w
    "gemma2": (
        "test_components.py::test_norm_matches_formula",
        """
import torch
import transformers.models.gemma2.modeling_gemma2 as m

def forward(self, x):
    out = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
    return (out * self.weight.float()).type_as(x)

m.Gemma2RMSNorm.forward = forward
""",
    ),
}


@pytest.mark.parametrize("arch", list(BUGS))
def test_a_bug_in_the_familys_own_code_fails_the_component_check(pytester: pytest.Pytester, checkpoints, arch) -> None:
    test, patch = BUGS[arch]
    pytester.makepyfile(planted_bug=patch)
    result = _run(pytester, checkpoints[arch], test, extra=("-p", "planted_bug"))
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 3 and not outcomes.get("passed"), result.stdout.str()[-3000:]


@pytest.mark.parametrize(
    ("arch", "attention", "mlp", "norms", "windows", "head_dim", "rotary", "tied"),
    [
        ("phi3", "qkv_o", "gate_up_fused", {"rms"}, [None, None], 16, 16, False),
        ("gemma2", "q_k_v_o", "gate_up_down", {"rms_one_plus_w"}, [16, None], 32, 32, True),
        ("stablelm", "q_k_v_o", "gate_up_down", {"layer_norm"}, [None, None], 16, 8, False),
        ("gpt_neox", "neox", "neox", {"layer_norm"}, [None, None], 16, 8, False),
        ("olmo", "q_k_v_o", "gate_up_down", {"layer_norm_no_affine"}, [None, None], 16, 16, False),
    ],
)
def test_anatomy_reads_each_family(arch, attention, mlp, norms, windows, head_dim, rotary, tied) -> None:
    parts = anatomy(build(arch))
    layer = parts.layers[0]
    assert (layer.attention.layout, layer.mlp.layout) == (attention, mlp), layer.problems
    assert {formulas.norm_kind(n) for n in layer.norms.values()} == norms
    assert [x.sliding_window for x in parts.layers] == windows
    assert (parts.shape.head_dim, parts.rotary_dim, parts.tied_embeddings) == (head_dim, rotary, tied)
    assert not any(x.problems for x in parts.layers)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_each_projection_role_reproduces_the_modules_own_states(arch: str) -> None:
    """q, k, v read from the located rows (fused or not) equal what the module itself computes: the values
    it caches. The row blocks of a fused linear read the wrong way round would not."""
    from transformers import DynamicCache

    from pytest_attnlab.hf_compat import output_cache, with_cache

    model = build(arch)
    parts = anatomy(model)
    attn = parts.attention(0)
    seen: dict[str, torch.Tensor] = {}

    def keep_input(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen.setdefault("x", args[0] if args else kwargs["hidden_states"])

    handle = attn.module.register_forward_pre_hook(keep_input, with_kwargs=True)
    ids = torch.arange(20, 40)[None]
    try:
        with torch.no_grad():
            out = model(ids, **with_cache(model, DynamicCache(config=model.config)), use_cache=True)
    finally:
        handle.remove()
    cache = output_cache(out)
    values = cache.layers[0].values  # [1, kv_heads, kept, head_dim]: v is stored unrotated
    s = parts.shape
    mine = attn.v.apply(seen["x"]).view(1, -1, s.kv_heads, s.head_dim).transpose(1, 2)
    kept = values.shape[2]  # a sliding-window layer keeps its last window - 1 tokens
    torch.testing.assert_close(mine[:, :, -kept:].float(), values, rtol=1e-5, atol=1e-6)
    if attn.v.fused:  # the same rows read contiguously (Phi-3 order) only fit Phi-3
        contiguous = attn.v.linear.weight[-s.kv_heads * s.head_dim :]
        matches = torch.allclose(seen["x"] @ contiguous.T, mine.transpose(1, 2).reshape(1, 20, -1).float(), atol=1e-6)
        assert matches == (attn.layout == "qkv_o")


def test_untrained_checkpoints_are_told_from_trained_ones() -> None:
    model = build("phi3")
    assert looks_untrained(model)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(1.5)  # as training moves a matrix away from init
    assert not looks_untrained(model)
    assert text_config(model).initializer_range == 0.02


@pytest.mark.parametrize(
    ("arch", "overrides", "traits"),
    [
        ("llama", {}, {}),
        ("qwen2", {}, {}),
        ("qwen3", {}, {"extra parts": "Qwen3Attention also applies k_norm, q_norm"}),
        ("mistral", {}, {}),  # its 4096-token window is longer than its 2048 positions: never slides
        ("mistral", {"sliding_window": 16}, {"sliding window": "layers 0, 1 attend over the last 16 tokens"}),
        ("gemma2", {}, {"sliding window": "layer 0 attends over the last 16 tokens", "softcap": "at 50"}),
        ("stablelm", {}, {"partial rotary": "RoPE turns 8 of 16 head dims"}),
        ("gpt_neox", {}, {"partial rotary": "RoPE turns 8 of 16 head dims"}),
        ("olmo", {}, {}),
        ("phi3", {}, {}),
    ],
)
def test_attention_traits_name_what_plain_attention_lacks(arch: str, overrides: dict, traits: dict) -> None:
    found = attention_traits(build(arch, **overrides))
    assert set(found) == set(traits), found
    for trait, fragment in traits.items():
        assert fragment in found[trait], found


@pytest.mark.parametrize("joint", [False, True], ids=["separate", "joint"])
def test_mla_refuses_per_head_qk_norms_instead_of_building_a_wrong_model(monkeypatch, joint: bool) -> None:
    """Qwen3 normalises each head's q and k (q_norm, k_norm); the latent attention rebuilds q and k from
    the projections alone. It refuses, naming them. Planted bug: the refusal removed, the conversion builds
    a model whose logits are off (the H100 saw 35 % of them off, by up to 0.71, before the refusal)."""
    model = build("qwen3", num_hidden_layers=1)
    rank = 64  # full rank: kv heads x head_dim = the hidden size = 64; lossless where it applies
    variant = mla(rank, joint=joint)
    reason = variant.unavailable(model)
    assert reason and "it would build a different model" in reason and "k_norm, q_norm" in reason, reason
    with pytest.raises(ValueError, match="q_norm"):
        applied(model, variant).__enter__()
    ids = torch.arange(20, 60)[None]
    with torch.inference_mode():
        dense = model(ids).logits
        with monkeypatch.context() as patch:
            patch.setattr(mla_module, "_traits_reason", lambda model, name: None)
            with applied(model, variant):
                wrong = model(ids).logits
        assert (wrong - dense).abs().max() > 0.05, "the conversion without the refusal should be visibly wrong"
        attn = model.model.layers[0].self_attn  # control: without the norms, the same conversion is lossless
        attn.q_norm, attn.k_norm = torch.nn.Identity(), torch.nn.Identity()
        assert variant.unavailable(model) is None
        plain = model(ids).logits
        with applied(model, variant):
            torch.testing.assert_close(model(ids).logits, plain, rtol=1e-4, atol=1e-4)


def test_checkpoint_maker_names_the_architectures_it_knows(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["/nonexistent", "llama", "falcon"])
    err = capsys.readouterr().err
    assert "unknown architecture falcon; choose from " + ", ".join(GPU_ARCHS) in err
