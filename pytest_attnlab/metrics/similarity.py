"""Numerical comparisons between a reference and a candidate tensor, computed in float64."""

from __future__ import annotations

import torch


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a.detach().to("cpu", torch.float64).flatten(), b.detach().to("cpu", torch.float64).flatten()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of the flattened tensors (1.0 for two zero tensors)."""
    x, y = _pair(a, b)
    denom = x.norm() * y.norm()
    if denom == 0:
        return 1.0 if torch.equal(x, y) else 0.0
    return float((x @ y) / denom)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    x, y = _pair(a, b)
    return float((x - y).abs().max()) if x.numel() else 0.0


def relative_error(candidate: torch.Tensor, reference: torch.Tensor) -> float:
    """||candidate - reference|| / ||reference|| (L2 over all elements)."""
    x, y = _pair(candidate, reference)
    ref_norm = y.norm()
    if ref_norm == 0:
        return 0.0 if torch.equal(x, y) else float("inf")
    return float((x - y).norm() / ref_norm)


def next_token_kl(reference_logits: torch.Tensor, candidate_logits: torch.Tensor) -> float:
    """Mean over positions of KL(p_ref || p_cand) of the next-token distributions (nats, float64)."""
    ref = torch.log_softmax(reference_logits.detach().to("cpu", torch.float64).flatten(0, -2), dim=-1)
    cand = torch.log_softmax(candidate_logits.detach().to("cpu", torch.float64).flatten(0, -2), dim=-1)
    return float((ref.exp() * (ref - cand)).sum(-1).mean())


def top1_flip_rate(reference_logits: torch.Tensor, candidate_logits: torch.Tensor) -> float:
    """Fraction of positions whose argmax next token differs from the reference's."""
    ref, cand = reference_logits.argmax(-1), candidate_logits.argmax(-1)
    return float((ref.cpu() != cand.cpu()).double().mean())
