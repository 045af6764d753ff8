"""Tiny random checkpoints of transformers architectures, saved to folders.

Hidden size 64, 2 layers, the embedded tokenizer's 49152-token vocabulary. Every 1-D parameter (norm
weights, biases) is perturbed away from its init (ones / zeros), so a formula that forgets Gemma's
(1 + w) or a LayerNorm's bias cannot pass by luck; linears keep HF's random init. `ARCHS` are the
families other than Llama and Qwen2 that tests/test_architectures.py runs the suite on; `GPU_ARCHS`
adds the common ones for .ci/gpu's architectures stage, which makes its checkpoints from the command
line (3 layers, hidden 128 there):

    python tests/tiny_checkpoints.py OUT [ARCH ...] [--layers 3] [--hidden 128]
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
#: the families the suite is written against, and the two that differ from them in one part each
MORE_ARCHS: dict[str, dict[str, Any]] = {
    "llama": {"model_type": "llama"},
    # q/k/v bias
    "qwen2": {"model_type": "qwen2"},
    # per-head RMSNorm of q and k (q_norm, k_norm), head_dim set apart from hidden / heads
    "qwen3": {"model_type": "qwen3", "head_dim": 32},
    "mistral": {"model_type": "mistral"},
}
GPU_ARCHS: dict[str, dict[str, Any]] = {**MORE_ARCHS, **ARCHS}
#: per-head sizes that scale with the hidden size (the rest are fractions or counts)
PER_HEAD = ("head_dim", "query_pre_attn_scalar")


def config(arch: str, **overrides: Any) -> Any:
    from transformers import AutoConfig

    values = {**COMMON, **GPU_ARCHS[arch], **overrides}
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
    from pytest_attnlab.models.embedded import tokenizer as load

    try:
        return load()
    except embedded.EmbeddedModelMissing as exc:
        pytest.skip(str(exc))


def scaled(arch: str, hidden: int, layers: int) -> dict[str, Any]:
    """Overrides for a checkpoint of `hidden` and `layers` (the same head count, so head dims grow)."""
    factor = hidden // COMMON["hidden_size"]
    per_head = {k: v * factor for k, v in GPU_ARCHS[arch].items() if k in PER_HEAD}
    return {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers, **per_head}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from pytest_attnlab.models.embedded import tokenizer as load

    parser = argparse.ArgumentParser(description="Save tiny random checkpoints (embedded tokenizer).")
    parser.add_argument("out", type=Path, help="folder that gets one sub-folder per architecture")
    parser.add_argument("archs", nargs="*", metavar="ARCH", help=f"default: all of {', '.join(GPU_ARCHS)}")
    parser.add_argument("--layers", type=int, default=COMMON["num_hidden_layers"])
    parser.add_argument("--hidden", type=int, default=COMMON["hidden_size"])
    args = parser.parse_intermixed_args(argv)
    unknown = [a for a in args.archs if a not in GPU_ARCHS]
    if unknown:
        parser.error(f"unknown architecture {', '.join(unknown)}; choose from {', '.join(GPU_ARCHS)}")
    tokenizer = load()
    for arch in args.archs or GPU_ARCHS:
        folder = save(build(arch, **scaled(arch, args.hidden, args.layers)), args.out / arch, tokenizer)
        print(f"tiny_checkpoints: {arch} -> {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
