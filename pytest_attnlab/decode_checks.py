"""Decode-time checks shared by the correctness suite and its planted-bug self-test.

Each check returns a `Verdict` instead of asserting, so `suites/correctness/test_generation.py`
asserts it on the model under test and `suites/correctness/test_decode_gate_kill.py` runs the
very same function on a model with a planted decode bug (`selftest.decode_mutants`) and expects it
to fail. What a single batch-1 prefill cannot see is what these look at: the KV cache across decode
steps, and a left-padded batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pytest_attnlab.generation import LOGIT_ATOL, decode_loop


@dataclass(frozen=True)
class Verdict:
    """One check's figure against its threshold (`op`: the figure must be <= or >= it)."""

    check: str
    metric: str
    value: float
    threshold: float
    op: str
    detail: str = ""
    broken: str = ""  # a failure beside the figure (a layer diverged while the logits kept their cosine)

    @property
    def passed(self) -> bool:
        if self.broken:
            return False
        return self.value <= self.threshold if self.op == "<=" else self.value >= self.threshold

    def describe(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        figure = f"{self.metric} {self.value:.4g} (must be {self.op} {self.threshold:.4g})"
        return f"{self.check}: {figure} {verdict}; {self.broken + '; ' if self.broken else ''}{self.detail}"


def _atol(model: torch.nn.Module) -> float:
    return LOGIT_ATOL[next(model.parameters()).dtype]


def _noise_bound(control: float, model: torch.nn.Module) -> float:
    """Twice the diff of a control that shares the kernels' shape noise but not the code under test, plus
    the dtype's logit tolerance. Measured on the embedded model (CPU): the control is 1e-5 in float32,
    1.06 in bfloat16 (a 40- vs a 48-token forward round differently through 30 layers)."""
    return 2.0 * control + _atol(model)


@torch.inference_mode()
def cached_decode_matches_full_forward(model: torch.nn.Module, ids: torch.Tensor, new_tokens: int) -> Verdict:
    """The logits of every decode step (prefill once, then one token at a time through the KV cache)
    equal one full forward over the prompt and the generated tokens: a cache written or read at the wrong
    position changes the decode steps only. Step 0 (the prefill's last position) is the control: it
    differs from the full forward by kernel shape alone, so a decode step may differ by twice that plus
    the dtype's logit tolerance (`LOGIT_ATOL`). Embedded model, float32: clean 4e-5, a decode position
    off by one 3.1; bfloat16: clean 1.06 (at step 0), off by one 6.9."""
    out = decode_loop(model, ids, new_tokens)
    device = next(model.parameters()).device
    full_ids = torch.cat([ids, out.tokens], dim=1).to(device)
    full = model(full_ids).logits[:, ids.shape[1] - 1 : -1].float().cpu()
    diff = (full - out.logits).abs().amax(dim=-1)[0]  # per step; step 0 is the prefill
    steps = diff[1:] if diff.numel() > 1 else diff
    worst = int(steps.argmax()) + (1 if diff.numel() > 1 else 0)
    return Verdict(
        "cached decode vs full forward",
        "max_logit_diff",
        float(steps.max()),
        _noise_bound(float(diff[0]), model),
        "<=",
        f"{diff.numel() - 1} decode steps, worst at step {worst}; prefill control {float(diff[0]):.3g}",
    )


def left_padded(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts [1, n_i] left-padded into one batch: (input_ids, attention_mask)."""
    width = max(r.shape[1] for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - r.shape[1] :] = r[0]
        mask[i, width - r.shape[1] :] = 1
    return ids, mask


def _generate(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int, pad_id: int) -> Any:
    device = next(model.parameters()).device
    return model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=pad_id,
        output_logits=True,
        return_dict_in_generate=True,
    )


@torch.inference_mode()
def padded_batch_matches_single(
    model: torch.nn.Module, prompts: list[torch.Tensor], new_tokens: int, pad_id: int
) -> Verdict:
    """HF `generate` on a left-padded batch of prompts of different lengths gives each padded prompt the
    logits it gets alone, up to its first greedy token that differs (a near tie broken the other way
    changes the context after it, not the check). The longest prompt, unpadded, is the control: it
    differs from its run alone by batching alone, so a padded row may differ by twice that plus the
    dtype's logit tolerance. Embedded model, float32: clean 4e-5; the last pad attended 5.0."""
    prompts = sorted(prompts, key=lambda p: p.shape[1])
    ids, mask = left_padded(prompts, pad_id)
    batch = _generate(model, ids, mask, new_tokens, pad_id)
    batch_logits = torch.stack([x.float().cpu() for x in batch.logits], dim=1)
    diffs, flipped = [], []
    for i, prompt in enumerate(prompts):
        alone = _generate(model, prompt, torch.ones_like(prompt), new_tokens, pad_id)
        mine = alone.sequences[0, prompt.shape[1] :].cpu()
        theirs = batch.sequences[i, ids.shape[1] : ids.shape[1] + mine.shape[0]].cpu()
        differ = torch.nonzero(mine != theirs).flatten()
        steps = int(differ[0]) + 1 if differ.numel() else mine.shape[0]
        if differ.numel():
            flipped.append(f"row {i} at step {int(differ[0])}")
        logits = torch.stack([x.float().cpu() for x in alone.logits], dim=1)[0, :steps]
        diffs.append(float((batch_logits[i, :steps] - logits).abs().max()))
    pads = [int(ids.shape[1] - p.shape[1]) for p in prompts]
    return Verdict(
        "left-padded batch vs alone",
        "max_logit_diff",
        max(diffs[:-1]),
        _noise_bound(diffs[-1], model),
        "<=",
        f"prompts of {[p.shape[1] for p in prompts]} tokens, left pads {pads}, per-row diffs "
        f"{[f'{d:.3g}' for d in diffs]} (last: the unpadded control); greedy tokens differ: {flipped or 'none'}",
    )


#: where the late-position layer diff starts: RoPE angles there are large, so an angle computed in
#: bfloat16 is off by a radian, while the same text at position 0 hides it (measured on the embedded
#: model: 0.1 rad, layer rel_err 0.039 vs 0.040 clean; at 1000: 0.44 vs 0.041)
LATE_START = 1000


def layer_diff_verdict(diff: Any, logits_cosine: float) -> Verdict:
    """A `probe.diff` result as a verdict: the first divergent layer (cosine and relative error per layer)
    and the whole-model logits cosine, as test_layer_diff asserts them."""
    worst = min(diff.rows, key=lambda r: r.cosine)
    return Verdict(
        "layer diff vs float32",
        "logits_cosine",
        float(diff.logits_cosine),
        logits_cosine,
        ">=",
        f"min layer cosine {worst.cosine:.6f} at layer {worst.layer}",
        broken=diff.describe() if diff.first_divergent is not None else "",
    )


#: test_layer_diff's per-layer (cosine floor, relative-error ceiling) against the float32 reference:
#: lower precision moves each layer by ~1e-2 relative error (bf16 has 8 mantissa bits); a float32
#: candidate (another attention kernel, a converted copy) must stay at rounding level.
LAYER_THRESHOLDS = {
    torch.bfloat16: (0.99, 0.1),
    torch.float16: (0.99, 0.1),
    torch.float32: (0.99999, 1e-4),
}


def late_inputs(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """`ids` placed at positions LATE_START, LATE_START + 1, ... (the same text late in a long context)."""
    return {"input_ids": ids, "position_ids": torch.arange(ids.shape[1])[None] + LATE_START}
