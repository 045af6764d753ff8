"""Quantizers as fixtures: a registry of methods and `quantize(loaded, name)`.

    from pytest_attnlab.quant import QUANTIZERS, quantize
    q = quantize(model_factory(), "rtn-int4-g128")   # a new LoadedModel, context quant=rtn-int4-g128

Users add a method from a conftest.py with the `pytest_attnlab_register_quantizers` hook.
See docs/quant.md.
"""

from __future__ import annotations

from pytest_attnlab.lazy import exports

# Loaded on first use (PEP 562), so that loading the quant sub-plugin imports no torch.
__getattr__, __all__ = exports(
    __name__,
    {
        ".api": "BASELINE QuantizedModel QuantizerUnavailable quantize",
        ".base": "QuantContext Quantizer",
        ".methods": "QUANTIZERS",
    },
)
