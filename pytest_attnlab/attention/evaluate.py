"""Quality of a variant against the dense model: logits cosine, per-layer cosine, perplexity, agreement."""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch

from pytest_attnlab import probe
from pytest_attnlab.hf_compat import output_cache, with_cache
from pytest_attnlab.metrics.similarity import cosine


def sample_text() -> str:
    """The embedded public-domain prose sample (~2k tokens of the embedded tokenizer)."""
    return resources.files("pytest_attnlab").joinpath("data", "sample.txt").read_text(encoding="utf-8")


def sample_ids(tokenizer: Any, tokens: int) -> torch.Tensor:
    """The first `tokens` tokens of the sample, [1, tokens]."""
    ids = tokenizer(sample_text(), return_tensors="pt").input_ids[:, :tokens]
    if ids.shape[1] < tokens:
        raise ValueError(f"the sample has {ids.shape[1]} tokens, fewer than the {tokens} asked for")
    return ids


def perplexity(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """exp(mean next-token cross-entropy) of `logits` [1, t, v] on `ids` [1, t]."""
    loss = torch.nn.functional.cross_entropy(logits[0, :-1].double(), ids[0, 1:].to(logits.device))
    return float(loss.exp())


@dataclass
class Quality:
    logits_cosine: float
    min_layer_cosine: float
    perplexity: float
    top1_agreement: float  # teacher-forced greedy next-token agreement with the reference
    forward_seconds: float
    layer_diff: probe.LayerDiff

    def as_dict(self) -> dict[str, float]:
        return {
            "logits_cosine": self.logits_cosine,
            "min_layer_cosine": self.min_layer_cosine,
            "perplexity": self.perplexity,
            "top1_agreement": self.top1_agreement,
            "forward_seconds": self.forward_seconds,
        }


def measure(model: Any, ids: torch.Tensor, reference: probe.Capture) -> Quality:
    """Capture `model` on `ids` (one forward, timed) and compare it with the dense `reference`."""
    start = time.perf_counter()
    cand = probe.capture(model, ids)
    seconds = time.perf_counter() - start
    diff = probe.diff(reference, cand)
    agree = (cand.logits.argmax(-1) == reference.logits.argmax(-1)).double().mean()
    return Quality(
        cosine(cand.logits, reference.logits),
        diff.min_cosine,
        perplexity(cand.logits, ids),
        float(agree),
        seconds,
        diff,
    )


@torch.inference_mode()
def greedy_agreement(model: Any, ids: torch.Tensor, reference_tokens: torch.Tensor, cache: Any = None) -> float:
    """Fraction of free-running greedy tokens equal to the reference's, up to the first mismatch counted."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    cache = cache if cache is not None else DynamicCache(config=model.config)
    out = model(input_ids=ids.to(device), **with_cache(model, cache), use_cache=True)
    tokens = []
    for _ in range(reference_tokens.shape[1]):
        nxt = out.logits[:, -1].argmax(-1)
        tokens.append(nxt)
        out = model(input_ids=nxt[:, None], **with_cache(model, output_cache(out)), use_cache=True)
    got = torch.stack(tokens, 1).cpu()
    return float((got == reference_tokens).double().mean())
