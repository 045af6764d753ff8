"""HF `generate`, greedy, exactly `new_tokens` tokens; a StoppingCriteria marks each token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pytest_attnlab.paths.base import DecodePath, PathOptions
from pytest_attnlab.paths.scoring import Scored, hf_greedy_logprobs


class _Marker:
    """Called by generate once per new token, after it was appended; never stops generation."""

    def __init__(self, on_token: Callable[[], None]) -> None:
        self.on_token = on_token

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        self.on_token()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class HFGeneratePath(DecodePath):
    name = "hf"

    def __init__(self, options: PathOptions | None = None) -> None:
        self.model: Any = None

    def prepare(self, model: Any, batch: int, prompt_len: int, new_tokens: int) -> None:
        self.model = model

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, new_tokens: int, on_token: Callable[[], None]) -> torch.Tensor:
        from transformers import StoppingCriteriaList

        cfg = self.model.generation_config
        out = self.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,  # a random model may emit EOS: the token count must not vary
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=cfg.pad_token_id if cfg.pad_token_id is not None else cfg.eos_token_id,
            stopping_criteria=StoppingCriteriaList([_Marker(on_token)]),
        )
        return out[:, ids.shape[1] :]

    def greedy_logprobs(self, ids: torch.Tensor, new_tokens: int, top_k: int) -> Scored:
        return hf_greedy_logprobs(self.model, ids, new_tokens, top_k)
