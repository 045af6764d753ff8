"""Layer-local diffs (probe_local): a bug inside one projection of layer k is named layer k.

The candidate is an exact float32 copy of the reference with one projection of one layer scaled
by 1.10, so every other layer's own (local) error is zero to the last bit. The cumulative diff,
dominated by the residual stream, names that layer late or never; the local diff names it.
"""

from __future__ import annotations

import copy

import pytest
import torch

from pytest_attnlab import probe
from pytest_attnlab.models import random_models
from pytest_attnlab.probe_local import TeacherForcing, local_error
from pytest_attnlab.quant.mutants import PROJECTIONS, scale_linears

N_LAYERS = 6
#: a copy's untouched layers are bit-identical to the reference's: any own error above rounding is the bug
EXACT = 1e-6


@pytest.fixture(scope="module")
def model():
    return random_models.build("tiny-qwen2", seed=0, num_hidden_layers=N_LAYERS, initializer_range=0.1)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 49152, (1, 32), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(model, ids):
    return probe.capture(model, ids)


def _bugged(model, layer: int, projection: str):
    cand = copy.deepcopy(model)
    with torch.no_grad():
        scale_linears(1.10, [layer], [projection])(cand)
    return cand


def test_capture_records_each_layers_input(model, ids, reference):
    assert len(reference.inputs) == len(reference.layers) == N_LAYERS
    for before, after in zip(reference.layers[:-1], reference.inputs[1:], strict=True):
        assert torch.equal(before, after)  # layer i's input is layer i-1's output


def test_identical_model_has_zero_local_error(model, ids, reference):
    result = probe.diff(reference, probe.capture(model, ids, reference=reference), local_tolerance=0.0)
    assert result.local and result.first_divergent is None
    assert all(r.local_rel_err == 0.0 for r in result.rows)


@pytest.mark.parametrize("projection", PROJECTIONS)
@pytest.mark.parametrize("layer", [0, N_LAYERS // 2, N_LAYERS - 1])
def test_bug_in_one_projection_is_named_by_its_layer(model, ids, reference, layer, projection):
    cand = probe.capture(_bugged(model, layer, projection), ids, reference=reference)
    result = probe.diff(reference, cand, local_tolerance=EXACT)
    assert result.first_divergent == layer, result.describe()
    assert all(r.local_rel_err <= EXACT for r in result.rows if r.layer != layer)
    assert f"first divergent layer: {layer} (local error" in result.describe()


def test_cumulative_view_misses_what_the_local_view_names(model, ids, reference):
    """x1.10 on a middle layer's up_proj: the layer's own update is about 7 % off, beyond a 5 % local
    tolerance, while the cumulative hidden states stay within the default cosine 0.99 / rel. error 0.1."""
    layer = N_LAYERS // 2
    cand = probe.capture(_bugged(model, layer, "up_proj"), ids, reference=reference)
    result = probe.diff(reference, cand, local_tolerance=0.05)
    assert result.first_divergent_cumulative is None
    assert result.first_divergent == layer


def test_without_reference_the_diff_stays_cumulative(model, ids, reference):
    result = probe.diff(reference, probe.capture(model, ids))
    assert not result.local
    assert "local_rel_err" not in result.table()[0]


def test_teacher_forcing_checks_shapes(model, ids, reference):
    layers = probe.decoder_layers(model)
    with pytest.raises(ValueError, match="reference input"):
        with TeacherForcing(layers, [t[:, :4] for t in reference.inputs]), torch.no_grad():
            model(input_ids=ids)
    with pytest.raises(ValueError, match="layer count"):
        TeacherForcing(layers, reference.inputs[:2])


def test_local_error_is_relative_to_the_layers_update():
    ref_in = torch.ones(4)
    ref_out = ref_in + torch.tensor([1.0, 0.0, 0.0, 0.0])  # the layer adds 1 to the first element
    err = local_error(ref_in, ref_out, ref_in + torch.tensor([1.1, 0.0, 0.0, 0.0]))
    assert err.rel_err == pytest.approx(0.1) and err.cosine == pytest.approx(1.0)
