"""Quantizers as fixtures: a registry of methods and `quantize(loaded, name)`.

    from pytest_attnlab.quant import QUANTIZERS, quantize
    q = quantize(model_factory(), "rtn-int4-g128")   # a new LoadedModel, context quant=rtn-int4-g128

Users add a method from a conftest.py with the `pytest_attnlab_register_quantizers` hook.
See docs/quant.md.
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use (PEP 562), so that loading the quant sub-plugin imports no torch.
_EXPORTS = {
    "BASELINE": "pytest_attnlab.quant.api",
    "QuantizedModel": "pytest_attnlab.quant.api",
    "QuantizerUnavailable": "pytest_attnlab.quant.api",
    "quantize": "pytest_attnlab.quant.api",
    "QuantContext": "pytest_attnlab.quant.base",
    "Quantizer": "pytest_attnlab.quant.base",
    "QUANTIZERS": "pytest_attnlab.quant.methods",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
