"""Golden generation: a hand-written prefill + decode loop with a KV cache equals HF `generate` greedy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pytest_attnlab.decode_checks import cached_decode_matches_full_forward, padded_batch_matches_single
from pytest_attnlab.generation import LOGIT_ATOL, decode_loop, hf_generate
from pytest_attnlab.prompts import ids_for, load_prompts

MAX_NEW_TOKENS = 24
CACHE_TOKENS, BATCH_TOKENS = 8, 4  # decode steps of the cache and padded-batch checks
GOLDEN = Path(__file__).with_name("golden") / "smollm2-135m-instruct.json"
# Same kernels, same order of operations: logits differ only by kernel choice between a full and an
# incremental forward. Per dtype, the largest absolute logit difference tolerated.


def _eos(loaded):
    eos = loaded.model.generation_config.eos_token_id
    return eos[0] if isinstance(eos, list) else eos


@pytest.fixture(scope="session")
def greedy_runs(attnlab_model):
    """prompt id -> (prompt ids, HF generate result, manual loop result), computed once per run
    (without a tokenizer, on synthetic ids seeded by the prompt's id)."""
    cache = {}

    def run(prompt):
        if prompt.id not in cache:
            ids = ids_for(attnlab_model, prompt)
            ref = hf_generate(attnlab_model.model, ids, MAX_NEW_TOKENS, do_sample=False)
            mine = decode_loop(attnlab_model.model, ids, MAX_NEW_TOKENS, eos_token_id=_eos(attnlab_model))
            cache[prompt.id] = (ids, ref, mine)
        return cache[prompt.id]

    return run


def test_manual_decode_equals_generate(attnlab_model, prompt, greedy_runs, metrics):
    ids, ref, mine = greedy_runs(prompt)

    n = min(ref.tokens.shape[1], mine.tokens.shape[1])
    agree = (ref.tokens[0, :n] == mine.tokens[0, :n]).float().mean()
    max_diff = (ref.logits[:, :n] - mine.logits[:, :n]).abs().max()
    metrics.record("prompt_tokens", ids.shape[1], "tokens", prompt=prompt.id)
    metrics.record("generated_tokens", ref.tokens.shape[1], "tokens", prompt=prompt.id)
    metrics.record("greedy_agreement", agree, "fraction", threshold=1.0, prompt=prompt.id)
    metrics.record("max_logit_diff", max_diff, "logit", threshold=LOGIT_ATOL[attnlab_model.dtype], prompt=prompt.id)
    decode = attnlab_model.tokenizer.decode if attnlab_model.tokenizer is not None else str
    metrics.table(
        "generated text",
        [
            {"path": "HF generate", "text": decode(ref.tokens[0].tolist())},
            {"path": "manual loop", "text": decode(mine.tokens[0].tolist())},
        ],
    )

    assert mine.tokens.tolist() == ref.tokens.tolist()
    tol = LOGIT_ATOL[attnlab_model.dtype]
    torch.testing.assert_close(mine.logits, ref.logits, atol=tol, rtol=0)


def test_generate_matches_golden_reference(attnlab_model, prompt, greedy_runs, metrics):
    """Greedy tokens equal the golden file recorded with HF generate (fp32, CPU) for the embedded model."""
    golden = json.loads(GOLDEN.read_text())
    if attnlab_model.spec.label != golden["model"]:
        pytest.skip(f"golden tokens exist for {golden['model']} only, not {attnlab_model.spec.label}")
    if attnlab_model.dtype != torch.float32:
        pytest.skip(f"golden tokens were recorded in float32; this run is {attnlab_model.dtype}")
    ids, _, out = greedy_runs(prompt)
    assert ids[0].tolist() == golden["prompts"][prompt.id]["input_ids"], "tokenizer or chat template changed"
    expected = golden["prompts"][prompt.id]["output_ids"]
    got = out.tokens[0].tolist()
    n = min(len(got), len(expected))
    metrics.record(
        "golden_agreement",
        sum(a == b for a, b in zip(got, expected, strict=False)) / max(len(expected), 1),
        "fraction",
        threshold=1.0,
        prompt=prompt.id,
    )
    assert got == expected, (
        f"first mismatch at token {next((i for i in range(n) if got[i] != expected[i]), n)}: "
        f"{attnlab_model.tokenizer.decode(got)!r} vs golden {attnlab_model.tokenizer.decode(expected)!r}"
    )


def decode_prompts(loaded) -> list[torch.Tensor]:
    """Two prompts of different lengths (5 and 26 tokens with the embedded tokenizer, 8 and 20 synthetic
    ids without one): the padded batch (21 pads on the short one), and the cache check's prompt (the
    longer)."""
    if loaded.tokenizer is None:
        prompts = load_prompts()[:2]
        return [ids_for(loaded, p, n) for p, n in zip(prompts, (8, 20), strict=True)]
    encoded = sorted((ids_for(loaded, p) for p in load_prompts()), key=lambda ids: ids.shape[1])
    return [encoded[0], encoded[len(encoded) // 2]]


def pad_id(loaded) -> int:
    """The tokenizer's pad token, else its eos, else the config's; padding is masked, so any id works."""
    tok = loaded.tokenizer
    for candidate in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None), _eos(loaded)):
        if candidate is not None:
            return int(candidate)
    return 0


def test_cached_decode_equals_full_forward(attnlab_model, metrics):
    """Every decode step through the KV cache gives the logits of one full forward over the same tokens."""
    verdict = cached_decode_matches_full_forward(attnlab_model.model, decode_prompts(attnlab_model)[1], CACHE_TOKENS)
    metrics.record("cache_max_logit_diff", verdict.value, "logit", threshold=verdict.threshold)
    assert verdict.passed, verdict.describe()


def test_left_padded_batch_equals_alone(attnlab_model, metrics):
    """A left-padded batch of prompts of different lengths gives each prompt what it gets alone."""
    verdict = padded_batch_matches_single(
        attnlab_model.model, decode_prompts(attnlab_model), BATCH_TOKENS, pad_id(attnlab_model)
    )
    metrics.record("padded_batch_max_logit_diff", verdict.value, "logit", threshold=verdict.threshold)
    assert verdict.passed, verdict.describe()
