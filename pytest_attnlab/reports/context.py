"""Which model x quant x attention line a test belongs to, for a failed test that recorded no row.

A test that raised before its first `metrics.record` leaves nothing in metrics.csv; its line in the
summary still has to read fail. The line comes from the recorder's context (what the test set with
`update_context` before raising), else from the test's parametrization (`quant=...`,
`perf_attn=...`, an `attnlab_case`), else the run's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KEYS = ("model", "quant", "attention", "experiment", "selftest")  # selftest: reports/selftest.py


def _axis(param: str) -> str | None:
    """The context key a parameter name stands for: quant / attention / model, or None."""
    name = param.lower()
    if name in ("quant", "quantizer") or name.endswith(("_quant", "_quantizer")):
        return "quant"
    if name in ("attention", "attn") or name.endswith(("_attn", "_attention")):
        return "attention"
    if name in ("model", "model_name") or name.endswith(("_model", "_model_name")):
        return "model"
    return None


def _name(value: Any) -> str | None:
    """A parameter value as a name: a string, or a named object (quantizer, attention variant)."""
    if isinstance(value, str):
        return value
    for attr in ("name", "__name__", "label"):
        name = getattr(value, attr, None)
        if isinstance(name, str):
            return name
    return None


def param_context(params: Mapping[str, Any]) -> dict[str, str]:
    """model / quant / attention / experiment named by a test's parameters."""
    out: dict[str, str] = {}
    for param, value in params.items():
        if hasattr(value, "quant") and hasattr(value, "attention"):  # an ExperimentCase (attnlab_case)
            out.update(quant=str(value.quant), attention=str(value.attention))
            experiment = getattr(getattr(value, "experiment", None), "experiment_name", None)
            if isinstance(experiment, str):
                out["experiment"] = experiment
            continue
        axis, name = _axis(param), _name(value)
        if axis is not None and name:
            out[axis] = name
    return out


def context_of_test(
    params: Mapping[str, Any], defaults: Mapping[str, str], recorded: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The run's defaults, overridden by the parametrization, overridden by what the test itself set
    on its recorder (a recorder value equal to the default was never set and does not override)."""
    ctx = {k: v for k, v in defaults.items() if k in KEYS}
    ctx.update(param_context(params))
    for key, value in (recorded or {}).items():
        if key in KEYS and value not in (None, "") and str(value) != defaults.get(key):
            ctx[key] = str(value)
    return ctx
