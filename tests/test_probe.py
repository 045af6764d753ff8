"""The per-layer diff finds and names a deliberately corrupted layer."""

from __future__ import annotations

import pytest
import torch

from pytest_attnlab import probe
from pytest_attnlab.models import random_models

N_LAYERS = 6


@pytest.fixture(scope="module")
def model():
    return random_models.build("tiny-qwen2", seed=0, num_hidden_layers=N_LAYERS)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 49152, (1, 24), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(model, ids):
    return probe.capture(model, ids)


def _capture_with_corruption(model, ids, layer: int, corrupt):
    target = probe.decoder_layers(model)[layer]

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        new = corrupt(hidden)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = target.register_forward_hook(hook)
    try:
        return probe.capture(model, ids)
    finally:
        handle.remove()


def test_identical_runs_do_not_diverge(model, ids, reference):
    result = probe.diff(reference, probe.capture(model, ids))
    assert result.first_divergent is None
    assert result.min_cosine == pytest.approx(1.0, abs=1e-12)
    assert result.logits_cosine == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("layer", [0, 2, N_LAYERS - 1])
def test_scaled_layer_is_named(model, ids, reference, layer):
    # A pure rescale keeps the layer's cosine at 1: only the relative error can catch it here.
    cand = _capture_with_corruption(model, ids, layer, lambda h: h * 1.5)
    result = probe.diff(reference, cand)
    assert result.first_divergent == layer
    assert result.rows[layer].cosine == pytest.approx(1.0, abs=1e-9)
    assert result.rows[layer].rel_err == pytest.approx(0.5, rel=1e-4)
    assert f"first divergent layer: {layer}" in result.describe()
    assert all(r.ok for r in result.rows[:layer])


@pytest.mark.parametrize("layer", [1, 4])
def test_noisy_layer_is_named_by_cosine(model, ids, reference, layer):
    gen = torch.Generator().manual_seed(1)
    cand = _capture_with_corruption(
        model, ids, layer, lambda h: h + torch.randn(h.shape, generator=gen) * h.std() * 0.5
    )
    result = probe.diff(reference, cand, rel_threshold=float("inf"))  # cosine alone decides
    assert result.first_divergent == layer
    assert result.rows[layer].cosine < 0.99


def test_layer_probe_fixture_failure_message_names_the_layer(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import torch
        from pytest_attnlab.models import random_models

        def test_corrupted_candidate(layer_probe, metrics):
            ref = random_models.build("tiny-qwen2", seed=0, num_hidden_layers=5)
            cand = random_models.build("tiny-qwen2", seed=0, num_hidden_layers=5)
            with torch.no_grad():
                cand.model.layers[3].mlp.down_proj.weight.mul_(-4.0)
            ids = torch.arange(1, 17)[None]
            result = layer_probe.diff(layer_probe.capture(ref, ids), layer_probe.capture(cand, ids))
            metrics.table("per-layer", result.table(), highlight_row=result.first_divergent)
            assert result.first_divergent is None, result.describe()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--attnlab-report-dir", "out")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: first divergent layer: 3 (cosine*"])
    assert "DIVERGED" in (pytester.path / "out" / "report.html").read_text()
