"""Sampling: temperature / top-k / top-p written from their definitions against HF's logits processors."""

from __future__ import annotations

import pytest
import torch

from pytest_attnlab import sampling
from pytest_attnlab.generation import LOGIT_ATOL, decode_loop, hf_generate
from pytest_attnlab.prompts import Prompt, ids_for

SETTINGS = [
    pytest.param(1.0, None, None, id="t1.0"),
    pytest.param(0.7, None, None, id="t0.7"),
    pytest.param(1.0, 50, None, id="k50"),
    pytest.param(1.0, None, 0.9, id="p0.9"),
    pytest.param(0.7, 40, 0.9, id="t0.7-k40-p0.9"),
    pytest.param(1.3, 5, 0.5, id="t1.3-k5-p0.5"),
]


def hf_filtered(logits: torch.Tensor, t: float, k: int | None, p: float | None) -> torch.Tensor:
    """HF's own warpers, in the order `generate` applies them."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    procs = LogitsProcessorList()
    if t != 1.0:
        procs.append(TemperatureLogitsWarper(t))
    if k:
        procs.append(TopKLogitsWarper(k))
    if p is not None and p < 1.0:
        procs.append(TopPLogitsWarper(p))
    return procs(None, logits.clone())


def boundary_ties_only(logits: torch.Tensor, kept_a: torch.Tensor, kept_b: torch.Tensor) -> bool:
    """True when two kept sets differ only in tokens tied with the smallest kept logit of their row.

    A cut through equal logits may fall on either side of them: the definitions do not order ties, and
    sorts break them differently. Low-precision logits tie often (bf16 keeps 8 bits of mantissa; a
    random model's flat distribution puts many tokens on one value); float32 logits of a trained model
    almost never do.
    """
    differ = kept_a != kept_b
    floor = torch.where(kept_a | kept_b, logits, torch.inf).amin(-1, keepdim=True)
    return bool((logits[differ] == floor.expand_as(logits)[differ]).all())


@pytest.fixture(scope="module")
def next_token_logits(attnlab_model, chat_ids):
    """Real next-token logits of the model under test on a chat prompt and on a plain prompt, [2, vocab]."""
    plain = ids_for(attnlab_model, Prompt("once-upon", "plain", "Once upon a time"), 8)
    rows = []
    with torch.inference_mode():
        for ids in (chat_ids, plain):
            out = attnlab_model.model(ids.to(attnlab_model.device))
            rows.append(out.logits[0, -1].float().cpu())
    return torch.stack(rows)


@pytest.mark.parametrize(("t", "k", "p"), SETTINGS)
def test_filtered_distribution_matches_hf(next_token_logits, t, k, p, metrics):
    mine = sampling.filter_logits(next_token_logits, t=t, k=k, p=p)
    ref = hf_filtered(next_token_logits, t, k, p)

    kept_mine, kept_ref = torch.isfinite(mine), torch.isfinite(ref)
    ties = int((kept_mine != kept_ref).sum())
    metrics.record("tokens_kept", kept_mine.sum(-1).float().mean(), "tokens", t=t, k=k, p=p)
    metrics.record("kept_set_tie_breaks", ties, "tokens", t=t, k=k, p=p)
    assert boundary_ties_only(next_token_logits, kept_mine, kept_ref), "different tokens survive the filters"
    if not ties:
        torch.testing.assert_close(mine.softmax(-1), ref.softmax(-1), atol=1e-7, rtol=1e-5)
    if p is not None:  # the definition: the kept set is the smallest one whose mass reaches p
        probs = (next_token_logits / t).softmax(-1) if not k else sampling.top_k(next_token_logits / t, k).softmax(-1)
        kept_mass = (probs.double() * kept_mine).sum(-1)
        # The cut is made on a float32 running sum (as HF's is): over n kept tokens its rounding error
        # is bounded by n * eps. A random model's flat distribution keeps ~90 % of a 151936-token
        # vocabulary, where that is 0.016 (an H200 bf16 run came out 0.9000 < 0.9 - 1e-6); a
        # trained model keeps tens of tokens, where it is about 1e-6.
        slack = kept_mine.sum(-1).double() * torch.finfo(torch.float32).eps
        metrics.record("kept_mass_shortfall", (p - kept_mass).clamp(min=0).max(), "probability", t=t, k=k, p=p)
        assert bool((kept_mass >= p - slack).all()), f"kept mass {kept_mass.tolist()} < {p} - {slack.tolist()}"


@pytest.mark.parametrize(("t", "k", "p"), [s for s in SETTINGS if s.id != "t1.0"])
@pytest.mark.parametrize("seed", [0, 1234])
def test_seeded_sampling_matches_generate(attnlab_model, chat_ids, t, k, p, seed, metrics):
    """Same seed, same filtered distribution, same torch.multinomial draws: the same tokens."""
    n = 12
    torch.manual_seed(seed)
    ref = hf_generate(attnlab_model.model, chat_ids, n, do_sample=True, temperature=t, top_k=k or 0, top_p=p or 1.0)
    torch.manual_seed(seed)
    mine = decode_loop(attnlab_model.model, chat_ids, ref.tokens.shape[1], pick=sampling.sampler(t=t, k=k, p=p))
    agree = (mine.tokens == ref.tokens).float().mean()
    metrics.record("sampled_agreement", agree, "fraction", threshold=1.0, t=t, k=k, p=p, seed=seed)
    differ = (mine.tokens != ref.tokens).any(0).nonzero()
    if len(differ):
        # The same seed gives the same draws, so the tokens may part only where the two sides sampled from
        # different distributions: a tie at the filters' cut broken the other way, or (bf16/fp16) logits
        # that differ in their last bits between the two decode loops, within test_generation's tolerance.
        step = int(differ[0])
        # on the device that sampled: CPU and CUDA sorts order equal logits differently
        a, b = (x.logits[:, step].to(attnlab_model.device) for x in (mine, ref))
        kept_a = torch.isfinite(sampling.filter_logits(a, t=t, k=k, p=p))
        kept_b = torch.isfinite(hf_filtered(b, t, k, p))
        drift = float((a - b).abs().max())
        tie_break = bool((kept_a != kept_b).any()) and boundary_ties_only(b, kept_a, kept_b)
        metrics.record("sampled_divergence_step", step, "step", t=t, k=k, p=p, seed=seed, logits_drift=drift)
        # float32 logits drift by ~1e-6 at most, too little to move a draw: there the tokens must agree
        low_precision = attnlab_model.dtype != torch.float32
        assert tie_break or (low_precision and 0 < drift <= LOGIT_ATOL[attnlab_model.dtype]), (
            f"step {step}: the same draws from logits {drift:.3g} apart (tolerance "
            f"{LOGIT_ATOL[attnlab_model.dtype]}) gave different tokens: the sampler differs from HF's"
        )
