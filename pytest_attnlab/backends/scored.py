"""Greedy tokens with top-k logprobs: what every backend gives the cross-backend correctness suite."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Scored:
    """`tokens[b]`: greedy continuation of row b; `top[b][i]`: {token id: logprob} of step i (the
    step's top-k under the backend's own log-softmax of raw logits; may hold the chosen token too)."""

    tokens: list[list[int]]
    top: list[list[dict[int, float]]]

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.top):
            raise ValueError(f"{len(self.tokens)} token rows but {len(self.top)} logprob rows")
        for b, (toks, steps) in enumerate(zip(self.tokens, self.top, strict=True)):
            if len(toks) != len(steps):
                raise ValueError(f"row {b}: {len(toks)} tokens but {len(steps)} logprob steps")
