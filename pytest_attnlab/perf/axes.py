"""The quantizer and attention axes of the perf grid: the resolved --attnlab-quant / --attnlab-attn
selections, and how a cell applies its attention variant (`applied(model, name)`); a cell's quantizer is
`QuantSettings.quantize`, the run's --attnlab-quant-cache with it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_attnlab.options import selection
from pytest_attnlab.registry import BASELINE_ATTENTION


def names(config: pytest.Config, axis: str) -> list[str]:
    """Values of the `quant` or `attn` axis, as the run resolved them."""
    return list(selection(config)[axis])


@contextlib.contextmanager
def applied(model: Any, name: str) -> Iterator[None]:
    if name == BASELINE_ATTENTION:
        yield
        return
    from pytest_attnlab.attention import applied as attention_applied

    with attention_applied(model, name):
        yield
