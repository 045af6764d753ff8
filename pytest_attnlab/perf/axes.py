"""The quantizer and attention axes, read from the quant/attention areas' options when they exist.

Contract (docs/ARCHITECTURE.md): `pytest_attnlab.quant.quantize(loaded, name) -> LoadedModel` and
`pytest_attnlab.attention.applied(model, name)` (a context manager). Until those areas land, or
when their options are absent, each axis has one value: `none` and `sdpa`.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

import pytest

BASELINE = {"quant": "none", "attn": "sdpa"}
_AREA = {"quant": ("pytest_attnlab.quant", "QUANTIZERS"), "attn": ("pytest_attnlab.attention", "ATTENTION")}


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"attnlab_{name}", default=None)
    if value is None:
        try:
            value = config.getini(f"attnlab_{name}") or None
        except ValueError:  # ini key not registered: that area is not there yet
            value = None
    return value


def names(config: pytest.Config, axis: str) -> list[str]:
    """Values of the `quant` or `attn` axis: the option's comma list (or `all`) expanded through the
    area's registry when it exists, else the baseline alone."""
    value = _option(config, axis)
    if value is None or value == "":
        return [BASELINE[axis]]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    module, registry = _AREA[axis]
    try:
        reg = getattr(importlib.import_module(module), registry)
    except (ImportError, AttributeError):
        return [v.strip() for v in str(value).split(",") if v.strip()]
    chosen: list[str] = []
    try:
        for part in (v.strip() for v in str(value).split(",") if v.strip()):
            # the baseline ("none" for quant) goes beside registered names: none,rtn-int4-g64-zp
            chosen += [part] if part == BASELINE[axis] else reg.select(part)
    except KeyError as exc:
        raise pytest.UsageError(f"--attnlab-{axis}: {exc}") from None
    return list(dict.fromkeys(chosen))


def quantized(loaded: Any, name: str) -> Any:
    if name == BASELINE["quant"]:
        return loaded
    try:
        from pytest_attnlab.quant import QuantizerUnavailable, quantize
    except ImportError:
        pytest.skip(f"quantizer {name!r} needs pytest_attnlab.quant.quantize, which is not available")
    try:
        return quantize(loaded, name)
    except QuantizerUnavailable as exc:  # its library is missing here: the message names the extra
        pytest.skip(str(exc))


@contextlib.contextmanager
def applied(model: Any, name: str) -> Iterator[None]:
    if name == BASELINE["attn"]:
        yield
        return
    try:
        from pytest_attnlab.attention import applied as attention_applied
    except ImportError:
        pytest.skip(f"attention variant {name!r} needs pytest_attnlab.attention.applied, which is not available")
    with attention_applied(model, name):
        yield
