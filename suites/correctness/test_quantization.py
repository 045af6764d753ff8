"""Quantization correctness: every --attnlab-quant method against the full-precision baseline.

Per method (and per --attnlab-attn variant), the gate of its class (quant.gate.POLICIES, by bits):
logits cosine >= 0.95 (the outer gate, threshold per method; relative to the RTN of the method's
grid where that RTN is itself below 0.95 on this model, as 4-bit is on SmolLM2-135M), and against
that RTN (rounded by quant.grid's formula): per-layer local error (each layer run on the baseline's
input) and its mean over layers, which a calibrated method (GPTQ, AWQ) must bring below the RTN's,
with the first layer above its tolerance named; next-token KL and top-1 flip rate. No method is
excused as a whole: a known shortfall (KNOWN_SHORTFALLS) excuses only its named checks, each within a band
around its recorded value. Every figure is recorded beside its threshold. Also recorded: perplexity
and its delta on the embedded text, greedy-token agreement, weight bytes and the ratio to the
baseline, quantize time.
Run: pytest suites/correctness -k quant --attnlab-quant all
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import pytest
import torch

from pytest_attnlab.attention.plugin import applied_or_skip
from pytest_attnlab.prompts import skip_without_tokenizer
from pytest_attnlab.quant import QUANTIZERS
from pytest_attnlab.quant.evaluate import argmax_agreement, common_prefix, greedy_tokens, score_text
from pytest_attnlab.quant.gate import (
    Measurement,
    judge,
    measure,
    policy_for,
    reference_model,
    reference_of,
    untrained,
    weight_bytes_limit,
)
from pytest_attnlab.quant.packed import weight_bytes
from pytest_attnlab.quant.policy import Shortfall
from pytest_attnlab.quant.texts import eval_ids

#: Measured beyond its gate on the embedded model (SmolLM2-135M, float32, CPU, 256 tokens) under the
#: exact attention kernels: an xfail for those checks within their band; elsewhere a plain failure.
KNOWN_SHORTFALLS: dict[str, Shortfall] = {
    # LLM.int8() quantizes the activations too (int8 per token, outlier columns > 6.0 in float16; on
    # CPU every input is cast to float16): W8A8, against the weight-only int8 grid of its class.
    # Recorded with quant.gate.Gate on 128 tokens (local 6.195, mean 2.933, KL 0.1545, flips 0.141 vs
    # rtn-int8's 0.047; dc25fa0 measured the local ratio 5.43 on this suite's 256 tokens).
    "bnb-int8": Shortfall(
        {"local_error_ratio": 5.8, "local_error_mean_ratio": 2.93, "next_token_kl": 0.155, "top1_flip_rate": 0.14},
        "LLM.int8() also quantizes activations (W8A8) against a weight-only int8 reference",
    ),
}
EXACT_KERNELS = ("sdpa", "eager", "flex")

PROBE_TOKENS = 256  # tokens of the evaluation text for the logits / per-layer comparison
GREEDY_TOKENS = 24


def _skip_baseline(quantizer: str) -> None:
    if quantizer == "none":
        pytest.skip("--attnlab-quant none: the baseline has nothing to compare against (pass --attnlab-quant all)")


class _Evaluations:
    """Baseline measurements and reference-method calibrations, computed once per attention variant."""

    def __init__(self, base: Any, layer_probe: Any, quantize_model: Any) -> None:
        self.base, self.layer_probe, self.quantize_model = base, layer_probe, quantize_model
        self.text = eval_ids(base.tokenizer)
        self.probe_ids = self.text[:, :PROBE_TOKENS]
        self.prompt_ids = base.tokenizer("Once upon a time, in a small village by the sea,", return_tensors="pt")[
            "input_ids"
        ]
        self._base: dict[str, dict[str, Any]] = {}
        self._calibrations: dict[tuple[str, str], Measurement] = {}

    def measure(self, model: Any, attention: str, reference: Any = None) -> dict[str, Any]:
        """Capture (teacher-forced too, given the baseline's `reference` capture), score, generate.

        Only installing the attention variant may skip (a combination it refuses); anything that
        goes wrong while measuring is a failure.
        """
        with _installed(model, attention):
            return {
                "capture": self.layer_probe.capture(model, self.probe_ids, reference=reference),
                "score": score_text(model, self.text),
                "greedy": greedy_tokens(model, self.prompt_ids, GREEDY_TOKENS),
            }

    def baseline(self, attention: str) -> dict[str, Any]:
        if attention not in self._base:
            self._base[attention] = self.measure(self.base.model, attention)
        return self._base[attention]

    def calibration(self, name: str, attention: str) -> Measurement:
        """The gate's figures of the reference method `name` (an RTN of the same grid, rounded by
        quant.grid's formula: gate.reference_model)."""
        key = (name, attention)
        if key not in self._calibrations:
            ref = self.baseline(attention)["capture"]
            model = reference_model(self.base, name, self.quantize_model)
            with _installed(model, attention):
                cand = self.layer_probe.capture(model, self.probe_ids, reference=ref)
            self._calibrations[key] = measure(ref, cand)
        return self._calibrations[key]


def _installed(model: Any, attention: str) -> ExitStack:
    """`attention` installed on `model` (undone when the returned stack closes); a variant that
    refuses the model at install skips the test. Nothing else is caught."""
    stack = ExitStack()
    stack.enter_context(applied_or_skip(model, attention))
    return stack


@pytest.fixture(scope="module")
def evaluations(attnlab_model: Any, layer_probe: Any, quantize_model: Any) -> _Evaluations:
    skip_without_tokenizer(attnlab_model, "the quantization suite (perplexity on the embedded text, calibration)")
    return _Evaluations(attnlab_model, layer_probe, quantize_model)


def _check_attention(model: Any, attention: str) -> None:
    """Skip (with the variant's reason) a combination that cannot run, e.g. a conversion of bnb layers."""
    if attention == "sdpa":
        return
    try:
        from pytest_attnlab.attention import ATTENTION
    except ImportError:
        pytest.skip(f"attention variant {attention!r} needs pytest_attnlab.attention")
    variant = ATTENTION.get(attention)
    reason = variant.unavailable(model)
    if reason:
        pytest.skip(f"{attention} cannot run on this quantized model: {reason}")
    from pytest_attnlab.attention import ConversionVariant

    if isinstance(variant, ConversionVariant):
        # conversions rebuild the attention projections from their float weights
        odd = sorted(
            {
                type(m).__name__
                for n, m in model.named_modules()
                if ".self_attn." in n
                and n.endswith("_proj")
                and (type(m) is not torch.nn.Linear or not m.weight.is_floating_point())
            }
        )
        if odd:
            pytest.skip(f"{attention} converts float nn.Linear projections; this quantizer made them {', '.join(odd)}")


def test_quantized_logits_match_baseline(
    quantizer: str,
    quant_attention: str,
    quant_settings: Any,
    attnlab_model: Any,
    quantize_model: Any,
    evaluations: _Evaluations,
    metrics: Any,
) -> None:
    """The calibrated gate: outer logits cosine, and per-layer local error, KL and flips vs the class's RTN."""
    _skip_baseline(quantizer)
    metrics.update_context(quant=quantizer, attention=quant_attention)
    method = QUANTIZERS.get(quantizer)
    quantized = quantize_model(attnlab_model, quantizer)
    _check_attention(quantized.model, quant_attention)
    ref = evaluations.baseline(quant_attention)
    cand = evaluations.measure(quantized.model, quant_attention, reference=ref["capture"])
    reference_name = reference_of(method)
    calibration = evaluations.calibration(reference_name, quant_attention) if reference_name else None
    result = judge(
        ref["capture"],
        cand["capture"],
        calibration,
        method=quantizer,
        reference_name=reference_name,
        policy=policy_for(method),
        logits_cosine=quant_settings.gate(quantizer, method),
        calibrated=method.calibrated,
        untrained=untrained(attnlab_model),
    )
    ppl_ref, ppl = ref["score"].perplexity, cand["score"].perplexity
    base_bytes, q_bytes = weight_bytes(attnlab_model.model), weight_bytes(quantized.model)

    result.record(metrics, settings=quantized.settings, from_cache=quantized.from_cache)
    # recorded, not gated: a healthy 4-bit method leaves the cumulative cosine far below any fixed floor;
    # the per-layer local errors decide
    metrics.record("min_layer_cosine", result.layers.min_cosine)
    metrics.record("perplexity", ppl, tokens=cand["score"].tokens)
    metrics.record("perplexity_baseline", ppl_ref)
    metrics.record("perplexity_delta", ppl - ppl_ref)
    metrics.record("greedy_agreement", argmax_agreement(ref["score"], cand["score"]), "fraction")
    metrics.record("greedy_prefix_tokens", common_prefix(ref["greedy"], cand["greedy"]), "tokens", of=GREEDY_TOKENS)
    metrics.record("weight_bytes", q_bytes, "B", baseline_bytes=base_bytes)
    metrics.record("weight_bytes_ratio", q_bytes / base_bytes, "ratio")
    metrics.record("quantize_seconds", quantized.quantize_seconds, "s")
    metrics.record("quantize_build_seconds", quantized.build_seconds, "s")

    assert torch.isfinite(torch.tensor(ppl)), f"{quantizer}: perplexity is not finite"
    shortfall = KNOWN_SHORTFALLS.get(quantizer)
    embedded = attnlab_model.spec.source == "embedded"
    if shortfall is not None and embedded and quant_attention in EXACT_KERNELS:
        assert not result.passed, (
            f"{quantizer} now passes the gate: remove its KNOWN_SHORTFALLS entry ({', '.join(shortfall.measured)})\n"
            f"{result.describe()}"
        )
        reason = shortfall.excuses(result)
        if reason:
            pytest.xfail(f"{quantizer}: {reason}")
    assert result.passed, (
        f"{quantizer} x {quant_attention} failed the gate; perplexity {ppl:.3f} vs {ppl_ref:.3f}\n{result.describe()}"
    )


def test_quantized_weight_bytes(quantizer: str, attnlab_model: Any, quantize_model: Any, metrics: Any) -> None:
    """The weights take what their bits say: decoder linears at the nominal bits + 1.25 bits of scales
    and zeros, the rest as in the baseline (quant.gate.weight_bytes_limit). On SmolLM2 in float32:
    <= 34 % at 4 bits (the seed asked <= 50 %), <= 44 % at 8 bits (issue 15 asked <= 55 %, which a
    model cast to float16 claiming 8 bits meets at 50 %); measured rtn-int8 40.9 %, rtn-int4-g32 33.4 %."""
    _skip_baseline(quantizer)
    metrics.update_context(quant=quantizer)
    quantized = quantize_model(attnlab_model, quantizer)
    ratio = weight_bytes(quantized.model) / weight_bytes(attnlab_model.model)
    limit = weight_bytes_limit(attnlab_model.model, quantized.bits)
    metrics.record("weight_bytes_ratio", ratio, "ratio", threshold=limit)
    assert ratio <= limit, (
        f"{quantizer}: {quantized.bits}-bit weights take {ratio:.1%} of the baseline's (limit {limit:.1%})"
    )


def test_baseline_perplexity(attnlab_model: Any, evaluations: _Evaluations, metrics: Any) -> None:
    """The baseline's perplexity on the embedded text (the reference every delta is taken from).

    A trained model scores far below the uniform guess (perplexity = vocabulary size); a random
    one sits near it, so the bound only applies to trained models (not random shapes, nor checkpoints
    whose weights still have the random init's spread: models.anatomy.looks_untrained).
    """
    score = evaluations.baseline("sdpa")["score"]
    vocab = attnlab_model.model.config.vocab_size
    metrics.record("perplexity", score.perplexity, tokens=score.tokens)
    metrics.record("weight_bytes", weight_bytes(attnlab_model.model), "B")
    assert score.perplexity < 2 * vocab, f"perplexity {score.perplexity:.1f} is beyond a uniform guess ({vocab})"
    weights_untrained = untrained(attnlab_model)
    metrics.record("untrained_weights", float(weights_untrained))
    if not weights_untrained:
        assert score.perplexity < 100, (
            f"a trained model's perplexity on plain prose should be < 100, got {score.perplexity:.1f}"
        )
