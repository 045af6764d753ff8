"""What the quantization suite measures on a model: perplexity, next-token argmax, greedy decoding.

Perplexity is scored on the embedded evaluation text in non-overlapping windows (each window is
scored from its own start, so every method sees exactly the same contexts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from pytest_attnlab.generation import decode_loop


@dataclass
class TextScore:
    perplexity: float
    nll: float  # mean negative log-likelihood per predicted token (nats)
    tokens: int  # predicted tokens scored
    argmax: torch.Tensor  # [tokens] greedy next-token choice at every scored position


@torch.inference_mode()
def score_text(model: Any, ids: torch.Tensor, window: int = 512) -> TextScore:
    """Perplexity of `ids` [1, n] under `model`, with the argmax prediction at every position."""
    device = next(model.parameters()).device
    total, count, picks = 0.0, 0, []
    for start in range(0, ids.shape[1] - 1, window):
        chunk = ids[:, start : start + window].to(device)
        if chunk.shape[1] < 2:
            break
        logits = model(input_ids=chunk, use_cache=False).logits[0, :-1].float()
        target = chunk[0, 1:]
        total += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
        count += target.numel()
        picks.append(logits.argmax(-1).cpu())
    nll = total / count
    return TextScore(math.exp(nll), nll, count, torch.cat(picks))


def argmax_agreement(reference: TextScore, candidate: TextScore) -> float:
    """Fraction of positions where both pick the same next token (teacher-forced on the text)."""
    return float((reference.argmax == candidate.argmax).float().mean())


def common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """Number of leading tokens two generations share."""
    n = min(a.numel(), b.numel())
    diff = (a.flatten()[:n] != b.flatten()[:n]).nonzero()
    return int(diff[0]) if diff.numel() else n


@torch.inference_mode()
def greedy_tokens(model: Any, prompt_ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    return decode_loop(model, prompt_ids, new_tokens).tokens[0]
