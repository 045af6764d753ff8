"""Shared fixtures of the correctness suite: the prompt set and per-layer inputs of the model under test."""

from __future__ import annotations

import pytest

from pytest_attnlab.prompts import Prompt, ids_for, load_prompts

PROMPTS = load_prompts()


@pytest.fixture(params=PROMPTS, ids=[p.id for p in PROMPTS])
def prompt(request: pytest.FixtureRequest) -> Prompt:
    """Each embedded prompt (plain text and chat-template conversations)."""
    return request.param


@pytest.fixture(scope="session")
def chat_ids(attnlab_model):
    """A chat-template prompt encoded for the model under test, [1, n] (40 synthetic ids without a tokenizer)."""
    chat = next(p for p in PROMPTS if p.kind == "chat")
    return ids_for(attnlab_model, chat, 40)
