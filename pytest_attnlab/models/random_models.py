"""Deterministic random-initialised models from a config: Qwen2.5 shapes and a tiny Qwen2.

Shapes decide performance, not trained values, so GPU work uses the exact Qwen2.5 configs shipped
in `configs/`. The tiny Qwen2 exercises Qwen2-only code paths (q/k/v bias, tied embeddings) in
milliseconds on CPU; its biases are drawn, not zero (`randomise_biases`). Random models borrow the
embedded tokenizer (its ids fit every vocabulary here).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from pytest_attnlab.registry import Registry

#: name -> function returning a config dict. Users may add their own shapes.
RANDOM_CONFIGS: Registry[Callable[[], dict[str, Any]]] = Registry("random model config")

TINY_QWEN2 = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "vocab_size": 49152,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "use_sliding_window": False,
}


def _shipped(filename: str) -> Callable[[], dict[str, Any]]:
    def load() -> dict[str, Any]:
        return json.loads(resources.files("pytest_attnlab.models").joinpath("configs", filename).read_text())

    return load


RANDOM_CONFIGS.register("tiny-qwen2", lambda: dict(TINY_QWEN2))
for _file in sorted(resources.files("pytest_attnlab.models").joinpath("configs").iterdir(), key=str):
    if _file.name.endswith(".json"):
        RANDOM_CONFIGS.register(_file.name.removesuffix(".json"), _shipped(_file.name))


def config_of(name: str, **overrides: Any) -> Any:
    """The transformers config of the named shape (with `overrides`)."""
    from transformers import AutoConfig

    config_dict = {**RANDOM_CONFIGS.get(name)(), **overrides}
    model_type = config_dict.pop("model_type")
    config_dict.pop("torch_dtype", None)
    config = AutoConfig.for_model(model_type, **config_dict)
    config.name_or_path = f"random:{name}"
    return config


def randomise_biases(model: Any, std: float) -> int:
    """Draw every linear bias (Qwen2's q/k/v) from N(0, std), the weights' own init: about 1/sqrt(fan_in)
    of the projection's output for a unit-RMS input (12 % for tiny-qwen2). `from_config` zeroes
    biases, which would make a dropped-bias bug invisible. Returns how many."""
    import torch

    count = 0
    with torch.no_grad():
        for module in model.modules():
            bias = getattr(module, "bias", None)
            if isinstance(module, torch.nn.Linear) and bias is not None:
                bias.normal_(0.0, std)
                count += 1
    return count


def build(
    name: str,
    *,
    seed: int = 0,
    dtype: Any = None,
    device: Any = "cpu",
    attn_implementation: str | None = None,
    **overrides: Any,
) -> Any:
    """A random-initialised causal LM of the named shape; the same seed gives the same weights."""
    import torch
    from transformers import AutoModelForCausalLM

    config = config_of(name, **overrides)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(
                config, dtype=dtype or torch.float32, attn_implementation=attn_implementation
            )
        randomise_biases(model, float(getattr(config, "initializer_range", 0.02)))
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()
