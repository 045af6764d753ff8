"""Embedded texts: a perplexity sample and a separate calibration sample (both public domain).

eval_text.txt: the Declaration of Independence (1776), about 1.7k SmolLM2 tokens.
calibration_text.txt: the Gettysburg Address, the openings of Moby-Dick and A Tale of Two Cities,
the US Constitution's preamble, a code snippet and a few facts. Calibrating on the evaluation text
would flatter GPTQ and AWQ, so the two never overlap.
"""

from __future__ import annotations

from importlib import resources
from typing import Any


def read(name: str) -> str:
    return resources.files("pytest_attnlab.quant").joinpath("data", name).read_text(encoding="utf-8")


def eval_ids(tokenizer: Any, max_tokens: int | None = None) -> Any:
    """The perplexity sample as ids [1, n] (BOS-free: SmolLM2's tokenizer adds none)."""
    ids = tokenizer(read("eval_text.txt"), return_tensors="pt")["input_ids"]
    return ids[:, :max_tokens] if max_tokens else ids


def calibration_ids(tokenizer: Any, samples: int = 8, seqlen: int = 128) -> Any:
    """`samples` windows of `seqlen` tokens taken evenly across the calibration text: [samples, seqlen]."""
    import torch

    ids = tokenizer(read("calibration_text.txt"), return_tensors="pt")["input_ids"][0]
    if ids.numel() < seqlen:
        raise ValueError(f"calibration text has {ids.numel()} tokens, fewer than seqlen={seqlen}")
    starts = torch.linspace(0, ids.numel() - seqlen, samples).round().long().unique()
    return torch.stack([ids[s : s + seqlen] for s in starts.tolist()])
