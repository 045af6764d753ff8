"""Temperature, top-k and top-p (nucleus) filtering written from their definitions.

Filters return logits with removed entries set to -inf, so softmax gives the filtered
distribution. Order when combined follows HF's processors: temperature, then top-k, then top-p.
"""

from __future__ import annotations

import torch


def temperature(logits: torch.Tensor, t: float) -> torch.Tensor:
    if t <= 0:
        raise ValueError(f"temperature must be > 0, got {t}")
    return logits / t


def top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (ties with the k-th value are kept too)."""
    k = min(k, logits.shape[-1])
    kth = torch.sort(logits, dim=-1, descending=True).values[..., k - 1 : k]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p(logits: torch.Tensor, p: float, min_keep: int = 1) -> torch.Tensor:
    """Keep the smallest prefix of tokens, by descending probability, whose mass reaches p."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of strictly more likely tokens
    drop_sorted = mass_before >= p
    drop_sorted[..., :min_keep] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(
    logits: torch.Tensor, *, t: float = 1.0, k: int | None = None, p: float | None = None
) -> torch.Tensor:
    out = temperature(logits, t) if t != 1.0 else logits
    if k is not None and k > 0:
        out = top_k(out, k)
    if p is not None and p < 1.0:
        out = top_p(out, p)
    return out


def sampler(*, t: float = 1.0, k: int | None = None, p: float | None = None):
    """A `pick` function for `decode_loop`: filter, softmax, one draw from torch's global RNG."""

    def pick(logits: torch.Tensor) -> torch.Tensor:
        probs = filter_logits(logits, t=t, k=k, p=p).softmax(dim=-1)
        return torch.multinomial(probs, num_samples=1).squeeze(1)

    pick.__name__ = f"sample_t{t}_k{k}_p{p}"
    return pick
