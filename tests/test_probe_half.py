"""Local errors of a half-precision model are measured in float32 (probe_local.upcast): the weights'
own error, not the rounding of every op in the layer, which differs from kernel to kernel (Gemma-2's
first-layer q_proj bug read 1.96x its RTN reference on an H100 in bf16, 6.3x in float32)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from tiny_checkpoints import build

from pytest_attnlab import probe
from pytest_attnlab.probe_local import upcast
from pytest_attnlab.quant.gate import measure
from pytest_attnlab.quant.mutants import Mutant


class _Loaded:
    def __init__(self, model: Any) -> None:
        self.model = model


IDS = torch.randint(16, 49152, (1, 128), generator=torch.Generator().manual_seed(0))


def test_upcast_restores_every_tensor_exactly() -> None:
    model = build("gemma2").bfloat16()
    model.model.rotary_emb.inv_freq = model.model.rotary_emb.inv_freq.float()  # as from_pretrained keeps it
    before = {k: (v.clone(), v.dtype) for k, v in model.state_dict().items()}
    with torch.inference_mode(), upcast(model):
        assert {p.dtype for p in model.parameters()} == {torch.float32}
    after = model.state_dict()
    assert all(torch.equal(after[k], v) and after[k].dtype == dtype for k, (v, dtype) in before.items())
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert not any(p.is_inference() for p in model.parameters())  # autograd still works on it (GPTQ)


def test_a_half_precision_reference_recomputes_its_layers_in_float32() -> None:
    model = build("llama").bfloat16()
    ref = probe.capture(model, IDS[:, :32])
    assert ref.local is None and ref.own_float32 is not None and len(ref.own_float32) == len(ref.layers)
    same = probe.diff(ref, probe.capture(model, IDS[:, :32], reference=ref), local_tolerance=0.0)
    assert [r.local_rel_err for r in same.rows] == [0.0, 0.0]
    assert probe.capture(model.float(), IDS[:, :32]).own_float32 is None  # float32: one pass, as before


def _local_errors(reference: torch.nn.Module, candidate: torch.nn.Module) -> list[float]:
    ref = probe.capture(reference, IDS)
    return list(measure(ref, probe.capture(candidate, IDS, reference=ref)).local)


@pytest.fixture(scope="module")
def gemma2_rtn() -> tuple[torch.nn.Module, torch.nn.Module, list[float]]:
    """Gemma-2 in bf16, its rtn-int8 (int8 grid stored in bf16), and their local errors in float32."""
    model = build("gemma2").bfloat16()
    rtn = Mutant("rtn", lambda m: None).quantize(_Loaded(model), None)
    return model, rtn, _local_errors(copy.deepcopy(model).float(), copy.deepcopy(rtn).float())


@pytest.mark.parametrize("half", [True, False], ids=["upcast", "planted-bug-half-precision-pass"])
def test_bf16_local_errors_are_the_weights_own(monkeypatch: pytest.MonkeyPatch, gemma2_rtn, half: bool) -> None:
    """Gemma-2 in bf16: rtn-int8's local errors (the gate's calibration) equal those of the same bf16
    weights run in float32, within 3 % (measured: 0.03 %). Planted bug: the teacher-forced pass left in bf16 adds its
    rounding, +16 % and +23 % on this CPU (more on an H100), which is what pushed the q_proj bug's
    ratio below the gate's 2x there."""
    model, rtn, exact = gemma2_rtn
    if not half:
        monkeypatch.setattr(probe, "half_precision", lambda model: False)
    measured = _local_errors(model, rtn)
    worst = max(abs(m / e - 1) for m, e in zip(measured, exact, strict=True))
    if half:
        assert worst < 0.03, (measured, exact)
    else:
        assert worst > 0.1, (measured, exact)


@pytest.mark.gpu
@pytest.mark.parametrize("half", [True, False], ids=["upcast", "planted-bug-half-precision-pass"])
def test_gemma2_first_q_proj_bug_is_named_in_cuda_bf16(monkeypatch: pytest.MonkeyPatch, half: bool) -> None:
    """The H100 finding itself (`--attnlab-device cuda`): Gemma-2 (3 layers, hidden 128), rtn-int8 with its
    first q_proj's input columns read in swapped pairs. In bf16 the ratio of local errors to rtn-int8's
    must be float32's within 10 % and name layer 0 above the gate's 2x. Planted bug (the teacher-forced
    pass left in bf16): further from float32's ratio than the upcast pass (1.96 vs 6.3 on the H100)."""
    from tiny_checkpoints import scaled

    from pytest_attnlab.quant.mutants import swap_column_pairs

    base = build("gemma2", **scaled("gemma2", 128, 3)).cuda()

    def ratio(model: torch.nn.Module) -> float:
        rtn = Mutant("rtn", lambda m: None).quantize(_Loaded(model), None)
        bug = Mutant("bug", swap_column_pairs([0], ["q_proj"])).quantize(_Loaded(model), None)
        ref = probe.capture(model, IDS)
        clean = measure(ref, probe.capture(rtn, IDS, reference=ref)).local
        bugged = measure(ref, probe.capture(bug, IDS, reference=ref)).local
        return bugged[0] / clean[0]

    exact = ratio(copy.deepcopy(base))
    fixed = ratio(copy.deepcopy(base).bfloat16())
    monkeypatch.setattr(probe, "half_precision", lambda model: False)
    planted = ratio(copy.deepcopy(base).bfloat16())
    print(f"local ratio of the first-q_proj bug: float32 {exact:.3f}, bf16 upcast {fixed:.3f}, bf16 pass {planted:.3f}")
    if half:
        assert fixed > 2 and abs(fixed / exact - 1) < 0.1, (fixed, exact)
    else:
        assert abs(planted / exact - 1) > abs(fixed / exact - 1), (planted, fixed, exact)


def test_a_half_precision_candidate_without_reference_keeps_its_cumulative_diff() -> None:
    """A bf16 candidate captured on its own (test_layer_diff: bf16 against a float32 reference) has no local
    outputs: its own float32 recompute ran on its own inputs, not the reference's, and read as local errors it
    named a healthy layer 12 of the embedded model (0.13 against 0.1)."""
    model = build("llama")
    ref = probe.capture(model, IDS[:, :32])
    cand = probe.capture(copy.deepcopy(model).bfloat16(), IDS[:, :32])
    assert cand.local is None and cand.own_float32 is not None
    assert all(r.local_rel_err is None for r in probe.diff(ref, cand).rows)  # the cumulative diff decides
