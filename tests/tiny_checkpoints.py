"""Tiny random checkpoints of transformers architectures other than Llama and Qwen2, saved to folders.

Hidden size 64, 2 layers, the embedded tokenizer's 49152-token vocabulary. Every 1-D parameter (norm
weights, biases) is perturbed away from its init (ones / zeros), so a formula that forgets Gemma's
(1 + w) or a LayerNorm's bias cannot pass by luck; linears keep HF's random init.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

COMMON = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 49152,
    "max_position_embeddings": 2048,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}
#: architecture -> what sets it apart, in config form
ARCHS: dict[str, dict[str, Any]] = {
    # fused qkv_proj and gate_up_proj
    "phi3": {"model_type": "phi3"},
    # (1 + w) RMSNorm, head_dim 32 != 64 / 4, sliding-window layers, logit soft-capping, tied embeddings,
    # and no SDPA support in transformers (`_supports_sdpa = False`)
    "gemma2": {"model_type": "gemma2", "head_dim": 32, "sliding_window": 16, "query_pre_attn_scalar": 32},
    # LayerNorm with bias, q/k/v bias, partial rotary (half the head)
    "stablelm": {
        "model_type": "stablelm",
        "partial_rotary_factor": 0.5,
        "use_qkv_bias": True,
        "num_key_value_heads": 4,
    },
    # per-head interleaved query_key_value, plain GELU MLP, LayerNorm with bias, parallel residual
    "gpt_neox": {"model_type": "gpt_neox", "rotary_pct": 0.5, "num_key_value_heads": None},
    # LayerNorm without weight or bias
    "olmo": {"model_type": "olmo"},
}


def config(arch: str, **overrides: Any) -> Any:
    from transformers import AutoConfig

    values = {**COMMON, **ARCHS[arch], **overrides}
    model_type = values.pop("model_type")
    return AutoConfig.for_model(model_type, **{k: v for k, v in values.items() if v is not None})


def build(arch: str, seed: int = 0, **overrides: Any) -> Any:
    """The random model, norms and biases perturbed (seeded)."""
    import torch
    from transformers import AutoModelForCausalLM

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config(arch, **overrides), dtype=torch.float32)
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() == 1:
                    param.add_(torch.randn_like(param) * 0.1)
    finally:
        torch.random.set_rng_state(state)
    return model.eval()


def save(model: Any, folder: Path, tokenizer: Any = None) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def embedded_tokenizer() -> Any:
    """The embedded tokenizer, or a pytest skip naming the package that ships it."""
    import pytest

    from pytest_attnlab.models import embedded
    from pytest_attnlab.models.loader import embedded_tokenizer as load

    try:
        return load()
    except embedded.EmbeddedModelMissing as exc:
        pytest.skip(str(exc))
