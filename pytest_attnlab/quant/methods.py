"""The built-in quantizers, registered by name (the name is the test id and the CSV `quant` value).

Each names its `reference`: the RTN method of the same bit width and group size whose measured
errors calibrate its gate (quant.gate). An RTN method names itself: the gate rounds the reference's
weights by its grid's formula (quant.gate.reference_model), so the method's own packing and runtime
are compared with that formula, not with themselves.
"""

from __future__ import annotations

from pytest_attnlab.quant.awq import AWQ
from pytest_attnlab.quant.base import Quantizer
from pytest_attnlab.quant.bnb import BitsAndBytes
from pytest_attnlab.quant.gptq import GPTQModelQuantizer
from pytest_attnlab.quant.rtn import RTN
from pytest_attnlab.registry import Registry

QUANTIZERS: Registry[Quantizer] = Registry("quantizer")


def _register(q: Quantizer, reference: str | None = None) -> None:
    q.reference = reference or q.name
    QUANTIZERS.register(q.name, q)


_register(RTN("rtn-int8", 8, None, symmetric=True))
for _group in (32, 64, 128):
    _register(RTN(f"rtn-int4-g{_group}", 4, _group, symmetric=False, zero="float"))
# The integer zero-point form GPTQ and AWQ store: the baseline their error compensation improves on.
_register(RTN("rtn-int4-g128-zp", 4, 128, symmetric=False, zero="int"))
# Group 64 divides SmolLM2's 576 columns (128 does not), so vLLM can load its export (quant.export).
_register(RTN("rtn-int4-g64-zp", 4, 64, symmetric=False, zero="int"))
# Symmetric (zero point fixed at 8): the form vLLM's GPTQ kernels take.
_register(RTN("rtn-int4-g64-sym", 4, 64, symmetric=True))
_register(BitsAndBytes("bnb-int8", "int8"), reference="rtn-int8")
# NF4: 4-bit absmax (symmetric) blocks of 64
_register(BitsAndBytes("bnb-nf4", "nf4"), reference="rtn-int4-g64-sym")
# gptqmodel quantizes symmetrically; no symmetric g128 RTN is registered, so g128 takes the
# integer-zero RTN of the same bits and group (a lower error than symmetric: a stricter reference).
_register(GPTQModelQuantizer("gptq-int4-g128", bits=4, group_size=128), reference="rtn-int4-g128-zp")
# Group 64 divides SmolLM2's 576 columns: its GPTQ export loads in vLLM.
_register(GPTQModelQuantizer("gptq-int4-g64", bits=4, group_size=64), reference="rtn-int4-g64-sym")
# AWQ quantizes on the integer-zero grid of its RTN reference
_register(AWQ("awq-int4-g128", group_size=128), reference="rtn-int4-g128-zp")
_register(
    AWQ("awq-int4-g64", group_size=64), reference="rtn-int4-g64-zp"
)  # g64: its AWQ export loads in vLLM on SmolLM2
