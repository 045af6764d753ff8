"""The transformers APIs that moved inside the supported range, adapted in one place.

transformers 5.24 renamed the models' KV-cache argument and output field from `past_key_values` to
`cache` (the old name warns and goes away in 5.40); 5.0-5.23 know only `past_key_values`. Callers
ask this module for the name instead of spelling either one, so both sides of the move work.
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any

#: The KV-cache argument's names, newest first.
CACHE_NAMES = ("cache", "past_key_values", "past_key_value")


@cache
def _cache_arg(forward: Any) -> str:
    params = inspect.signature(forward).parameters  # follows functools.wraps to the real signature
    return next((name for name in CACHE_NAMES if name in params), "past_key_values")


def cache_arg(model: Any) -> str:
    """The name under which `model`'s forward takes its KV cache ("cache" from transformers 5.24)."""
    return _cache_arg(type(model).forward)


def with_cache(model: Any, cache: Any) -> dict[str, Any]:
    """Keyword arguments that hand `cache` to `model(...)`: `model(ids, **with_cache(model, c), use_cache=True)`."""
    return {cache_arg(model): cache}


def output_cache(output: Any) -> Any:
    """The cache a model call returned (`output.cache` from 5.24, `output.past_key_values` before)."""
    for name in CACHE_NAMES[:2]:
        value = output.get(name) if hasattr(output, "get") else getattr(output, name, None)
        if value is not None:
            return value
    return None


def pop_cache(kwargs: dict[str, Any]) -> Any:
    """Remove and return the cache from an attention module's keyword arguments, under any of its names."""
    found = None
    for name in CACHE_NAMES:
        value = kwargs.pop(name, None)
        if found is None:
            found = value
    return found
