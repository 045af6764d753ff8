"""Random models carry drawn, non-zero biases: a dropped bias must change what the model computes."""

from __future__ import annotations

import torch

from pytest_attnlab.models.random_models import build


def _qkv_biases(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = ("q_proj.bias", "k_proj.bias", "v_proj.bias")
    return {n: p.detach() for n, p in model.named_parameters() if n.endswith(names)}


def test_tiny_qwen2_biases_are_drawn_and_seeded() -> None:
    a, b, c = build("tiny-qwen2", seed=0), build("tiny-qwen2", seed=0), build("tiny-qwen2", seed=1)
    biases = _qkv_biases(a)
    assert len(biases) == 3 * a.config.num_hidden_layers
    sizes = {n: float(p.abs().max()) for n, p in biases.items()}
    assert all(size > 0.01 for size in sizes.values()), sizes
    assert all(torch.equal(p, _qkv_biases(b)[n]) for n, p in biases.items())
    assert not torch.equal(next(iter(biases.values())), next(iter(_qkv_biases(c).values())))


def test_dropping_one_bias_moves_the_logits() -> None:
    """One layer's k bias zeroed (a converter that drops it) moves the logits far beyond fp32 rounding."""
    model = build("tiny-qwen2")
    ids = torch.arange(16, 48)[None]
    with torch.inference_mode():
        before = model(ids).logits
        model.model.layers[1].self_attn.v_proj.bias.zero_()
        after = model(ids).logits
    assert float((before - after).abs().max()) > 1e-2
