"""test_attention_variant_quality's gates on the embedded model lie inside their metrics' ranges and
below each variant's measured value: a floor under -1 is a check that cannot fail."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("suite_attention", REPO / "suites/correctness/test_attention.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_cosine_floor_is_inside_the_cosine_range_and_near_its_measure(suite: ModuleType) -> None:
    for name, measured in suite.MEASURED_ON_EMBEDDED.items():
        floor = measured.cosine_floor
        assert -1.0 <= floor <= measured.logits_cosine, (name, floor)
        assert measured.logits_cosine - floor <= suite.MAX_DROP + 2e-6, (name, floor)
        assert measured.perplexity < measured.perplexity_ceiling, name


def test_a_lossy_variant_keeps_a_floor_that_can_fail(suite: ModuleType) -> None:
    elu = suite.MEASURED_ON_EMBEDDED["linear_elu"]
    assert elu.cosine_floor == pytest.approx(-0.4961, abs=1e-4)
    exact = suite.MEASURED_ON_EMBEDDED["sdpa"]
    assert exact.cosine_floor == pytest.approx(1.0, abs=1e-5)
