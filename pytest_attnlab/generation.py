"""A hand-written prefill + decode loop with a KV cache: the reference HF `generate` is checked against."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pytest_attnlab.hf_compat import output_cache, with_cache


@dataclass
class Generated:
    tokens: torch.Tensor  # [batch, new_tokens]
    logits: torch.Tensor  # [batch, new_tokens, vocab], raw (before any sampling filter), float32 CPU


#: max |logit| difference between two decode loops over one model (manual vs `generate`), per dtype
LOGIT_ATOL = {torch.float32: 1e-3, torch.bfloat16: 0.25, torch.float16: 0.05}


def _pick_greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=-1)


@torch.inference_mode()
def decode_loop(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    pick: Callable[[torch.Tensor], torch.Tensor] = _pick_greedy,
    eos_token_id: int | None = None,
) -> Generated:
    """Prefill the prompt once, then feed one token at a time with the DynamicCache from the last step.

    `pick` maps the last position's raw logits [batch, vocab] to next tokens [batch]. Stops early
    when every sequence has produced `eos_token_id` (batch 1 in practice; HF pads finished rows).
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    ids = input_ids.to(device)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, **with_cache(model, cache), use_cache=True)
    tokens, logits = [], []
    for _ in range(max_new_tokens):
        step_logits = out.logits[:, -1, :].float()
        nxt = pick(step_logits)
        tokens.append(nxt)
        logits.append(step_logits.cpu())
        if eos_token_id is not None and bool((nxt == eos_token_id).all()):
            break
        out = model(input_ids=nxt[:, None], **with_cache(model, output_cache(out)), use_cache=True)
    return Generated(torch.stack(tokens, dim=1).cpu(), torch.stack(logits, dim=1))


@torch.inference_mode()
def hf_generate(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int, **kwargs: object) -> Generated:
    """HF `generate` with the raw logits of every step returned beside the new tokens."""
    device = next(model.parameters()).device
    ids = input_ids.to(device)
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        output_logits=True,
        return_dict_in_generate=True,
        **kwargs,
    )
    new = out.sequences[:, ids.shape[1] :].cpu()
    return Generated(new, torch.stack([x.float().cpu() for x in out.logits], dim=1))
