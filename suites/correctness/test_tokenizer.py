"""Tokenizer behaviour and the model's parameter layout."""

from __future__ import annotations

import pytest

from pytest_attnlab.models.anatomy import Anatomy, anatomy, text_config
from pytest_attnlab.probe import decoder_layers
from pytest_attnlab.prompts import load_prompts, skip_without_tokenizer

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
    skip_without_tokenizer(attnlab_model, "the encode/decode round trip")
    tok = attnlab_model.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    metrics.record("tokens", len(ids), "tokens", chars=len(text))
    assert tok.decode(ids) == text


@pytest.mark.parametrize("chat", CHATS, ids=[c.id for c in CHATS])
def test_chat_template_round_trip(attnlab_model, chat):
    skip_without_tokenizer(attnlab_model, "the chat template round trip")
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
    skip_without_tokenizer(attnlab_model, "the special-token check")
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
    eos_ids = [e for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
    assert eos_ids, (
        f"generation never stops: the checkpoint sets no eos_token_id (generation_config or config), so "
        f"generate runs to max_new_tokens; the tokenizer's eos is {tok.eos_token!r} (id {tok.eos_token_id})"
    )
    assert tok.eos_token_id in eos_ids, (
        f"generation stops on {eos_ids}, not on the tokenizer's eos {tok.eos_token!r} (id {tok.eos_token_id})"
    )
    assert len(tok) <= model.config.vocab_size


def expected_shapes(parts: Anatomy) -> dict[str, tuple[int, ...]]:
    """Role -> weight shape for every decoder layer, from the config alone; roles are found in the model
    (anatomy), so fused q/k/v or gate/up linears are checked row block by row block."""
    s = parts.shape
    inter = s.intermediate
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in parts.layers:
        p = f"layers.{layer.index}."
        if layer.attention is not None:
            a = layer.attention
            shapes |= {
                p + "q": (s.heads * s.head_dim, s.hidden),
                p + "k": (s.kv_heads * s.head_dim, s.hidden),
                p + "v": (s.kv_heads * s.head_dim, s.hidden),
                p + "o": (s.hidden, s.heads * s.head_dim),
            }
            for role in "qkv":
                if getattr(a, role).bias() is not None:
                    shapes[p + role + ".bias"] = (shapes[p + role][0],)
        if layer.mlp is not None and inter is not None:
            shapes |= {p + "up": (inter, s.hidden), p + "down": (s.hidden, inter)}
            if layer.mlp.gate is not None:
                shapes[p + "gate"] = (inter, s.hidden)
        for name, norm in layer.norms.items():
            if getattr(norm, "weight", None) is not None:
                shapes[p + name] = (s.hidden,)
    return shapes


def actual_shapes(parts: Anatomy) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in parts.layers:
        p = f"layers.{layer.index}."
        roles = {}
        if layer.attention is not None:
            roles |= {r: getattr(layer.attention, r) for r in "qkvo"}
        if layer.mlp is not None:
            roles |= {r: getattr(layer.mlp, r) for r in ("gate", "up", "down") if getattr(layer.mlp, r) is not None}
        for role, rows in roles.items():
            shapes[p + role] = tuple(rows.weight().shape)
            if role in "qkv" and rows.bias() is not None:
                shapes[p + role + ".bias"] = tuple(rows.bias().shape)
        for name, norm in layer.norms.items():
            if getattr(norm, "weight", None) is not None:
                shapes[p + name] = tuple(norm.weight.shape)
    return shapes


def test_state_dict_shapes(attnlab_model, metrics):
    """Every projection (each row block of a fused one) and norm has the shape the config implies, the
    embeddings are vocab x hidden, and tying matches the config; the layer-0 table goes into the report."""
    model, config = attnlab_model.model, text_config(attnlab_model.model)
    parts = anatomy(model)
    problems = [f"layer {layer.index}: {why}" for layer in parts.layers for why in layer.problems.values()]
    if problems:
        pytest.skip(f"the shape formula needs every part located; {problems[0]}")
    params = {name: tuple(p.shape) for name, p in model.named_parameters()}
    layer0 = [n for n in params if ".layers." not in n or ".layers.0." in n]
    metrics.table(
        f"state_dict shapes ({len(params)} tensors; layer 0 shown of {len(decoder_layers(model))})",
        [
            {"name": n, "shape": "x".join(map(str, params[n])), "dtype": str(model.get_parameter(n).dtype)}
            for n in layer0
        ],
    )
    metrics.record("parameters", sum(p.numel() for p in model.parameters()), "params")
    assert actual_shapes(parts) == expected_shapes(parts)
    embed = model.get_input_embeddings().weight
    assert tuple(embed.shape) == (config.vocab_size, config.hidden_size)
    out = model.get_output_embeddings()
    assert tuple(out.weight.shape) == (config.vocab_size, config.hidden_size)
    assert parts.tied_embeddings == bool(getattr(config, "tie_word_embeddings", False)), (
        f"lm_head {'shares' if parts.tied_embeddings else 'does not share'} the embedding table; "
        f"tie_word_embeddings={getattr(config, 'tie_word_embeddings', None)}"
    )
