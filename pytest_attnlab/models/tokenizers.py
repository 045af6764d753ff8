"""Whether a checkpoint's tokenizer is usable, borrowing one, and telling two tokenizers apart.

transformers 5.24 hands back an empty tokenizer (no vocabulary, one added token) for a folder saved
without tokenizer files, and raises for others; both mean "no tokenizer" here, with the reason. Tests
that need text skip with it; the rest run on deterministic token ids (`prompts.synthetic_ids`).
`--attnlab-tokenizer PATH|embedded` borrows one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_attnlab.models import embedded

EMBEDDED = "embedded"
#: ordinary English a real tokenizer turns into ordinary (non-special) tokens
PROBE = "The quick brown fox jumps over the lazy dog."


@dataclass(frozen=True)
class NoTokenizer:
    """What a model source returns in place of a tokenizer it could not load or found empty."""

    reason: str


def unusable(tokenizer: Any) -> str | None:
    """Why `tokenizer` cannot turn text into tokens (None: it can)."""
    if tokenizer is None:
        return "no tokenizer"
    if isinstance(tokenizer, NoTokenizer):
        return tokenizer.reason
    try:
        ids = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    except Exception as exc:  # a broken tokenizer object: any failure means "unusable", with its message
        return f"its tokenizer fails on plain text ({type(exc).__name__}: {exc})"
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    if not ids or all(i in special for i in ids):
        return f"its tokenizer has an empty vocabulary ({len(tokenizer)} token(s), {PROBE!r} encodes to {ids})"
    return None


def load(ref: str) -> Any:
    """The tokenizer saved in `ref` (a folder or hub id), or NoTokenizer with the reason."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(ref)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return NoTokenizer(f"no tokenizer loads from {ref} ({first})")
    reason = unusable(tokenizer)
    return NoTokenizer(f"{ref}: {reason}") if reason else tokenizer


def borrow(source: str) -> Any:
    """The tokenizer of `source`: "embedded" (SmolLM2's) or a folder with tokenizer files."""
    if source == EMBEDDED:
        return embedded.tokenizer()
    tokenizer = load(source)
    if isinstance(tokenizer, NoTokenizer):
        raise ValueError(f"--attnlab-tokenizer {source}: {tokenizer.reason}")
    return tokenizer


def align(model: Any, tokenizer: Any) -> None:
    """Make the model stop and pad on the borrowed tokenizer's special ids (config and generation config)."""
    for role in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, role)
        setattr(model.config, role, value)
        if getattr(model, "generation_config", None) is not None:
            setattr(model.generation_config, role, value)


def check_fits(model: Any, tokenizer: Any, source: str) -> None:
    """A tokenizer whose ids overflow the model's embedding table cannot be used with it."""
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise ValueError(
            f"--attnlab-tokenizer {source}: the tokenizer has {len(tokenizer)} tokens, more than the "
            f"{vocab} rows of {type(model).__name__}'s embedding table"
        )


def difference(reference: Any, candidate: Any) -> str | None:
    """What differs between two tokenizers (vocabulary, special tokens, chat template), or None."""
    va, vb = reference.get_vocab(), candidate.get_vocab()
    if va != vb:
        if len(va) != len(vb):
            return f"vocabulary sizes {len(va)} vs {len(vb)}"
        token = next(t for t in sorted(va) if vb.get(t) != va[t])
        return f"token {token!r} is id {va[token]} in the reference, {vb.get(token)} in the candidate"
    for role in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if getattr(reference, role, None) != getattr(candidate, role, None):
            return f"{role} {getattr(reference, role, None)!r} vs {getattr(candidate, role, None)!r}"
    if getattr(reference, "chat_template", None) != getattr(candidate, "chat_template", None):
        return "the chat templates differ"
    return None
