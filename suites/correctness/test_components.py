"""Components of the real model, each against an independent formula evaluated in float64.

Inputs are the tensors that really flowed into each module during a forward pass on a chat prompt
(captured with forward hooks), for the first, a middle and the last decoder layer. Which modules
play which role is read from the model (`pytest_attnlab.models.anatomy`): separate or fused q/k/v
and gate/up projections, any norm of `formulas.NORM_KINDS` (RMSNorm, Gemma's (1 + w) RMSNorm,
LayerNorm with or without bias), head_dim != hidden / heads, partial rotary, sliding-window layers,
logit soft-capping. A part whose layout is unknown skips with what was found.
"""

from __future__ import annotations

import sys

import pytest
import torch

from pytest_attnlab import formulas
from pytest_attnlab.models.anatomy import UnknownLayout, anatomy, partial_rotary_factor, text_config

# float32 modules must match the float64 formula elementwise. In 16-bit, elementwise bounds break
# on large activations (the last MLP's outputs reach ~1e3, where a bf16 ulp is 8), so those are
# held to a norm-wise relative error: a few units of the format's rounding (bf16 2**-8, fp16 2**-11).
ELEMENTWISE = {"atol": 1e-4, "rtol": 1e-4}
REL_L2 = {torch.bfloat16: 2e-2, torch.float16: 4e-3}
WHERE = ["first", "middle", "last"]


@pytest.fixture(scope="module")
def parts(attnlab_model):
    return anatomy(attnlab_model.model)


@pytest.fixture(scope="module")
def captured(attnlab_model, parts, chat_ids):
    """where -> {module -> (inputs, kwargs, output)} for three decoder layers' attention, MLP and norms."""
    n = len(parts.layers)
    index = {"first": 0, "middle": n // 2, "last": n - 1}
    store: dict[str, dict] = {w: {} for w in WHERE}
    handles = []
    for where, i in index.items():
        layer = parts.layers[i]
        modules = [m for m in (layer.attention, layer.mlp) if m is not None]
        for module in [p.module for p in modules] + list(layer.norms.values()):

            def hook(mod, args, kwargs, output, where=where):
                store[where][mod] = (args, kwargs, output)

            handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.inference_mode():
            attnlab_model.model(chat_ids.to(attnlab_model.device))
    finally:
        for h in handles:
            h.remove()
    return {"index": index, "io": store}


def _io(captured, where: str, module):
    args, kwargs, out = captured["io"][where][module]
    x = args[0] if args else kwargs["hidden_states"]
    return x, kwargs, out[0] if isinstance(out, tuple) else out


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, metrics, what: str, **ctx) -> None:
    actual, expected = actual.detach().double().cpu(), expected.detach().cpu()
    rel = float((actual - expected).norm() / expected.norm())
    metrics.record(f"{what}_max_abs_diff", (actual - expected).abs().max(), "abs", **ctx)
    metrics.record(f"{what}_rel_l2", rel, threshold=REL_L2.get(dtype), **ctx)
    if dtype == torch.float32:
        torch.testing.assert_close(actual, expected, **ELEMENTWISE, msg=lambda m: f"{what} {ctx}: {m}")
    else:
        assert rel <= REL_L2[dtype], f"{what} {ctx}: relative L2 error {rel:.3g} > {REL_L2[dtype]} for {dtype}"


@pytest.mark.parametrize(
    ("max_pos", "atol"),
    [
        pytest.param(128, 1e-5, id="pos0-127"),
        # HF forms position * inv_freq in float32: the angle carries up to ~1 ulp of the position,
        # so beyond 128 the honest bound grows with it (4 * max_pos * 2**-24).
        pytest.param(8192, 4 * 8192 * 2**-24, id="pos0-8191"),
    ],
)
def test_rope_matches_closed_form(attnlab_model, parts, max_pos, atol, metrics):
    """cos/sin of the rotary embedding vs the closed form over head_dim x partial_rotary_factor dims."""
    config = text_config(attnlab_model.model)
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type != "default":
        pytest.skip(f"closed form covers default RoPE only; this model uses {rope_type!r}")
    if parts.rotary is None:
        pytest.skip(f"{type(attnlab_model.model).__name__} has no rotary embedding (no module holds inv_freq)")
    positions = torch.arange(max_pos, device=attnlab_model.device)[None]
    x = torch.zeros(1, max_pos, parts.rotary_dim, device=attnlab_model.device, dtype=torch.float32)
    cos, sin = parts.rotary(x, positions)
    assert cos.shape[-1] == parts.rotary_dim, (
        f"the rotary embedding turns {cos.shape[-1]} dims; the config says {parts.rotary_dim} "
        f"(head_dim {parts.shape.head_dim} x partial_rotary_factor {partial_rotary_factor(config)})"
    )
    theta = formulas.rope_theta(config)
    ref_cos, ref_sin = formulas.rope_closed_form(positions[0].cpu(), parts.rotary_dim, theta)
    err = max((cos[0].double().cpu() - ref_cos).abs().max(), (sin[0].double().cpu() - ref_sin).abs().max())
    metrics.record("rope_max_abs_diff", err, "abs", threshold=atol, max_pos=max_pos, theta=theta, dims=parts.rotary_dim)
    torch.testing.assert_close(cos[0].double().cpu(), ref_cos, atol=atol, rtol=0)
    torch.testing.assert_close(sin[0].double().cpu(), ref_sin, atol=atol, rtol=0)


@pytest.mark.parametrize("where", WHERE)
def test_norm_matches_formula(attnlab_model, parts, captured, where, metrics):
    """Every norm of the layer (input, post-attention, Gemma-2's pre/post-feedforward) vs its kind's formula."""
    layer = parts.layers[captured["index"][where]]
    if "norms" in layer.problems:
        pytest.skip(layer.problems["norms"])
    if not layer.norms:
        pytest.skip(f"decoder layer {layer.index} ({type(layer.module).__name__}) has no norm module")
    checked = [name for name, norm in layer.norms.items() if norm in captured["io"][where]]
    assert checked, f"none of {list(layer.norms)} ran in the forward pass"
    for name in checked:
        norm = layer.norms[name]
        x, _, out = _io(captured, where, norm)
        kind = formulas.norm_kind(norm)
        _close(out, formulas.norm(x, norm), attnlab_model.dtype, metrics, "norm", norm=name, kind=kind)


@pytest.mark.parametrize("where", WHERE)
def test_mlp_matches_formula(attnlab_model, parts, captured, where, metrics):
    """Gated (gate/up separate or fused) or plain MLP with the config's activation, in float64."""
    try:
        mlp = parts.mlp(captured["index"][where])
        act_name = formulas.activation_name(text_config(attnlab_model.model))
        act = formulas.ACTIVATIONS.get(act_name)
    except (UnknownLayout, ValueError, KeyError) as exc:
        pytest.skip(str(exc))
    x, _, out = _io(captured, where, mlp.module)
    _close(out, formulas.mlp(x, mlp, act), attnlab_model.dtype, metrics, "mlp", layout=mlp.layout, act=act_name)


def test_gqa_repeat_kv_matches_head_index_formula(attnlab_model, parts):
    try:
        attn = parts.attention(0).module
    except UnknownLayout as exc:
        pytest.skip(str(exc))
    repeat_kv = getattr(sys.modules[type(attn).__module__], "repeat_kv", None)
    if repeat_kv is None:
        pytest.skip(f"{type(attn).__module__} has no repeat_kv (its attention does not group KV heads)")
    n_kv, n_heads = parts.shape.kv_heads, parts.shape.heads
    kv = torch.randn(2, n_kv, 7, 16, dtype=torch.float64)
    out = repeat_kv(kv, n_heads // n_kv)
    assert out.shape == (2, n_heads, 7, 16)
    for h in range(n_heads):  # query head h reads key/value head h // (n_heads / n_kv)
        assert torch.equal(out[:, h], kv[:, h // (n_heads // n_kv)])


@pytest.mark.parametrize("where", WHERE)
def test_attention_matches_formula(attnlab_model, parts, captured, where, metrics):
    """q/k/v projections (separate or fused), RoPE (full or partial), grouped heads, causal softmax
    (windowed on sliding-window layers, soft-capped where the config says so), o_proj: in float64."""
    index = captured["index"][where]
    try:
        attn = parts.attention(index)
    except UnknownLayout as exc:
        pytest.skip(str(exc))
    config = text_config(attnlab_model.model)
    if attn.unmodelled:
        pytest.skip(f"the formula does not model {type(attn.module).__name__}'s {', '.join(attn.unmodelled)}")
    if getattr(config, "clip_qkv", None) is not None:
        pytest.skip(f"the formula does not model clip_qkv={config.clip_qkv}")
    x, kwargs, out = _io(captured, where, attn.module)
    if kwargs.get("position_embeddings") is None:
        pytest.skip(f"{type(attn.module).__name__} computes its own positions (no position_embeddings argument)")
    cos, sin = (t.double() for t in kwargs["position_embeddings"])
    assert cos.shape[-1] == parts.rotary_dim, f"RoPE turns {cos.shape[-1]} dims, the config {parts.rotary_dim}"
    window = parts.layers[index].sliding_window
    softcap = getattr(config, "attn_logit_softcapping", None)
    ref = formulas.attention(
        x.double(),
        attn,
        parts.shape,
        cos,
        sin,
        scaling=formulas.scaling(config, parts.shape.head_dim),
        window=window,
        softcap=softcap,
    )
    ctx = {"layout": attn.layout, "layer": index, "window": window, "softcap": softcap}
    _close(out, ref, attnlab_model.dtype, metrics, "attention", **ctx)
