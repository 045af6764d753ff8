"""Quantizers as fixtures: a registry of methods and `quantize(loaded, name)`.

    from pytest_attnlab.quant import QUANTIZERS, quantize
    q = quantize(model_factory(), "rtn-int4-g128")   # a new LoadedModel, context quant=rtn-int4-g128

Users add a method from a conftest.py with the `pytest_attnlab_register_quantizers` hook.
See docs/quant.md.
"""

from __future__ import annotations

from pytest_attnlab.quant.api import BASELINE, QuantizedModel, QuantizerUnavailable, quantize
from pytest_attnlab.quant.base import QuantContext, Quantizer
from pytest_attnlab.quant.methods import QUANTIZERS

__all__ = [
    "BASELINE",
    "QUANTIZERS",
    "QuantContext",
    "QuantizedModel",
    "Quantizer",
    "QuantizerUnavailable",
    "quantize",
]
