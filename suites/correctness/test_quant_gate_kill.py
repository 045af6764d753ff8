"""Planted bugs vs the calibrated quantization gate on the model under test (the embedded SmolLM2).

Every mutant of `pytest_attnlab.quant.mutants` (a correct rtn-int8 plus one bug, presented as an
8-bit method) must fail the gate that correct methods of its class pass (quant.gate: logits
cosine >= 0.95, and per-layer local error, next-token KL and top-1 flips within 2x of rtn-int8's).
The kill table (logits cosine, KL, worst local-error ratio, named layer, verdict) is attached to
the report and the kill rate recorded. Then localisation: a bug in one projection of layer k (its
input columns read in swapped pairs, a nibble-order bug) is named layer k, for the first, middle
and last layer and each projection, where the cumulative diff names a layer 11 to 13 later (a bug
in layer 15 of SmolLM2's 30, measured) or none. The correct methods go through the same gate in
test_quantization.py (`--attnlab-quant ...`); the fast proof on a tiny model is tests/test_quant_gate.py.

On other models a bug may not apply (no q_proj of that name is fine: fused projections are edited
block by block; but a model without RoPE has no RoPE bug) or may be invisible: untrained weights
give near-uniform attention, where a RoPE or position bug moves nothing. Both skip with the reason;
"invisible" is measured, not assumed: the bug planted alone (no quantization) passes the gate.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pytest_attnlab.probe import decoder_layers
from pytest_attnlab.quant.gate import Gate, GateResult, reference_of
from pytest_attnlab.quant.mutants import MUTANTS, PROJECTIONS, Mutant, NotApplicable, swap_column_pairs
from pytest_attnlab.quant.texts import eval_ids

TOKENS = 128  # of the evaluation text: enough for the KL and flips, short enough for CI on CPU


@pytest.fixture(scope="module")
def gate(attnlab_model: Any, quantize_model: Any) -> Gate:
    if attnlab_model.tokenizer is not None:
        ids = eval_ids(attnlab_model.tokenizer, TOKENS)
    else:  # random shapes without the embedded tokenizer: synthetic ids
        vocab = attnlab_model.model.config.vocab_size
        ids = torch.randint(16, vocab, (1, TOKENS), generator=torch.Generator().manual_seed(0))
    return Gate(attnlab_model, ids, quantize=quantize_model)


@pytest.fixture(scope="module")
def verdicts() -> dict[str, GateResult]:
    """Filled by each mutant's test, read by the kill-rate test at the end of the module."""
    return {}


def _planted(mutant: Mutant, gate: Gate, loaded: Any, metrics: Any) -> GateResult:
    """The mutant through the gate; skips where the bug cannot be planted in this model, or where the
    bug on its own (no quantization) already passes the gate: this model cannot show it."""
    try:
        model = mutant.quantize(loaded, None)
        alone = gate.check(f"{mutant.name}-alone", mutant.alone(loaded), reference_of(mutant))
    except NotApplicable as exc:
        pytest.skip(f"planted bug {mutant.name!r} does not apply to {loaded.spec.label}: {exc}")
    metrics.record("bug_alone_passes_gate", float(alone.passed), bug=mutant.description)
    if alone.passed:
        pytest.skip(
            f"planted bug {mutant.name!r} is invisible on {loaded.spec.label}: on its own it stays within "
            f"{reference_of(mutant)}'s errors here ({', '.join(c.describe() for c in alone.checks[:2])}); "
            "untrained weights attend almost uniformly"
        )
    return gate.check(mutant.name, model, reference_of(mutant))


@pytest.mark.parametrize("name", MUTANTS.names())
def test_planted_bug_fails_the_gate(
    name: str, gate: Gate, attnlab_model: Any, verdicts: dict[str, GateResult], metrics: Any
) -> None:
    mutant = MUTANTS.get(name)
    metrics.update_context(quant=f"mutant:{name}")
    result = _planted(mutant, gate, attnlab_model, metrics)
    verdicts[name] = result
    result.record(metrics, bug=mutant.description)
    assert not result.passed, f"planted bug {name!r} ({mutant.description}) passed the gate:\n{result.describe()}"


def test_kill_rate(verdicts: dict[str, GateResult], metrics: Any) -> None:
    """Every mutant that ran was killed (run with the mutants: `-k gate_kill`)."""
    if not verdicts:
        pytest.skip("no mutant ran in this session (select them too: -k gate_kill)")
    rows = [{**r.summary(), "verdict": "SURVIVED" if r.passed else "killed"} for r in verdicts.values()]
    metrics.table("planted bugs vs the calibrated quantization gate", rows)
    rate = sum(not r.passed for r in verdicts.values()) / len(verdicts)
    metrics.record("mutant_kill_rate", rate, "fraction", threshold=1.0, mutants=len(verdicts))
    print("\n" + format_table(rows))
    assert rate == 1.0, f"survivors: {[n for n, r in verdicts.items() if r.passed]}"


@pytest.mark.parametrize("projection", PROJECTIONS)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_bug_in_one_projection_is_named_by_its_layer(
    where: str, projection: str, gate: Gate, attnlab_model: Any, metrics: Any
) -> None:
    n = len(decoder_layers(attnlab_model.model))
    layer = {"first": 0, "middle": n // 2, "last": n - 1}[where]
    mutant = Mutant(f"{projection}-{layer}-swapped", swap_column_pairs([layer], [projection]))
    metrics.update_context(quant=f"mutant:{mutant.name}")
    result = _planted(mutant, gate, attnlab_model, metrics)
    cumulative = result.layers.first_divergent_cumulative
    metrics.record("first_divergent_layer", -1 if result.first_divergent is None else result.first_divergent)
    metrics.record("first_divergent_layer_cumulative", -1 if cumulative is None else cumulative, planted=layer)
    assert not result.passed, result.describe()
    assert result.first_divergent == layer, result.describe()


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of `rows` (dicts with the same keys)."""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines)
