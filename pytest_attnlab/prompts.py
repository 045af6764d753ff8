"""The embedded prompt set: plain text and chat conversations, encoded with a model's tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Prompt:
    id: str
    kind: str  # "plain" | "chat"
    text: str = ""
    messages: tuple[dict[str, str], ...] = field(default_factory=tuple)

    def encode(self, tokenizer: Any) -> Any:
        """Token ids [1, n] as a tensor: chat prompts go through the tokenizer's chat template."""
        if self.kind == "chat":
            enc = tokenizer.apply_chat_template(
                list(self.messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            return enc["input_ids"]
        return tokenizer(self.text, return_tensors="pt")["input_ids"]


def load_prompts() -> list[Prompt]:
    raw = json.loads(resources.files("pytest_attnlab").joinpath("data", "prompts.json").read_text())
    return [Prompt(p["id"], p["kind"], p.get("text", ""), tuple(p.get("messages", ()))) for p in raw["prompts"]]


#: ids below this are special tokens in every vocabulary shipped here (bos, eos, pad, chat markers)
FIRST_ORDINARY_ID = 16


def synthetic_ids(vocab_size: int, length: int, seed: int = 0) -> Any:
    """Deterministic token ids [1, length] clear of the low special ids: input for tests that need no text."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randint(FIRST_ORDINARY_ID, max(FIRST_ORDINARY_ID + 1, vocab_size), (1, length), generator=gen)


def ids_for(loaded: Any, prompt: Prompt, length: int = 32) -> Any:
    """`prompt` encoded by the model's tokenizer; without one, `length` synthetic ids seeded by the
    prompt's id (the same ids in every run)."""
    import zlib

    if loaded.tokenizer is not None:
        return prompt.encode(loaded.tokenizer)
    vocab = loaded.model.get_input_embeddings().num_embeddings
    return synthetic_ids(vocab, length, seed=zlib.crc32(prompt.id.encode()))


def skip_without_tokenizer(loaded: Any, what: str) -> None:
    """pytest.skip when the model has no usable tokenizer, naming why and how to borrow one."""
    if loaded.tokenizer is None:
        import pytest

        reason = loaded.notes.get("tokenizer", "no tokenizer")
        pytest.skip(
            f"{what} needs text and {loaded.spec.label} has no usable tokenizer ({reason}); "
            "borrow one with --attnlab-tokenizer embedded|PATH"
        )
