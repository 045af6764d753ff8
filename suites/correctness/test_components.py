"""Components of the real model, each against an independent formula evaluated in float64.

Inputs are the tensors that really flowed into each module during a forward pass on a chat prompt
(captured with forward hooks), for the first, a middle and the last decoder layer.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from pytest_attnlab.probe import decoder_layers

# float32 modules must match the float64 formula elementwise. In 16-bit, elementwise bounds break
# on large activations (the last MLP's outputs reach ~1e3, where a bf16 ulp is 8), so those are
# held to a norm-wise relative error: a few units of the format's rounding (bf16 2**-8, fp16 2**-11).
ELEMENTWISE = {"atol": 1e-4, "rtol": 1e-4}
REL_L2 = {torch.bfloat16: 2e-2, torch.float16: 4e-3}
WHERE = ["first", "middle", "last"]


def _linear(x: torch.Tensor, lin: torch.nn.Linear) -> torch.Tensor:
    bias = None if lin.bias is None else lin.bias.double()
    return F.linear(x, lin.weight.double(), bias)


@pytest.fixture(scope="module")
def captured(attnlab_model, chat_ids):
    """where -> {module name -> (inputs, kwargs, output)} for three decoder layers."""
    layers = decoder_layers(attnlab_model.model)
    index = {"first": 0, "middle": len(layers) // 2, "last": len(layers) - 1}
    store: dict[str, dict] = {w: {} for w in WHERE}
    handles = []
    for where, i in index.items():
        layer = layers[i]
        for name in ("input_layernorm", "mlp", "self_attn"):

            def hook(module, args, kwargs, output, where=where, name=name):
                store[where][name] = (args, kwargs, output)

            handles.append(getattr(layer, name).register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.inference_mode():
            attnlab_model.model(chat_ids.to(attnlab_model.device))
    finally:
        for h in handles:
            h.remove()
    return {"layers": layers, "index": index, "io": store}


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, metrics, what: str) -> None:
    actual, expected = actual.detach().double().cpu(), expected.detach().cpu()
    rel = float((actual - expected).norm() / expected.norm())
    metrics.record(f"{what}_max_abs_diff", (actual - expected).abs().max(), "abs")
    metrics.record(f"{what}_rel_l2", rel, threshold=REL_L2.get(dtype))
    if dtype == torch.float32:
        torch.testing.assert_close(actual, expected, **ELEMENTWISE)
    else:
        assert rel <= REL_L2[dtype], f"{what}: relative L2 error {rel:.3g} > {REL_L2[dtype]} for {dtype}"


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _rope_closed_form(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.double()[:, None] * inv_freq[None, :]
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos(), emb.sin()


@pytest.mark.parametrize(
    ("max_pos", "atol"),
    [
        pytest.param(128, 1e-5, id="pos0-127"),
        # HF forms position * inv_freq in float32: the angle carries up to ~1 ulp of the position,
        # so beyond 128 the honest bound grows with it (4 * max_pos * 2**-24).
        pytest.param(8192, 4 * 8192 * 2**-24, id="pos0-8191"),
    ],
)
def test_rope_matches_closed_form(attnlab_model, max_pos, atol, metrics):
    config = attnlab_model.model.config
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type != "default":
        pytest.skip(f"closed form covers default RoPE only; this model uses {rope_type!r}")
    rotary = attnlab_model.model.model.rotary_emb
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    positions = torch.arange(max_pos, device=attnlab_model.device)[None]
    x = torch.zeros(1, max_pos, head_dim, device=attnlab_model.device, dtype=torch.float32)
    cos, sin = rotary(x, positions)
    ref_cos, ref_sin = _rope_closed_form(positions[0].cpu(), head_dim, _rope_theta(config))
    err = max((cos[0].double().cpu() - ref_cos).abs().max(), (sin[0].double().cpu() - ref_sin).abs().max())
    metrics.record("rope_max_abs_diff", err, "abs", threshold=atol, max_pos=max_pos, theta=_rope_theta(config))
    torch.testing.assert_close(cos[0].double().cpu(), ref_cos, atol=atol, rtol=0)
    torch.testing.assert_close(sin[0].double().cpu(), ref_sin, atol=atol, rtol=0)


@pytest.mark.parametrize("where", WHERE)
def test_rmsnorm_matches_formula(attnlab_model, captured, where, metrics):
    args, _, out = captured["io"][where]["input_layernorm"]
    norm = captured["layers"][captured["index"][where]].input_layernorm
    x = args[0].double()
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
    ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.weight.double()
    _close(out, ref, attnlab_model.dtype, metrics, "rmsnorm")


@pytest.mark.parametrize("where", WHERE)
def test_swiglu_mlp_matches_formula(attnlab_model, captured, where, metrics):
    args, _, out = captured["io"][where]["mlp"]
    mlp = captured["layers"][captured["index"][where]].mlp
    x = args[0].double()
    ref = _linear(F.silu(_linear(x, mlp.gate_proj)) * _linear(x, mlp.up_proj), mlp.down_proj)
    _close(out, ref, attnlab_model.dtype, metrics, "swiglu")


def test_gqa_repeat_kv_matches_head_index_formula(attnlab_model, captured):
    attn = captured["layers"][0].self_attn
    repeat_kv = sys.modules[type(attn).__module__].repeat_kv
    config = attnlab_model.model.config
    n_kv, n_heads = config.num_key_value_heads, config.num_attention_heads
    kv = torch.randn(2, n_kv, 7, 16, dtype=torch.float64)
    out = repeat_kv(kv, n_heads // n_kv)
    assert out.shape == (2, n_heads, 7, 16)
    for h in range(n_heads):  # query head h reads key/value head h // (n_heads / n_kv)
        assert torch.equal(out[:, h], kv[:, h // (n_heads // n_kv)])


@pytest.mark.parametrize("where", WHERE)
def test_gqa_attention_matches_formula(attnlab_model, captured, where, metrics):
    """q/k/v projections, RoPE, grouped heads, causal softmax, o_proj: recomputed in float64."""
    _, kwargs, out = captured["io"][where]["self_attn"]
    attn = captured["layers"][captured["index"][where]].self_attn
    config = attnlab_model.model.config
    x = kwargs["hidden_states"].double()
    cos, sin = (t.double() for t in kwargs["position_embeddings"])
    b, s, _ = x.shape
    n_heads, n_kv = config.num_attention_heads, config.num_key_value_heads
    d = getattr(config, "head_dim", None) or config.hidden_size // n_heads

    def heads(t: torch.Tensor, n: int) -> torch.Tensor:
        return t.view(b, s, n, d).transpose(1, 2)

    def rope(t: torch.Tensor) -> torch.Tensor:
        half = torch.cat([-t[..., d // 2 :], t[..., : d // 2]], dim=-1)
        return t * cos[:, None] + half * sin[:, None]

    q = rope(heads(_linear(x, attn.q_proj), n_heads))
    k = rope(heads(_linear(x, attn.k_proj), n_kv))
    v = heads(_linear(x, attn.v_proj), n_kv)
    group = torch.arange(n_heads) // (n_heads // n_kv)
    scores = q @ k[:, group].transpose(-1, -2) / math.sqrt(d)
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal.to(scores.device), float("-inf"))
    ctx = (scores.softmax(-1) @ v[:, group]).transpose(1, 2).reshape(b, s, n_heads * d)
    ref = _linear(ctx, attn.o_proj)
    _close(out[0], ref, attnlab_model.dtype, metrics, "attention")
