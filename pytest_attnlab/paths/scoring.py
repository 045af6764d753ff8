"""Greedy tokens + top-k logprobs (`Scored`, what `DecodePath.greedy_logprobs` returns), HF's
reference for them, and their agreement with HF's log_softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from pytest_attnlab.generation import hf_generate


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


def top_logprobs(logits: torch.Tensor, k: int, chosen: torch.Tensor) -> list[dict[int, float]]:
    """Per row: top-k {token: logprob} of log_softmax(logits) plus the chosen token's logprob."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    vals, idx = lp.topk(k, dim=-1)
    rows = []
    for b in range(lp.shape[0]):
        row = {int(t): float(v) for t, v in zip(idx[b], vals[b], strict=True)}
        row[int(chosen[b])] = float(lp[b, chosen[b]])
        rows.append(row)
    return rows


def stacked(steps: list[list[dict[int, float]]], tokens: torch.Tensor) -> Scored:
    return Scored(tokens.tolist(), [list(row) for row in zip(*steps, strict=True)])


@torch.inference_mode()
def hf_greedy_logprobs(model: Any, ids: torch.Tensor, new_tokens: int, k: int) -> Scored:
    """HF `generate`'s tokens and per-step raw-logit top-k: the reference, and the hf path's own."""
    cfg = model.generation_config
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else cfg.eos_token_id
    greedy = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    out = hf_generate(model, ids, new_tokens, min_new_tokens=new_tokens, pad_token_id=pad, **greedy)
    steps = [top_logprobs(out.logits[:, i], k, out.tokens[:, i]) for i in range(out.tokens.shape[1])]
    return stacked(steps, out.tokens)


def eos_ids(model: Any) -> tuple[int, ...]:
    """The model's EOS ids: min_new_tokens / min_tokens ban them until the last forced token."""
    eos = model.generation_config.eos_token_id
    return tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (int(eos),))


@torch.inference_mode()
def teacher_forced_logprobs(model: Any, ids: torch.Tensor, tokens: list[list[int]]) -> torch.Tensor:
    """HF log_softmax [batch, n, vocab] at each position of `tokens`, given prompt + earlier tokens:
    the reference for a candidate's logprobs along the candidate's own sequence."""
    device = next(model.parameters()).device
    cont = torch.tensor(tokens, dtype=torch.long)
    full = torch.cat([ids.cpu(), cont], dim=1).to(device)
    logits = model(input_ids=full, attention_mask=torch.ones_like(full)).logits
    n, p = cont.shape[1], ids.shape[1]
    return torch.log_softmax(logits[:, p - 1 : p - 1 + n].float(), dim=-1).cpu()


@dataclass
class Agreement:
    token_match: float  # share of positions where candidate == reference greedy token
    prefix_match: float  # mean share of each row's tokens before the first divergence
    logprob_max_diff: float  # max |cand - ref| over every (step, top-k token) of the candidate
    logprob_mean_diff: float
    top1_match: float  # share of steps where the candidate's greedy token is HF's argmax on its context
    greedy_regret: float  # max over steps of HF's (best logprob - logprob of the candidate's token), nats:
    # 0 when every choice is HF's argmax; small where the backend broke a near-tie the other way

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def agreement(
    ref_tokens: list[list[int]], cand: Scored, ref_lp: torch.Tensor, banned: tuple[int, ...] = ()
) -> Agreement:
    """`banned`: tokens no backend may pick (EOS while n tokens are forced), left out of the argmax."""
    same = total = 0
    prefixes = []
    for r, c in zip(ref_tokens, cand.tokens, strict=True):
        eq = [a == b for a, b in zip(r, c, strict=True)]
        same += sum(eq)
        total += len(eq)
        first = eq.index(False) if False in eq else len(eq)
        prefixes.append(first / max(1, len(eq)))
    diffs, top1, regret = [], [], [0.0]
    for b, steps in enumerate(cand.top):
        for i, row in enumerate(steps):
            diffs.extend(abs(lp - float(ref_lp[b, i, t])) for t, lp in row.items() if math.isfinite(lp))
            tok = cand.tokens[b][i]
            allowed = ref_lp[b, i].clone()
            allowed[list(banned)] = -math.inf
            top1.append(int(allowed.argmax()) == tok)
            regret.append(float(allowed.max() - allowed[tok]))
    return Agreement(
        token_match=same / max(1, total),
        prefix_match=sum(prefixes) / max(1, len(prefixes)),
        logprob_max_diff=max(diffs) if diffs else math.nan,
        logprob_mean_diff=sum(diffs) / len(diffs) if diffs else math.nan,
        top1_match=sum(top1) / max(1, len(top1)),
        greedy_regret=max(regret),
    )
