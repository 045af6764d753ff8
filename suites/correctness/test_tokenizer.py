"""Tokenizer behaviour and the model's parameter layout."""

from __future__ import annotations

import pytest

from pytest_attnlab.probe import decoder_layers
from pytest_attnlab.prompts import load_prompts

TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog.",
    "chinese": "注意力机制对比实验：量化与稀疏注意力。",
    "code": "def f(x):\n    return {'a': [1, 2, 3]}[x]  # comment\n",
    "mixed": "GPU 显存 80GB, tokens/s = 1e3 ✓ 🚀",
    "whitespace": "  leading and trailing spaces  \n\n\ttab",
}
CHATS = [p for p in load_prompts() if p.kind == "chat"]


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_encode_decode_round_trip(attnlab_model, text, metrics):
    tok = attnlab_model.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    metrics.record("tokens", len(ids), "tokens", chars=len(text))
    assert tok.decode(ids) == text


@pytest.mark.parametrize("chat", CHATS, ids=[c.id for c in CHATS])
def test_chat_template_round_trip(attnlab_model, chat):
    tok = attnlab_model.tokenizer
    if not tok.chat_template:
        pytest.skip(f"{attnlab_model.spec.label} has no chat template")
    messages = list(chat.messages)
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    positions = [text.find(m["content"]) for m in messages]
    assert all(p >= 0 for p in positions), "a message's content is missing from the rendered template"
    assert positions == sorted(positions), "messages are rendered out of order"
    ids = chat.encode(tok)[0].tolist()
    assert ids == tok(text, add_special_tokens=False)["input_ids"], "template ids differ from tokenizing its text"
    assert tok.decode(ids) == text


def test_special_tokens(attnlab_model, metrics):
    tok, model = attnlab_model.tokenizer, attnlab_model.model
    rows = []
    for role in ("bos_token", "eos_token", "pad_token", "unk_token"):
        token = getattr(tok, role)
        if token is None:
            continue
        token_id = tok.convert_tokens_to_ids(token)
        encoded = tok(token, add_special_tokens=False)["input_ids"]
        rows.append({"role": role, "token": token, "id": token_id, "encodes_to": encoded})
        assert encoded == [token_id], f"{role} {token!r} does not encode to its single id {token_id}"
        assert 0 <= token_id < model.config.vocab_size
    metrics.table("special tokens", rows)
    eos = model.generation_config.eos_token_id
    eos_ids = eos if isinstance(eos, list) else [eos]
    assert tok.eos_token_id in eos_ids, "generation stops on a token that is not the tokenizer's eos"
    assert len(tok) <= model.config.vocab_size


def expected_shapes(config) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of a Llama/Qwen2-style decoder, from the config alone."""
    h, inter, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    d = getattr(config, "head_dim", None) or h // heads
    bias = getattr(config, "attention_bias", False) or config.model_type == "qwen2"
    shapes = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,)}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (heads * d, h),
            p + "self_attn.k_proj.weight": (kv * d, h),
            p + "self_attn.v_proj.weight": (kv * d, h),
            p + "self_attn.o_proj.weight": (h, heads * d),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        }
        if bias:
            shapes |= {p + f"self_attn.{x}_proj.bias": (n * d,) for x, n in (("q", heads), ("k", kv), ("v", kv))}
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (vocab, h)
    return shapes


def test_state_dict_shapes(attnlab_model, metrics):
    """Every parameter has the shape the config implies; the table goes into the report."""
    model, config = attnlab_model.model, attnlab_model.model.config
    if config.model_type not in ("llama", "qwen2"):
        pytest.skip(f"shape formula covers llama/qwen2 decoders, not {config.model_type}")
    actual = {name: tuple(p.shape) for name, p in model.named_parameters()}
    expected = expected_shapes(config)
    layer0 = [n for n in actual if ".layers." not in n or ".layers.0." in n]
    metrics.table(
        f"state_dict shapes ({len(actual)} tensors; layer 0 shown of {len(decoder_layers(model))})",
        [
            {"name": n, "shape": "x".join(map(str, actual[n])), "dtype": str(model.get_parameter(n).dtype)}
            for n in layer0
        ],
    )
    total = sum(p.numel() for p in model.parameters())
    metrics.record("parameters", total, "params")
    assert actual == expected
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == bool(config.tie_word_embeddings)
