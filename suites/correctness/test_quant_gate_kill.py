"""Planted bugs vs the calibrated quantization gate on the model under test (the embedded SmolLM2).

Every registered mutant (`pytest_attnlab.quant.mutants.MUTANTS`, which a conftest.py extends
through `pytest_attnlab_register`'s `registries["mutants"]`) is a correct RTN plus one bug,
presented as a method of a class (8-bit: rtn-int8; 4-bit: rtn-int4-g64-zp, or awq-int4-g64 for a
calibration that silently falls back to RTN), and must fail the gate that correct methods of that
class pass (quant.gate.POLICIES). The kill table (logits cosine, KL, flips, worst and mean
local-error ratio, named layer, verdict) is attached to the report, and the kill rate counts every
registered mutant: one that did not run in this session is run by `test_kill_rate` itself. On the
embedded model a survivor fails; there is no "invisible" there. Then localisation: a bug in one
projection of layer k (its input columns read in swapped pairs, a nibble-order bug) is named layer
k, for the first, middle and last layer and each projection, where the cumulative diff names a
layer 11 to 13 later (a bug in layer 15 of SmolLM2's 30, measured) or none. The correct methods go
through the same gate in test_quantization.py (`--attnlab-quant ...`); the fast proof on a tiny
model is tests/test_quant_gate.py.

Every metric row of a mutant carries `quant="mutant:<name>"` and `selftest="<name>"` (the gate's
self-test, not a method of the user's).

On other models a bug may not apply (no q_proj of that name is fine: fused projections are edited
block by block; but a model without RoPE has no RoPE bug) or may be invisible: untrained weights
give near-uniform attention, where a RoPE or position bug moves nothing. Both skip with the reason
there; "invisible" is measured, not assumed: the bug planted alone (no quantization) passes the gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

from pytest_attnlab.probe import decoder_layers
from pytest_attnlab.quant.gate import Gate, GateResult, reference_of
from pytest_attnlab.quant.mutants import MUTANTS, PROJECTIONS, Mutant, NotApplicable, swap_column_pairs
from pytest_attnlab.quant.texts import eval_ids
from pytest_attnlab.registry import register_all

TOKENS = 128  # of the evaluation text: enough for the KL and flips, short enough for CI on CPU


@pytest.fixture(scope="module")
def gate(attnlab_model: Any, quantize_model: Any) -> Gate:
    if attnlab_model.tokenizer is not None:
        ids = eval_ids(attnlab_model.tokenizer, TOKENS)
    else:  # random shapes without the embedded tokenizer: synthetic ids
        vocab = attnlab_model.model.config.vocab_size
        ids = torch.randint(16, vocab, (1, TOKENS), generator=torch.Generator().manual_seed(0))
    return Gate(attnlab_model, ids, quantize=quantize_model)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mutant_name" in metafunc.fixturenames:  # after the registration hooks: a conftest's mutants too
        register_all(metafunc.config)
        metafunc.parametrize("mutant_name", MUTANTS.names())


@dataclass
class Outcome:
    """One mutant's fate: its gate result, or why it could not be shown on this model."""

    result: GateResult | None = None
    skipped: str = ""

    @property
    def killed(self) -> bool:
        return self.result is not None and not self.result.passed


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    """Filled by each mutant's test, read (and completed) by the kill-rate test at the end of the module."""
    return {}


def _planted(mutant: Mutant, gate: Gate, loaded: Any, metrics: Any) -> Outcome:
    """The mutant through the gate. Off the embedded model, the outcome is a skip where the bug cannot
    be planted, or where the bug on its own (no quantization) already passes the gate."""
    embedded = loaded.spec.source == "embedded"
    try:
        model = mutant.quantize(loaded, None)
        alone = None if embedded else gate.check(f"{mutant.name}-alone", mutant.alone(loaded), reference_of(mutant))
    except NotApplicable as exc:
        if embedded:
            raise
        return Outcome(skipped=f"planted bug {mutant.name!r} does not apply to {loaded.spec.label}: {exc}")
    if alone is not None:
        metrics.record("bug_alone_passes_gate", float(alone.passed), bug=mutant.description)
        if alone.passed:
            return Outcome(
                skipped=f"planted bug {mutant.name!r} is invisible on {loaded.spec.label}: on its own it stays "
                f"within {reference_of(mutant)}'s errors here ({', '.join(c.describe() for c in alone.checks[:2])});"
                " untrained weights attend almost uniformly"
            )
    return Outcome(gate.check(mutant.name, model, reference_of(mutant), quantizer=mutant))


def _tag(metrics: Any, name: str) -> None:
    """Mark this test's rows as the gate's self-test (the report keeps them apart from real methods)."""
    metrics.update_context(quant=f"mutant:{name}", selftest=name)


def test_planted_bug_fails_the_gate(
    mutant_name: str, gate: Gate, attnlab_model: Any, outcomes: dict[str, Outcome], metrics: Any
) -> None:
    mutant = MUTANTS.get(mutant_name)
    _tag(metrics, mutant_name)
    outcome = outcomes[mutant_name] = _planted(mutant, gate, attnlab_model, metrics)
    if outcome.result is None:
        pytest.skip(outcome.skipped)
    outcome.result.record(metrics, bug=mutant.description)
    assert outcome.killed, (
        f"planted bug {mutant_name!r} ({mutant.description}) passed the gate:\n{outcome.result.describe()}"
    )


def test_kill_rate(gate: Gate, attnlab_model: Any, outcomes: dict[str, Outcome], metrics: Any) -> None:
    """Kill rate = killed / registered mutants; the ones not run in this session are run here."""
    names = MUTANTS.names()
    metrics.update_context(selftest="kill-rate")
    for name in names:
        if name not in outcomes:
            outcomes[name] = _planted(MUTANTS.get(name), gate, attnlab_model, metrics)
    rows = []
    for name in names:
        o = outcomes[name]
        if o.result is None:
            rows.append({"method": name, "verdict": "skipped", "failed": o.skipped})
        else:
            rows.append({**o.result.summary(), "verdict": "killed" if o.killed else "SURVIVED"})
    killed = sum(outcomes[n].killed for n in names)
    rate = killed / len(names)
    metrics.table(f"planted bugs vs the calibrated quantization gate: {killed} of {len(names)} killed", rows)
    metrics.record("mutant_kill_rate", rate, "fraction", threshold=1.0, mutants=len(names), killed=killed)
    print("\n" + format_table(rows))
    survivors = [n for n in names if outcomes[n].result is not None and not outcomes[n].killed]
    assert not survivors, f"survivors: {survivors}"
    if attnlab_model.spec.source == "embedded":
        assert rate == 1.0, f"{killed} of {len(names)} killed on the embedded model"


@pytest.mark.parametrize("projection", PROJECTIONS)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_bug_in_one_projection_is_named_by_its_layer(
    where: str, projection: str, gate: Gate, attnlab_model: Any, metrics: Any
) -> None:
    n = len(decoder_layers(attnlab_model.model))
    layer = {"first": 0, "middle": n // 2, "last": n - 1}[where]
    mutant = Mutant(f"{projection}-{layer}-swapped", swap_column_pairs([layer], [projection]))
    _tag(metrics, mutant.name)
    outcome = _planted(mutant, gate, attnlab_model, metrics)
    if outcome.result is None:
        pytest.skip(outcome.skipped)
    result = outcome.result
    cumulative = result.layers.first_divergent_cumulative
    metrics.record("first_divergent_layer", -1 if result.first_divergent is None else result.first_divergent)
    metrics.record("first_divergent_layer_cumulative", -1 if cumulative is None else cumulative, planted=layer)
    assert not result.passed, result.describe()
    assert result.first_divergent == layer, result.describe()


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of `rows` (dicts; the keys of the widest row)."""
    head = list(max(rows, key=len))
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in head) + " |" for r in rows]
    return "\n".join(lines)
