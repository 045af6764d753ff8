"""Per-layer diff: every decoder layer's output of a candidate against the float32 reference.

The test names the first layer that falls below its threshold, and gates the whole-model logits
cosine at --attnlab-logits-cosine (default 0.95).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from pytest_attnlab.decode_checks import LATE_START, LAYER_THRESHOLDS, late_inputs, layer_diff_verdict
from pytest_attnlab.prompts import ids_for, load_prompts


@dataclass(frozen=True)
class Candidate:
    name: str
    dtype: torch.dtype
    attn_implementation: str
    cos_threshold: float  # per-layer cosine floor
    rel_threshold: float  # per-layer relative L2 error ceiling


# Reference: float32 + sdpa. Thresholds (decode_checks.LAYER_THRESHOLDS): lower precision moves each
# layer by ~1e-2 relative error (bf16 has 8 mantissa bits); swapping the attention kernel in float32
# must stay at rounding level.
CANDIDATES = [
    Candidate("bfloat16-sdpa", torch.bfloat16, "sdpa", *LAYER_THRESHOLDS[torch.bfloat16]),
    Candidate("float16-sdpa", torch.float16, "sdpa", *LAYER_THRESHOLDS[torch.float16]),
    Candidate("float32-eager", torch.float32, "eager", *LAYER_THRESHOLDS[torch.float32]),
]


@pytest.fixture(scope="module")
def probe_ids(attnlab_model):
    """A chat prompt followed by plain text: ~50 tokens mixing special and ordinary tokens (synthetic
    ids without a tokenizer)."""
    prompts = load_prompts()
    chat = ids_for(attnlab_model, next(p for p in prompts if p.kind == "chat"), 32)
    plain = ids_for(attnlab_model, next(p for p in prompts if p.id == "plain-story"), 24)
    return torch.cat([chat, plain], dim=1)


@pytest.fixture(scope="module")
def reference_capture(model_factory, layer_probe, probe_ids):
    ref = model_factory(dtype=torch.float32, attn_implementation="sdpa")
    return layer_probe.capture(ref.model, probe_ids)


@pytest.mark.parametrize("candidate", CANDIDATES, ids=lambda c: c.name)
def test_layer_diff_vs_float32(
    candidate, model_factory, layer_probe, reference_capture, probe_ids, attnlab_settings, metrics
):
    loaded = model_factory(dtype=candidate.dtype, attn_implementation=candidate.attn_implementation)
    reference = model_factory(dtype=torch.float32, attn_implementation="sdpa")
    if (
        candidate.attn_implementation != "sdpa"
        and loaded.options.attn_implementation == reference.options.attn_implementation
    ):
        pytest.skip(
            f"the reference already runs {reference.options.attn_implementation} attention "
            f"({reference.notes.get('attention', '')}): {candidate.name} would compare it with itself"
        )
    metrics.update_context(**loaded.context(), candidate=candidate.name, reference="float32-sdpa")
    result = layer_probe.diff(
        reference_capture,
        layer_probe.capture(loaded.model, probe_ids),
        cos_threshold=candidate.cos_threshold,
        rel_threshold=candidate.rel_threshold,
    )
    for row in result.rows:
        metrics.record("layer_cosine", row.cosine, threshold=candidate.cos_threshold, layer=row.layer)
        metrics.record("layer_rel_err", row.rel_err, threshold=candidate.rel_threshold, layer=row.layer)
    metrics.record("min_layer_cosine", result.min_cosine, threshold=candidate.cos_threshold)
    first = result.first_divergent
    metrics.record("first_divergent_layer", -1 if first is None else first)
    metrics.record("logits_cosine", result.logits_cosine, threshold=attnlab_settings.logits_cosine)
    metrics.table(f"per-layer diff: {candidate.name} vs float32-sdpa", result.table(), highlight_row=first)

    assert result.logits_cosine > attnlab_settings.logits_cosine, (
        f"logits cosine {result.logits_cosine:.6f} <= gate {attnlab_settings.logits_cosine}; {result.describe()}"
    )
    assert first is None, result.describe()
    assert result.min_cosine >= candidate.cos_threshold, result.describe()


@pytest.mark.parametrize("candidate", [c for c in CANDIDATES if c.dtype != torch.float32], ids=lambda c: c.name)
def test_layer_diff_late_in_context(candidate, model_factory, layer_probe, probe_ids, attnlab_settings, metrics):
    """The same text at positions LATE_START... (a long conversation's late turn): RoPE angles there are
    large, so one computed in 16 bits instead of float32 is off by a radian (at position 0 the same
    bug hides in bf16 rounding). Same thresholds as at position 0."""
    reference = model_factory(dtype=torch.float32, attn_implementation="sdpa")
    limit = getattr(reference.model.config, "max_position_embeddings", None)
    if limit is not None and limit < LATE_START + probe_ids.shape[1]:
        pytest.skip(f"max_position_embeddings {limit} < {LATE_START + probe_ids.shape[1]}")
    loaded = model_factory(dtype=candidate.dtype, attn_implementation=candidate.attn_implementation)
    metrics.update_context(**loaded.context(), candidate=candidate.name, reference="float32-sdpa", start=LATE_START)
    inputs = late_inputs(probe_ids)
    result = layer_probe.diff(
        layer_probe.capture(reference.model, inputs),
        layer_probe.capture(loaded.model, inputs),
        cos_threshold=candidate.cos_threshold,
        rel_threshold=candidate.rel_threshold,
    )
    verdict = layer_diff_verdict(result, attnlab_settings.logits_cosine)
    metrics.record("min_layer_cosine", result.min_cosine, threshold=candidate.cos_threshold)
    metrics.record("logits_cosine", result.logits_cosine, threshold=attnlab_settings.logits_cosine)
    metrics.table(f"per-layer diff at {LATE_START}: {candidate.name} vs float32-sdpa", result.table())
    assert verdict.passed, verdict.describe()
