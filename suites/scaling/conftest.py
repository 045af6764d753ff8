"""The scaling suite's extra quantizer: rtn-int4-g128 with packed weights at run time (PackedLinear), so
the decode timings show what int4 storage costs per token beside the fake-quant (dequantized) form."""

from __future__ import annotations


def pytest_attnlab_register_quantizers(quantizers):
    from pytest_attnlab.quant.rtn import RTN

    quantizers.register("rtn-int4-g128-packed", RTN("rtn-int4-g128-packed", 4, 128, False, "float", runtime="packed"))
