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
