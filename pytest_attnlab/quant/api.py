"""`quantize(loaded, name)`: a quantized copy of a LoadedModel, built once per run per (model, name)."""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_attnlab.models.loader import LoadedModel
from pytest_attnlab.quant.base import QuantContext, QuantizerUnavailable
from pytest_attnlab.registry import BASELINE_QUANT as BASELINE
from pytest_attnlab.registry import Registry

#: attribute on a base LoadedModel holding its quantized copies for this run
_RUN_CACHE = "_attnlab_quantized"
#: attribute on a quantized nn.Module: its QuantizedModel
QUANTIZED_ATTR = "_attnlab_quantized_from"


@dataclass
class QuantizedModel(LoadedModel):
    """A LoadedModel whose context reports quant=<name>, with how it was made."""

    quant: str = BASELINE
    settings: dict[str, Any] = field(default_factory=dict)
    quantize_seconds: float = 0.0  # wall time of this run's quantize() call (a cache hit is a load)
    build_seconds: float = float("nan")  # the original quantization's time (recorded in the cache entry)
    from_cache: bool = False
    bits: int = 16
    base: LoadedModel | None = field(default=None, repr=False)
    #: the packed QuantState (RTN, GPTQ, AWQ), which quant.export writes as AWQ/GPTQ/compressed-tensors
    state: Any = field(default=None, repr=False)
    #: this quantization's cache entry (None without a cache); exports are kept beside it
    cache_entry: Path | None = None

    def context(self) -> dict[str, str]:
        return {**super().context(), "quant": self.quant}


def quantized_from(model: Any) -> QuantizedModel | None:
    """The QuantizedModel an nn.Module came from (quantize() marks it), or None for plain models."""
    ref = getattr(model, "__dict__", {}).get(QUANTIZED_ATTR)
    return ref() if ref is not None else None


def quantize(
    loaded: LoadedModel,
    name: str,
    *,
    registry: Registry[Any] | None = None,
    cache: bool | Path = True,
    calibration_samples: int = 8,
    calibration_seqlen: int = 128,
) -> LoadedModel:
    """A new LoadedModel quantized by the registered quantizer `name`; `loaded` is left untouched.

    `name == "none"` returns `loaded` itself (the baseline). Results are memoised on `loaded` for
    the run. `cache`: True (under cache_root()/quant), a folder, or False (always quantize anew).
    Raises UnknownNameError (listing the registered names) or QuantizerUnavailable.
    """
    if name == BASELINE:
        return loaded
    if registry is None:
        from pytest_attnlab.quant import QUANTIZERS as registry  # torch: only once a test uses it
    quantizer = registry.get(name)
    memo: dict[tuple, QuantizedModel] = loaded.__dict__.setdefault(_RUN_CACHE, {})
    key = (name, id(quantizer), str(cache), calibration_samples, calibration_seqlen)
    if key in memo:
        return memo[key]
    reason = quantizer.unavailable_reason(str(loaded.device))
    if reason:
        raise QuantizerUnavailable(reason)
    ctx = QuantContext(
        tokenizer=loaded.tokenizer,
        device=str(loaded.device),
        dtype=loaded.options.dtype,
        spec=loaded.spec,
        options=loaded.options,
        calibration_samples=calibration_samples,
        calibration_seqlen=calibration_seqlen,
    )
    if cache is not False:
        from pytest_attnlab.quant.cache import entry_for  # torch: only once a test uses it

        root = cache if isinstance(cache, Path) else None
        ctx.cache_dir = entry_for(loaded.spec, loaded.options, name, quantizer.settings(), root)
    start = time.perf_counter()
    model = quantizer.quantize(loaded, ctx)
    seconds = time.perf_counter() - start
    model.eval()
    result = QuantizedModel(
        model=model,
        tokenizer=loaded.tokenizer,
        spec=loaded.spec,
        options=loaded.options,
        load_seconds=loaded.load_seconds,
        quant=name,
        settings=quantizer.settings(),
        quantize_seconds=seconds,
        build_seconds=ctx.report.get("build_seconds", seconds),
        from_cache=bool(ctx.report.get("from_cache", False)),
        bits=quantizer.bits,
        base=loaded,
        state=ctx.state,
        cache_entry=ctx.cache_dir,
    )
    # The nn.Module is what decode paths receive: let them find how it was made (vLLM exports it).
    # A weak reference: deep copies of the module must not copy the base model along.
    model.__dict__[QUANTIZED_ATTR] = weakref.ref(result)
    memo[key] = result
    return result
